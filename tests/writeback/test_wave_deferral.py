"""The wave runner puts a member down and comes back later instead of holding its worker: when Exchange asks for a
longer wait than the client's cap (Retry-After) and while a mailbox answers 404 (replication lag), against the
module's own directory and emulator through a real RQ worker with its scheduler.

"Later" is reached without waiting: the test moves the member's ``not_before`` and the scheduled batch into the
past, as test_wave_schedule does with the periodic sweep."""

import datetime as dt

import django_rq
import pytest
from django.utils import timezone
from rq import SimpleWorker

from portal.models import AuditEvent
from soa.choices import MemberState, WaveState
from soa.models import WaveMember
from tests.soa.test_wave_support import movable, started_wave
from tests.writeback import test_wave_jobs
from tests.writeback.test_wave_jobs import cloud_managed_in_exchange, states
from writeback import wave_jobs

tenant = test_wave_jobs.tenant
exchange = test_wave_jobs.exchange
people = test_wave_jobs.people

pytestmark = pytest.mark.django_db(transaction=True)


def _queue():
    return django_rq.get_queue(wave_jobs.QUEUE)


def scheduled_batches() -> list[tuple[str, dt.datetime]]:
    queue = _queue()
    registry = queue.scheduled_job_registry
    return [(job_id, registry.get_scheduled_time(job_id)) for job_id in registry.get_job_ids()]


def work() -> None:
    """A real worker with its scheduler, until nothing is due; no job may fail."""
    queue = _queue()
    SimpleWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=True)
    failed = queue.failed_job_registry
    assert failed.count == 0, [queue.fetch_job(job_id).exc_info for job_id in failed.get_job_ids()]


def time_passes(wave, **member_changes) -> None:
    """What the clock would do: the deferred members and the scheduled batch fall due."""
    past = timezone.now() - dt.timedelta(seconds=1)
    WaveMember.objects.filter(wave=wave, state=MemberState.PENDING).update(not_before=past, **member_changes)
    queue = _queue()
    for job_id, _ in scheduled_batches():
        queue.scheduled_job_registry.schedule(queue.fetch_job(job_id), past)


def test_a_retry_after_beyond_the_cap_releases_the_batch_and_reschedules_it_at_that_time(exchange, people, settings):
    """exchange-facts §4.5: a 429's Retry-After is to be honoured. Longer than EXO_MAX_RETRY_AFTER_SECONDS, the
    worker neither sleeps through it nor cuts it short: the members go back and the batch is scheduled then."""
    settings.EXO_RATE_LIMIT_PACING = False  # let the 429 happen rather than pacing before it
    settings.EXO_MAX_RETRY_AFTER_SECONDS = 30
    mailboxes = movable(4)
    wave = started_wave(people, mailboxes, batch_size=4, max_rate=50.0)
    exchange.set_throttle(rate=0.01, burst=3)  # one flip (read, Set-Mailbox, re-read), then 100 s to the next
    before = timezone.now()
    work()
    assert states(wave) == {MemberState.DONE: 1, MemberState.PENDING: 3}
    assert exchange.counters()["throttled"] == 1  # asked once, not hammered
    waiting = list(WaveMember.objects.filter(wave=wave, state=MemberState.PENDING))
    retry_at = waiting[0].not_before
    assert retry_at >= before + dt.timedelta(seconds=30)
    assert all(m.not_before == retry_at and m.attempts == 0 for m in waiting)  # waiting is not a failed attempt
    [(_, scheduled_at)] = scheduled_batches()
    assert abs((scheduled_at - retry_at).total_seconds()) < 1  # rq keeps whole seconds
    assert len(_queue()) == 0  # nothing queued before that time
    released = AuditEvent.objects.get(action="soa.wave.member_released")
    assert "asked to retry after" in released.reason and released.after["not_before"] == retry_at.isoformat()
    assert PilotWave_state(wave) == WaveState.RUNNING

    exchange.set_throttle(rate=None)
    time_passes(wave)
    work()
    assert PilotWave_state(wave) == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 4}
    assert all(cloud_managed_in_exchange(exchange, mailbox) for mailbox in mailboxes)


def PilotWave_state(wave) -> str:  # noqa: N802 - reads as what it returns
    wave.refresh_from_db()
    return wave.state


def test_a_mailbox_answering_404_is_retried_with_backoff_until_exchange_finds_it(exchange, people, settings):
    """exchange-facts §4.3: an object can answer 404 for a while after a write (replication lag; one client
    retries 404s after writes for up to 300 s). The emulator's replication_lag fault hides the mailboxes; the
    runner gives the members back with a growing delay, without a worker waiting, and flips them once found."""
    settings.EXO_NOT_FOUND_RETRY_SECONDS = 300
    mailboxes = movable(3)
    wave = started_wave(people, mailboxes, batch_size=3, max_rate=50.0)
    exchange.set_faults(replication_lag=10**12)  # longer than any mailbox has existed: every one "just created"
    before = timezone.now()
    work()
    assert states(wave) == {MemberState.PENDING: 3}
    first = list(WaveMember.objects.filter(wave=wave))
    assert all(m.not_found_since >= before and m.attempts == 0 for m in first)
    delay = (first[0].not_before - first[0].not_found_since).total_seconds()
    assert delay == wave_jobs.NOT_FOUND_BACKOFF_MIN
    assert "answered 404" in first[0].last_error and "replication lag" in first[0].last_error
    [(_, scheduled_at)] = scheduled_batches()  # one batch, when the first of them is due
    assert abs((scheduled_at - min(m.not_before for m in first)).total_seconds()) < 1

    # Still not found 100 s after the first 404: asked again later, the delay grown, the first 404 kept.
    time_passes(wave, not_found_since=timezone.now() - dt.timedelta(seconds=100))
    work()
    second = list(WaveMember.objects.filter(wave=wave))
    assert states(wave) == {MemberState.PENDING: 3}
    assert all((m.not_before - timezone.now()).total_seconds() > wave_jobs.NOT_FOUND_BACKOFF_MIN for m in second)

    exchange.set_faults(replication_lag=0)  # replication caught up
    time_passes(wave)
    work()
    assert PilotWave_state(wave) == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 3}
    assert not WaveMember.objects.filter(wave=wave, not_found_since__isnull=False).exists()
    assert all(cloud_managed_in_exchange(exchange, mailbox) for mailbox in mailboxes)


def test_a_mailbox_still_missing_after_the_bound_fails_saying_why(exchange, people, settings):
    """exchange-facts §4.3: the retry of a 404 is bounded; past EXO_NOT_FOUND_RETRY_SECONDS from the first 404 the
    member fails with a message naming both causes (replication lag not caught up, or a deleted mailbox)."""
    settings.EXO_NOT_FOUND_RETRY_SECONDS = 300
    mailboxes = movable(2)
    wave = started_wave(people, mailboxes, batch_size=2, max_rate=50.0)
    exchange.set_faults(replication_lag=10**12)
    work()
    assert states(wave) == {MemberState.PENDING: 2}
    time_passes(wave, not_found_since=timezone.now() - dt.timedelta(seconds=301))
    work()
    assert PilotWave_state(wave) == WaveState.COMPLETED_WITH_ERRORS and states(wave) == {MemberState.FAILED: 2}
    failed = WaveMember.objects.filter(wave=wave).first()
    assert failed.last_error.startswith("Exchange Online still did not find the mailbox 5 minutes after its first 404")
    assert "replication lag" in failed.last_error and "deleted" in failed.last_error
    assert failed.not_found_since is None and failed.attempts == 1
    assert AuditEvent.objects.filter(action="soa.wave.member_failed").count() == 2


def test_the_sweep_leaves_a_wave_waiting_for_its_scheduled_batch(exchange, people, settings):
    """A wave whose members are all deferred is not stalled: its batch is scheduled, not lost."""
    settings.EXO_NOT_FOUND_RETRY_SECONDS = 3600
    wave = started_wave(people, movable(2), batch_size=2, max_rate=50.0)
    exchange.set_faults(replication_lag=10**12)
    work()
    old = timezone.now() - dt.timedelta(minutes=11)
    WaveMember.objects.filter(wave=wave).update(started_at=old, not_before=timezone.now() + dt.timedelta(minutes=1))
    type(wave).objects.filter(pk=wave.pk).update(updated_at=old)
    assert wave_jobs.wave_sweep_job() == 0 and len(_queue()) == 0
    # Overdue by more than the sweep's margin, the scheduled batch was lost: the sweep queues one.
    WaveMember.objects.filter(wave=wave).update(not_before=old)
    assert wave_jobs.wave_sweep_job() == 0 and len(_queue()) == 1
