"""The audit chain's periodic head publication on the session's Redis, ticked by a real RQ worker with its scheduler:
one pending tick however often it is scheduled, a head appended per tick, and a tick that finds the chain truncated
publishes nothing and is recorded as a failed job."""

import datetime as dt
from io import StringIO

import django_rq
import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from rq import SimpleWorker
from rq.job import JobStatus

from portal.audit import audit_record
from portal.audit_head import read_heads
from portal.models import AuditEvent
from tests.portal.test_audit import _tamper
from writeback.jobs import audit as audit_jobs

pytestmark = pytest.mark.django_db(transaction=True)


def _clear(queue) -> None:
    queue.empty()
    for registry in (queue.scheduled_job_registry, queue.failed_job_registry, queue.finished_job_registry):
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)
    queue.connection.delete(audit_jobs.NEXT_KEY)


@pytest.fixture
def queue(redis_url, settings):
    settings.AUDIT_HEAD_INTERVAL_MINUTES = 15
    queue = django_rq.get_queue(audit_jobs.QUEUE)
    _clear(queue)
    yield queue
    _clear(queue)


def _events(count: int) -> list[AuditEvent]:
    events = []
    for i in range(count):
        with transaction.atomic():
            events.append(audit_record(actor=None, action="test.thing.done", reason=f"event {i}"))
    return events


def tick(queue):
    """Make the pending tick due and let a real worker (with its scheduler) run it, and only it."""
    job = audit_jobs.CHAIN.pending(queue)
    assert job is not None
    queue.scheduled_job_registry.schedule(job, timezone.now() - dt.timedelta(seconds=1))
    SimpleWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=True, max_jobs=1)
    job.refresh()
    return job


def test_the_schedule_keeps_one_pending_tick(queue):
    out = StringIO()
    call_command("audit_head_schedule", stdout=out)
    call_command("audit_head_schedule", stdout=out)
    assert "Scheduled the audit head publication" in out.getvalue()
    assert "already scheduled" in out.getvalue()
    assert len(queue.scheduled_job_registry.get_job_ids()) == 1


def test_each_tick_appends_the_verified_head_and_schedules_the_next(queue):
    events = _events(3)
    call_command("audit_head_schedule", stdout=StringIO())
    first = tick(queue)
    assert first.get_status() == JobStatus.FINISHED, first.exc_info
    assert read_heads()[-1].head_id == events[-1].pk and read_heads()[-1].count == 3
    more = _events(2)
    second = tick(queue)
    assert second.get_status() == JobStatus.FINISHED, second.exc_info
    assert [head.head_id for head in read_heads()] == [events[-1].pk, more[-1].pk]


def test_a_tick_after_a_truncation_publishes_nothing_and_is_recorded_as_failed(queue, settings):
    events = _events(3)
    call_command("audit_head_schedule", stdout=StringIO())
    tick(queue)
    published = read_heads()
    with transaction.atomic():
        _tamper("DELETE FROM portal_auditevent WHERE id = %s", [events[-1].pk])
    failed = tick(queue)
    assert failed.get_status() == JobStatus.FAILED
    assert read_heads() == published
    record = AuditEvent.objects.get(action="writeback.job.failed", object_id=failed.id)
    assert "no head was published" in record.reason and f"#{events[-1].pk}" in record.reason
    assert audit_jobs.CHAIN.pending(queue) is not None  # the schedule goes on, and so will the alarm


def test_no_schedule_when_the_interval_is_zero(queue, settings):
    settings.AUDIT_HEAD_INTERVAL_MINUTES = 0
    out = StringIO()
    call_command("audit_head_schedule", stdout=out)
    assert "nothing was scheduled" in out.getvalue()
    assert audit_jobs.CHAIN.pending(queue) is None
