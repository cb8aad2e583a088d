"""A wave of a few hundred mailboxes under throttling, run by real worker processes (rqworker) that are SIGKILLed
inside a Set-Mailbox call: the sweep and a new worker finish it with every member flipped once in effect, none
skipped, one audit event each. Needs a database that worker processes share with the test: PostgreSQL (CI).

To make each kill land inside a Set-Mailbox, the emulator holds Set-Mailbox calls (latency fault on that cmdlet
only) just before the kill; the held call is carried out after the worker has died, as a real server does with a
request it has received, so the mailbox is flipped while its member row still says RUNNING.
"""

import time as clock

import django_rq
import pytest
from django.db import connection

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa.choices import Authority, MemberState, WaveState
from soa.models import Mailbox, WaveMember
from soa.services.approvals import wave_approve
from soa.services.wave_run import wave_start
from soa.services.waves import wave_submit
from tests.exchange_fixtures import private_tenant
from tests.soa.test_wave_support import cast, new_wave, set_mailbox_calls
from tests.writeback.worker_process import kill_worker, run_worker_until_empty, start_worker
from writeback import wave_jobs
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

MEMBERS = 300
HOLD = 3.0  # seconds the emulator holds a Set-Mailbox around a kill; longer than a Retry-After wait (1 s here)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=MEMBERS + 40, seed=37) as (_, exchange, _report):
        yield exchange


@pytest.fixture
def exchange(tenant, settings):
    if connection.vendor != "postgresql":
        pytest.skip("worker processes share the test database only on PostgreSQL (CI runs it there)")
    tenant.reset()
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed has just written every mailbox
    django_rq.get_queue(wave_jobs.QUEUE).empty()
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    yield tenant
    tenant.reset()


def _done(wave) -> int:
    return WaveMember.objects.filter(wave=wave, state=MemberState.DONE).count()


def test_workers_killed_inside_set_mailbox_lose_nothing_and_flip_nothing_twice(exchange, people, tmp_path):
    exchange.set_throttle(rate=120, burst=10)  # 120 requests/s for the app: at most 60 flips/s (set + re-read)
    mailboxes = list(
        Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True).order_by("upn")[:MEMBERS]
    )
    assert len(mailboxes) == MEMBERS
    wave = new_wave(people["op"], *mailboxes, batch_size=25, max_rate=100.0)  # above the budget: throttled
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=wave.pk)

    for number, kill_after in enumerate((60, 170), start=1):
        log_path = tmp_path / f"worker{number}.log"
        with open(log_path, "wb") as log:
            worker = start_worker(log)
            deadline = clock.monotonic() + 120
            while _done(wave) < kill_after:
                assert clock.monotonic() < deadline and worker.poll() is None, log_path.read_text()
                clock.sleep(0.05)
            exchange.set_faults(latency_ms=HOLD * 1000, latency_cmdlet="Set-Mailbox")
            clock.sleep(HOLD / 2)  # the worker's next Set-Mailbox is now being held by the emulator
            kill_worker(worker)
        recorded = _done(wave)
        clock.sleep(HOLD / 2 + 1)  # the held call is carried out on the server after the worker died
        exchange.clear_faults()
        # The kill landed inside a Set-Mailbox: Exchange applied one flip more than the portal recorded.
        assert set_mailbox_calls(exchange) == recorded + 1, log_path.read_text()
        assert WaveMember.objects.filter(wave=wave, state=MemberState.RUNNING).exists()
        assert wave_jobs.wave_sweep_job(older_than_seconds=0) >= 1

    with open(tmp_path / "worker-last.log", "wb") as log:
        run_worker_until_empty(log)
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED, (tmp_path / "worker-last.log").read_text()[-4000:]
    assert _done(wave) == MEMBERS
    # Every mailbox flipped, each with exactly one Set-Mailbox: the two applied during the kills were read back
    # and recorded, not sent again.
    assert set_mailbox_calls(exchange) == MEMBERS
    in_cloud = {m["ExternalDirectoryObjectId"] for m in exchange.mailboxes() if m["IsExchangeCloudManaged"]}
    assert {str(mailbox.exo_object_id) for mailbox in mailboxes} <= in_cloud
    done = list(AuditEvent.objects.filter(action="soa.wave.member_done").values_list("object_id", flat=True))
    assert len(done) == len(set(done)) == MEMBERS
    assert AuditEvent.objects.filter(action="soa.wave.member_swept").count() >= 2
    assert verify_chain()[1] is None


@pytest.fixture
def people(make_user):
    return cast(make_user)
