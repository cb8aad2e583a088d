"""The wave runner against a private directory and Exchange Online emulator, through a real RQ worker (in-process
SimpleWorker on the session's Redis): a wave runs to completion, under throttling, with a permanent failure,
paused mid-batch, delivered twice, and swept after a worker died having already applied a flip."""

import dataclasses
import datetime as dt
import time as clock

import django_rq
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa.choices import Authority, MemberState, WaveState
from soa.models import Mailbox, PilotWave, WaveMember
from soa.services.wave_run import wave_pause, wave_resume
from tests.exchange_fixtures import private_tenant
from tests.faults.fault_stack import VirtualClock
from tests.soa.test_wave_support import cast, movable, set_mailbox_calls, started_wave, work
from tests.writeback.worker_process import kill_worker, run_worker_until_empty, start_worker
from writeback import wave_jobs
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

USERS = 40


@pytest.fixture(scope="module")
def tenant():
    """A directory and an emulator of this module's own; the portal's settings point at them meanwhile."""
    with private_tenant(users=USERS, seed=11) as (_, exchange, _report):
        yield exchange


@pytest.fixture
def exchange(tenant, settings):
    """The module's emulator as seeded, its queue empty, and the portal's inventory read from it."""
    tenant.reset()
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed has just written every mailbox
    queue = django_rq.get_queue(wave_jobs.QUEUE)
    queue.empty()
    for registry in (queue.failed_job_registry, queue.scheduled_job_registry):
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    yield tenant
    tenant.reset()


@pytest.fixture
def people(make_user):
    return cast(make_user)


def states(wave) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in WaveMember.objects.filter(wave=wave).values_list("state", flat=True):
        counts[state] = counts.get(state, 0) + 1
    return counts


def cloud_managed_in_exchange(exchange, mailbox: Mailbox) -> bool:
    return exchange.get_mailbox(str(mailbox.exo_object_id))["IsExchangeCloudManaged"] is True


pytestmark = pytest.mark.django_db(transaction=True)


def test_a_wave_runs_to_completion_in_batches(exchange, people):
    mailboxes = movable(30)
    wave = started_wave(people, mailboxes, batch_size=8, max_rate=50.0)
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED and wave.finished_at is not None
    assert states(wave) == {MemberState.DONE: 30}
    assert all(cloud_managed_in_exchange(exchange, mailbox) for mailbox in mailboxes)
    assert Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes], authority=Authority.CLOUD).count() == 30
    assert all(m.version > 1 for m in Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes]))
    assert set_mailbox_calls(exchange) == 30
    done = AuditEvent.objects.filter(action="soa.wave.member_done")
    assert done.count() == 30 and all(e.correlation_id.startswith(f"wave-{wave.pk}-") for e in done)
    assert all(e.after["set_mailbox_sent"] and e.after["changed"] and e.actor is None for e in done)
    # Four batches of at most eight: four jobs, one per batch, each its own correlation id.
    assert len(set(done.values_list("correlation_id", flat=True))) == 4
    assert AuditEvent.objects.filter(action="soa.wave.completed", object_id=str(wave.pk)).count() == 1
    assert verify_chain()[1] is None


@pytest.mark.parametrize("pacing", [True, False], ids=["paced", "unpaced"])
def test_under_throttling_the_wave_still_completes(exchange, people, settings, pacing):
    settings.EXO_RATE_LIMIT_PACING = pacing
    mailboxes = movable(12)
    exchange.set_throttle(rate=4, burst=3)
    wave = started_wave(people, mailboxes, batch_size=6, max_rate=20.0)  # faster than the tenant allows
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED, states(wave)
    if pacing:  # the client waited for the budget the Rate-Limit-* headers announced
        assert exchange.counters()["throttled"] == 0
    else:  # the 429s happened, and Retry-After was honoured
        assert exchange.counters()["throttled"] > 0
    assert all(cloud_managed_in_exchange(exchange, mailbox) for mailbox in mailboxes)


def test_a_permanent_failure_fails_the_member_with_its_reason(exchange, people, settings):
    settings.EXO_NOT_FOUND_RETRY_SECONDS = 0  # no grace for replication lag (test_wave_deferral covers it)
    mailboxes = movable(5)
    gone = mailboxes[2]
    wave = started_wave(people, mailboxes, batch_size=10, max_rate=50.0)
    exchange.delete_mailbox(str(gone.exo_object_id))
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED_WITH_ERRORS
    member = WaveMember.objects.get(wave=wave, mailbox=gone)
    assert member.state == MemberState.FAILED and member.attempts == 1
    assert member.last_error.startswith("Exchange Online still did not find the mailbox") and member.finished_at
    assert "ExoNotFound:" in member.last_error and member.not_found_since is None
    assert Mailbox.objects.get(pk=gone.pk).authority == Authority.ON_PREM
    assert states(wave) == {MemberState.DONE: 4, MemberState.FAILED: 1}
    event = AuditEvent.objects.get(action="soa.wave.member_failed")
    assert event.object_id == str(member.pk) and event.reason == member.last_error
    completed = AuditEvent.objects.get(action="soa.wave.completed", object_id=str(wave.pk))
    assert completed.after["state"] == WaveState.COMPLETED_WITH_ERRORS and completed.after["failed"] == 1


def test_pause_takes_effect_within_the_batch_and_resume_finishes_it(exchange, people, monkeypatch):
    mailboxes = movable(12)
    wave = started_wave(people, mailboxes, batch_size=10, max_rate=50.0)
    real_flip, flipped = wave_jobs.flip, []

    def flip_then_pause(client, member, **options):
        outcome = real_flip(client, member, **options)
        flipped.append(member.pk)
        if len(flipped) == 3:
            wave_pause(actor=people["op"], wave_id=wave.pk, reason="stop after this one")
        return outcome

    monkeypatch.setattr(wave_jobs, "flip", flip_then_pause)
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.PAUSED
    assert states(wave) == {MemberState.DONE: 3, MemberState.PENDING: 9}  # nothing left RUNNING
    assert set_mailbox_calls(exchange) == 3
    released = WaveMember.objects.filter(wave=wave, state=MemberState.PENDING, started_at__isnull=False)
    assert released.count() == 7 and all(m.attempts == 0 for m in released)  # the rest of the batch, given back
    wave_resume(actor=people["op"], wave_id=wave.pk)
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 12}
    assert len(flipped) == 12
    # The released members were read before writing (they had been claimed); none was set twice.
    assert set_mailbox_calls(exchange) == 12


def test_a_second_delivery_flips_nothing_twice(exchange, people):
    mailboxes = movable(20)
    wave = started_wave(people, mailboxes, batch_size=5, max_rate=50.0)
    wave_jobs.wave_enqueue(wave_id=wave.pk)  # the same batch delivered again while the first is queued
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 20}
    assert set_mailbox_calls(exchange) == 20
    assert AuditEvent.objects.filter(action="soa.wave.member_done").count() == 20
    assert AuditEvent.objects.filter(action="soa.wave.completed").count() == 1
    # Delivered once more after the end: nothing is claimed, nothing is sent, nothing is audited.
    events = AuditEvent.objects.count()
    assert wave_jobs.wave_run_job(wave.pk)["claimed"] == 0
    assert set_mailbox_calls(exchange) == 20 and AuditEvent.objects.count() == events


def test_the_sweep_returns_a_dead_workers_members_and_an_applied_flip_is_not_sent_again(exchange, people):
    mailboxes = movable(6)
    wave = started_wave(people, mailboxes, batch_size=6, max_rate=50.0)
    django_rq.get_queue(wave_jobs.QUEUE).empty()  # the worker that took the job died...
    claimed = wave_jobs.claim_batch(wave.pk)  # ...after claiming the batch
    assert len(claimed) == 6 and states(wave) == {MemberState.RUNNING: 6}
    applied = claimed[0].mailbox  # ...and flipping the first member, before recording it
    ExchangeOnlineClient(ExchangeConfig.from_settings()).set_mailbox(
        str(applied.exo_object_id), IsExchangeCloudManaged=True, verify=True
    )
    assert wave_jobs.wave_sweep_job() == 0  # not stale yet: a live worker may still be flipping them
    # Its heartbeat stopped with it: once older than WAVE_STALE_SECONDS, the members are the dead worker's.
    WaveMember.objects.filter(wave=wave).update(
        heartbeat_at=timezone.now() - dt.timedelta(seconds=settings.WAVE_STALE_SECONDS + 1)
    )
    assert wave_jobs.wave_sweep_job() == 6
    assert states(wave) == {MemberState.PENDING: 6}
    assert AuditEvent.objects.filter(action="soa.wave.member_swept").count() == 6
    work()  # the sweep queued the wave again
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 6}
    assert set_mailbox_calls(exchange) == 1 + 5  # the dead worker's one, then only the five not yet applied
    first = WaveMember.objects.get(wave=wave, mailbox=applied)
    assert first.attempts == 2
    event = AuditEvent.objects.get(action="soa.wave.member_done", object_id=str(first.pk))
    assert event.after["set_mailbox_sent"] is False
    assert all(cloud_managed_in_exchange(exchange, mailbox) for mailbox in mailboxes)


def test_a_transient_failure_releases_the_member_and_the_wave_still_completes(exchange, people, monkeypatch):
    mailboxes = movable(4)
    monkeypatch.setattr(settings, "EXO_MAX_ATTEMPTS", 1)  # no retries in the client: the runner sees the 503
    exchange.set_faults(fail_next=1, fail_status=503)
    wave = started_wave(people, mailboxes, batch_size=4, max_rate=50.0)
    work()
    waiting = WaveMember.objects.filter(wave=wave, state=MemberState.PENDING)
    # The failed member and the rest of its batch wait MEMBER_RETRY's first delay together; none spent an attempt more.
    assert waiting.count() == 4 and len({m.not_before for m in waiting}) == 1
    assert waiting.first().not_before > timezone.now() + dt.timedelta(seconds=wave_jobs.MEMBER_RETRY.backoff / 2)
    VirtualClock().run(lambda: PilotWave.objects.get(pk=wave.pk).state != WaveState.RUNNING)
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 4}
    released = AuditEvent.objects.filter(action="soa.wave.member_released")
    assert released.count() == 1 and "ExoTransient" in released.get().reason
    assert max(WaveMember.objects.filter(wave=wave).values_list("attempts", flat=True)) == 2


def test_a_member_that_keeps_failing_transiently_fails_after_the_last_attempt(exchange, people, monkeypatch):
    mailboxes = movable(1)
    monkeypatch.setattr(settings, "EXO_MAX_ATTEMPTS", 1)
    monkeypatch.setattr(wave_jobs, "MEMBER_RETRY", dataclasses.replace(wave_jobs.MEMBER_RETRY, max_attempts=2))
    exchange.set_faults(fail_next=2, fail_status=503)  # the member's two attempts
    wave = started_wave(people, mailboxes, batch_size=1, max_rate=50.0)
    VirtualClock().run(lambda: PilotWave.objects.get(pk=wave.pk).state != WaveState.RUNNING)
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED_WITH_ERRORS, states(wave)
    failed = WaveMember.objects.get(wave=wave, state=MemberState.FAILED)
    assert failed.attempts == 2 and failed.last_error.startswith("Gave up after 2 attempts. Last error: ExoTransient")
    assert AuditEvent.objects.filter(action="soa.wave.member_released").count() == 1


def test_a_window_that_closes_mid_run_pauses_the_wave_before_the_next_flip(exchange, people):
    mailboxes = movable(3)
    wave = started_wave(people, mailboxes, batch_size=3, max_rate=50.0)
    PilotWave.objects.filter(pk=wave.pk).update(
        window_start=timezone.now() - dt.timedelta(hours=2), window_end=timezone.now() - dt.timedelta(seconds=1)
    )
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.PAUSED and states(wave) == {MemberState.PENDING: 3}
    assert set_mailbox_calls(exchange) == 0
    event = AuditEvent.objects.get(action="soa.wave.paused", object_id=str(wave.pk))
    assert event.actor is None and "closed at" in event.reason


def test_the_sweep_requeues_a_wave_whose_next_batch_was_lost(exchange, people):
    mailboxes = movable(6)
    wave = started_wave(people, mailboxes, batch_size=3, max_rate=50.0)
    queue = django_rq.get_queue(wave_jobs.QUEUE)
    queue.empty()
    wave_jobs.run_batch(wave.pk)  # a worker flipped and recorded a batch, then died before queueing the next
    assert states(wave) == {MemberState.DONE: 3, MemberState.PENDING: 3} and len(queue) == 0
    assert wave_jobs.wave_sweep_job() == 0 and len(queue) == 0  # recent activity: it may just be slow
    old = timezone.now() - dt.timedelta(minutes=11)
    WaveMember.objects.filter(wave=wave).exclude(started_at=None).update(started_at=old, finished_at=old)
    PilotWave.objects.filter(pk=wave.pk).update(updated_at=old)
    assert wave_jobs.wave_sweep_job() == 0 and len(queue) == 1
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 6}
    assert set_mailbox_calls(exchange) == 6


def test_flips_keep_to_the_wave_rate_across_batches(exchange, people):
    mailboxes = movable(9)
    wave = started_wave(people, mailboxes, batch_size=3, max_rate=5.0)
    work()
    starts = sorted(WaveMember.objects.filter(wave=wave).values_list("started_at", flat=True))
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.19, gaps  # 1 / max_rate, batch boundaries included
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.COMPLETED


def test_a_wave_paused_mid_batch_can_be_cancelled_and_nothing_more_is_flipped(exchange, people, monkeypatch):
    from soa.services.waves import wave_cancel

    mailboxes = movable(6)
    wave = started_wave(people, mailboxes, batch_size=6, max_rate=50.0)
    real_flip = wave_jobs.flip

    def flip_then_pause(client, member, **options):
        outcome = real_flip(client, member, **options)
        if PilotWave.objects.get(pk=wave.pk).state == WaveState.RUNNING:
            wave_pause(actor=people["op"], wave_id=wave.pk)
        return outcome

    monkeypatch.setattr(wave_jobs, "flip", flip_then_pause)
    work()
    wave_cancel(actor=people["op"], wave_id=wave.pk, reason="pilot postponed")
    assert states(wave) == {MemberState.DONE: 1, MemberState.SKIPPED: 5}
    wave_jobs.wave_enqueue(wave_id=wave.pk)  # a late delivery
    work()
    assert set_mailbox_calls(exchange) == 1
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.CANCELLED


def test_a_worker_killed_mid_run_loses_nothing_and_flips_nothing_twice(exchange, people, tmp_path):
    """A real worker process (rqworker, forking a work horse per job) SIGKILLed mid-wave; the sweep and a second
    worker finish it. Needs a database both processes see: PostgreSQL (SQLite's test database is in memory)."""
    if connection.vendor != "postgresql":
        pytest.skip("a worker process shares the test database only on PostgreSQL (CI runs it there)")
    mailboxes = movable(20)
    wave = started_wave(people, mailboxes, batch_size=5, max_rate=4.0)
    with open(tmp_path / "worker1.log", "wb") as log:
        worker = start_worker(log)
        deadline = clock.monotonic() + 60
        while WaveMember.objects.filter(wave=wave, state=MemberState.DONE).count() < 7:
            assert clock.monotonic() < deadline and worker.poll() is None, (tmp_path / "worker1.log").read_text()
            clock.sleep(0.05)
        kill_worker(worker)
    at_kill = states(wave)
    assert at_kill.get(MemberState.PENDING) and PilotWave.objects.get(pk=wave.pk).state == WaveState.RUNNING
    wave_jobs.wave_sweep_job(older_than_seconds=0)
    assert MemberState.RUNNING not in states(wave)
    with open(tmp_path / "worker2.log", "wb") as log:
        run_worker_until_empty(log, timeout=120)
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED, (at_kill, states(wave), (tmp_path / "worker2.log").read_text())
    assert states(wave) == {MemberState.DONE: 20}
    assert all(cloud_managed_in_exchange(exchange, mailbox) for mailbox in mailboxes)
    done = list(AuditEvent.objects.filter(action="soa.wave.member_done").values_list("object_id", flat=True))
    assert len(done) == len(set(done)) == 20  # no duplicate audit event
    # Exchange counts a Set-Mailbox it received: one that reached it before the kill was applied and is read, not
    # resent; one that did not reach it was never counted. Either way, one per mailbox.
    assert set_mailbox_calls(exchange) == 20
    assert verify_chain()[1] is None


def test_a_flip_answered_with_an_empty_error_after_applying_is_recorded_done_and_not_resent(exchange, people):
    """exchange-facts §7.4 and §4.3: Set-Mailbox -IsExchangeCloudManaged can fail with an empty message although
    the flip was applied; the client's re-read finds it applied, so the member is DONE after one Set-Mailbox."""
    mailboxes = movable(2)
    wave = started_wave(people, mailboxes, batch_size=2, max_rate=50.0)
    exchange.set_faults(error_after_apply=1)
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 2}
    assert exchange.counters()["by_status"].get("500") == 1
    assert set_mailbox_calls(exchange) == 2
    assert all(cloud_managed_in_exchange(exchange, mailbox) for mailbox in mailboxes)
