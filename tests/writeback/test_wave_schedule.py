"""The periodic wave sweep on the session's Redis, run by a real RQ worker (in-process SimpleWorker with its
scheduler): one pending sweep however often it is scheduled, each run sweeps and schedules the next, and a
stray sweep never starts a second chain."""

import datetime as dt
from io import StringIO

import django_rq
import pytest
from django.core.management import call_command
from django.utils import timezone
from rq import SimpleWorker
from rq.job import JobStatus

from portal.models import AuditEvent
from soa.choices import MemberState, WaveState
from soa.models import WaveMember
from soa.services.approvals import wave_approve
from soa.services.wave_run import wave_pause, wave_start
from tests.soa.test_wave_support import cast, make_mailbox, submitted_wave
from writeback import wave_schedule
from writeback.wave_jobs import QUEUE

pytestmark = pytest.mark.django_db(transaction=True)

SWEEP = "writeback.wave_schedule.wave_sweep_periodic_job"


def _clear(queue) -> None:
    queue.empty()
    for registry in (queue.scheduled_job_registry, queue.failed_job_registry, queue.finished_job_registry):
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)
    queue.connection.delete(wave_schedule.NEXT_KEY)


@pytest.fixture
def queue(redis_url):
    queue = django_rq.get_queue(QUEUE)
    _clear(queue)
    yield queue
    _clear(queue)


def scheduled_sweeps(queue) -> list[str]:
    ids = queue.scheduled_job_registry.get_job_ids() + queue.job_ids
    return [job_id for job_id in ids if queue.fetch_job(job_id).func_name == SWEEP]


def make_due(queue, job) -> None:
    """Move a scheduled job's time to the past, as if its interval had passed."""
    queue.scheduled_job_registry.schedule(job, timezone.now() - dt.timedelta(seconds=1))


def work(queue) -> None:
    """Run a real worker with its scheduler until the queue is empty (due scheduled jobs are enqueued first)."""
    SimpleWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=True)
    failed = queue.failed_job_registry
    assert failed.count == 0, [queue.fetch_job(job_id).exc_info for job_id in failed.get_job_ids()]


def test_scheduling_twice_leaves_one_pending_sweep_at_the_configured_interval(queue, settings):
    settings.WAVE_SWEEP_INTERVAL = 120
    before = timezone.now()
    job, created = wave_schedule.wave_sweep_schedule()
    again, created_again = wave_schedule.wave_sweep_schedule()
    assert created and not created_again and again.id == job.id
    assert scheduled_sweeps(queue) == [job.id]
    assert job.get_status() == JobStatus.SCHEDULED
    due = wave_schedule.sweep_due_at(job)
    assert before + dt.timedelta(seconds=119) <= due <= timezone.now() + dt.timedelta(seconds=120)

    out = StringIO()
    call_command("wave_sweep_schedule", stdout=out)
    assert f"already scheduled: job {job.id}" in out.getvalue()
    assert scheduled_sweeps(queue) == [job.id]


def test_the_command_schedules_the_sweep_when_none_is_pending(queue):
    out = StringIO()
    call_command("wave_sweep_schedule", stdout=out)
    (job_id,) = scheduled_sweeps(queue)
    assert f"Scheduled the wave sweep: job {job_id}" in out.getvalue()


def test_a_deleted_pending_sweep_is_replaced(queue):
    job, _ = wave_schedule.wave_sweep_schedule()
    queue.scheduled_job_registry.remove(job, delete_job=True)  # e.g. deleted from the /jobs/ dashboard
    assert wave_schedule.pending_sweep() is None
    replacement, created = wave_schedule.wave_sweep_schedule()
    assert created and replacement.id != job.id and scheduled_sweeps(queue) == [replacement.id]


def test_the_scheduled_sweep_runs_the_sweep_and_schedules_the_next(queue, make_user):
    people = cast(make_user)
    wave = submitted_wave(people["op"], make_mailbox("Ann Lee"), make_mailbox("Bob Ray"))
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=wave.pk)
    wave_pause(actor=people["op2"], wave_id=wave.pk, reason="keep the runner out of this test")
    queue.empty()  # the batch wave_start queued: this test is about the sweep alone
    # A worker died ten minutes ago holding one member.
    member = WaveMember.objects.filter(wave=wave).order_by("pk").first()
    WaveMember.objects.filter(pk=member.pk).update(
        state=MemberState.RUNNING, started_at=timezone.now() - dt.timedelta(minutes=11), attempts=1
    )

    first, _ = wave_schedule.wave_sweep_schedule()
    make_due(queue, first)
    work(queue)

    first.refresh()
    assert first.get_status() == JobStatus.FINISHED and first.return_value() == 1
    member.refresh_from_db()
    assert member.state == MemberState.PENDING and member.last_error.startswith("Returned: its worker stopped")
    assert AuditEvent.objects.filter(action="soa.wave.member_swept", object_id=str(member.pk)).count() == 1
    wave.refresh_from_db()
    assert wave.state == WaveState.PAUSED
    # The next sweep is scheduled, and it is the only one.
    following = wave_schedule.pending_sweep()
    assert following is not None and following.id != first.id
    assert scheduled_sweeps(queue) == [following.id]
    assert wave_schedule.sweep_due_at(following) > timezone.now()

    make_due(queue, following)
    work(queue)  # a new worker (after a restart) runs the chain on
    third = wave_schedule.pending_sweep()
    assert following.get_status(refresh=True) == JobStatus.FINISHED and following.return_value() == 0
    assert third is not None and scheduled_sweeps(queue) == [third.id]


def test_a_stray_sweep_sweeps_once_and_starts_no_second_chain(queue):
    pending, _ = wave_schedule.wave_sweep_schedule()
    stray = queue.enqueue(SWEEP)  # e.g. an old chain's sweep requeued from the dashboard
    work(queue)
    assert stray.get_status(refresh=True) == JobStatus.FINISHED and stray.return_value() == 0
    assert scheduled_sweeps(queue) == [pending.id]
    assert wave_schedule.pending_sweep().id == pending.id

    make_due(queue, pending)
    work(queue)
    (following,) = scheduled_sweeps(queue)
    assert following not in (pending.id, stray.id)


def test_a_sweep_whose_worker_died_before_it_continued_is_replaced_and_ends_when_run(queue):
    started, _ = wave_schedule.wave_sweep_schedule()
    # A worker took it from the queue and died before its first line: the chain points at a job no one will run.
    queue.scheduled_job_registry.remove(started)
    started.set_status(JobStatus.STARTED)
    assert wave_schedule.pending_sweep() is None
    replacement, created = wave_schedule.wave_sweep_schedule()
    assert created and replacement.id != started.id
    # Should the old job run after all (requeued), it sees it is no longer the chain's and schedules nothing.
    queue.enqueue_job(started)
    work(queue)
    assert scheduled_sweeps(queue) == [replacement.id]
