"""Browser journey: an operator starts an approved wave and watches its progress on the wave page while a real RQ
worker flips the mailboxes in a private Exchange Online emulator; pauses it, resumes it, and sees it complete.

The worker (rq's SimpleWorker, on the session's Redis) runs in the test's own thread, one call at a time, while
Chromium keeps polling the page on its own: a pause between two batches is then certain, not a race, and the
worker shares the test database on SQLite as well (its test database lives in this process's memory).
"""

import django_rq
import pytest
from playwright.sync_api import expect
from rq import SimpleWorker

from portal.roles import Role
from soa.choices import Authority, MemberState, WaveState
from soa.models import Mailbox, PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.waves import wave_submit
from tests.exchange_fixtures import private_tenant
from tests.soa.test_wave_support import new_wave
from writeback import wave_jobs
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MEMBERS = 12
BATCH = 4
RATE = 4.0  # flips per second: a batch takes about a second, long enough to watch
POLL_WAIT = 15_000  # ms: the page polls every 2 s; generous for a slow CI machine


@pytest.fixture(scope="module")
def tenant():
    """A directory and an emulator of this module's own; the portal's settings point at them meanwhile."""
    with private_tenant(users=24, seed=5) as (_, exchange, _report):
        yield exchange


def _queue():
    return django_rq.get_queue(wave_jobs.QUEUE)


def _empty_queue() -> None:
    queue = _queue()
    queue.empty()
    for job_id in queue.failed_job_registry.get_job_ids():
        queue.failed_job_registry.remove(job_id, delete_job=True)


@pytest.fixture
def exchange(tenant, settings):
    """The module's emulator as seeded, the queue empty, and the portal's inventory read from it."""
    tenant.reset()
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed has just written every mailbox
    _empty_queue()
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    yield tenant
    _empty_queue()
    tenant.reset()


def work(max_jobs: int | None = None) -> None:
    """Run the real RQ worker until the queue is empty (or ``max_jobs`` batches ran); no job may fail."""
    queue = _queue()
    SimpleWorker([queue], connection=queue.connection).work(burst=True, max_jobs=max_jobs)
    failed = queue.failed_job_registry
    assert failed.count == 0, [queue.fetch_job(job_id).exc_info for job_id in failed.get_job_ids()]


def states(wave) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in WaveMember.objects.filter(wave=wave).values_list("state", flat=True):
        counts[state] = counts.get(state, 0) + 1
    return counts


def test_operator_starts_a_wave_and_watches_it_complete(live_server, page, screenshot, make_user, sign_in, exchange):
    operator = make_user("olga", Role.WAVE_OPERATOR)
    approver = make_user("anna", Role.APPROVER)
    movable = list(Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True).order_by("upn"))
    assert len(movable) >= MEMBERS, f"the seed has only {len(movable)} mailboxes to move"
    wave = new_wave(operator, *movable[:MEMBERS], name="Sales pilot", batch_size=BATCH, max_rate=RATE)
    wave_submit(actor=operator, wave_id=wave.pk)
    wave_approve(actor=approver, wave_id=wave.pk, acknowledge_warnings=True)

    sign_in("olga")
    page.goto(f"{live_server.url}/waves/{wave.pk}/")
    assert page.get_by_test_id("wave-state").inner_text() == "Approved"
    assert page.locator("#wave-progress").count() == 0  # nothing to show before the start
    screenshot("wave-approved")

    page.get_by_role("link", name="Start the wave…").click()
    page.get_by_text("Start wave “Sales pilot” now?").wait_for()
    screenshot("start-confirm")
    page.get_by_role("button", name="Start the wave").click()
    page.get_by_text("Wave “Sales pilot” is running; its first batch is queued.").wait_for()
    progress = page.get_by_test_id("wave-progress")
    expect(progress.get_by_test_id("progress-state")).to_have_text("Running")
    expect(progress.get_by_test_id("progress-pending")).to_have_text(str(MEMBERS))
    assert progress.get_attribute("hx-trigger") == "every 2s"
    screenshot("wave-started")

    work(max_jobs=1)  # the first batch; the page picks it up on its next poll, without a reload
    expect(page.get_by_test_id("progress-done")).to_have_text(str(BATCH), timeout=POLL_WAIT)
    expect(page.get_by_test_id("progress-pending")).to_have_text(str(MEMBERS - BATCH))
    assert "mailboxes/s" in page.get_by_test_id("progress-rate").inner_text()
    assert page.get_by_test_id("progress-eta").inner_text().startswith("about ")
    screenshot("wave-mid-run")

    page.get_by_label("Reason for pausing (optional)").fill("Help desk wants a look first.")
    page.get_by_role("button", name="Pause").click()
    page.get_by_text("Wave “Sales pilot” is paused").wait_for()
    assert page.get_by_test_id("wave-state").inner_text() == "Paused"
    assert page.get_by_test_id("wave-progress").get_attribute("hx-trigger") is None  # nothing in flight
    work()  # the next batch was queued before the pause: it finds the wave paused and flips nothing
    assert states(wave) == {MemberState.DONE: BATCH, MemberState.PENDING: MEMBERS - BATCH}
    screenshot("wave-paused")

    page.get_by_role("button", name="Resume").click()
    page.get_by_text("Wave “Sales pilot” is running again").wait_for()
    work()  # the rest; the last poll finds the wave completed and reloads the page once
    expect(page.get_by_test_id("wave-state")).to_have_text("Completed", timeout=POLL_WAIT)
    expect(page.get_by_test_id("progress-done")).to_have_text(str(MEMBERS))
    assert page.get_by_test_id("progress-failed").inner_text() == "0"
    assert "12 of 12 members finished (100%)" in page.get_by_test_id("progress-summary").inner_text()
    assert page.get_by_test_id("wave-progress").get_attribute("hx-trigger") is None
    assert page.get_by_test_id("member-state").all_inner_texts() == ["Done"] * MEMBERS
    screenshot("wave-completed")

    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED and states(wave) == {MemberState.DONE: MEMBERS}
    assert all(
        exchange.get_mailbox(str(mailbox.exo_object_id))["IsExchangeCloudManaged"] is True
        for mailbox in movable[:MEMBERS]
    )
    assert PilotWave.objects.get(pk=wave.pk).started_at is not None
