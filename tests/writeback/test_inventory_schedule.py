"""Scheduled inventory imports on the session's Redis, ticked by a real RQ worker with its scheduler: one pending tick
however often the chain is started, a full import when the reconciliation is due and an incremental one otherwise,
each audited as the system's, and nothing requested (nor any failure) while an import is already open."""

import datetime as dt
from io import StringIO

import django_rq
import pytest
from django.core.management import call_command
from django.utils import timezone
from rq import SimpleWorker
from rq.job import JobStatus

from portal.models import AuditEvent
from writeback import inventory_schedule
from writeback.models import InventoryRun

pytestmark = pytest.mark.django_db(transaction=True)

TICK = "writeback.inventory_schedule.inventory_periodic_job"


def _clear(queue) -> None:
    queue.empty()
    for registry in (queue.scheduled_job_registry, queue.failed_job_registry, queue.finished_job_registry):
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)
    queue.connection.delete(inventory_schedule.NEXT_KEY)


@pytest.fixture
def queue(redis_url, settings):
    settings.INVENTORY_FULL_INTERVAL_DAYS = 7
    settings.INVENTORY_INCREMENTAL_INTERVAL_MINUTES = 30
    queue = django_rq.get_queue(inventory_schedule.QUEUE)
    _clear(queue)
    yield queue
    _clear(queue)


def ticks(queue) -> list[str]:
    ids = queue.scheduled_job_registry.get_job_ids() + queue.job_ids
    return [job_id for job_id in ids if queue.fetch_job(job_id).func_name == TICK]


def tick(queue) -> str:
    """Make the pending tick due and let a real worker (with its scheduler) run it, and only it: the import it
    queues stays in the queue, where the test finds it."""
    job = inventory_schedule.pending_tick(queue)
    assert job is not None
    queue.scheduled_job_registry.schedule(job, timezone.now() - dt.timedelta(seconds=1))
    SimpleWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=True, max_jobs=1)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.exc_info
    return job.return_value()


def completed(mode: str, *, days_ago: float) -> InventoryRun:
    finished = timezone.now() - dt.timedelta(days=days_ago)
    return InventoryRun.objects.create(
        mode=mode, state=InventoryRun.State.DONE, started_at=finished, finished_at=finished
    )


def test_starting_the_chain_twice_leaves_one_pending_tick_at_the_incremental_interval(queue):
    before = timezone.now()
    job, created = inventory_schedule.inventory_schedule()
    again, created_again = inventory_schedule.inventory_schedule()
    assert created and not created_again and again.id == job.id
    assert ticks(queue) == [job.id]
    assert inventory_schedule.tick_due_at(job) >= before + dt.timedelta(minutes=29)

    out = StringIO()
    call_command("inventory_schedule", stdout=out)
    assert f"already scheduled: job {job.id}" in out.getvalue() and ticks(queue) == [job.id]


def test_with_no_completed_import_a_tick_queues_a_full_one_audited_as_the_systems(queue):
    inventory_schedule.inventory_schedule()
    result = tick(queue)
    run = InventoryRun.objects.get()
    assert run.mode == InventoryRun.Mode.FULL and run.state == InventoryRun.State.QUEUED and run.requested_by is None
    assert run.job_id in queue.job_ids  # the import itself runs as its own job
    assert f"#{run.pk}" in result
    scheduled = AuditEvent.objects.get(action="writeback.inventory.scheduled", object_id=str(run.pk))
    assert scheduled.actor is None and "no full import has completed yet" in scheduled.reason
    assert AuditEvent.objects.filter(action="writeback.inventory.requested", object_id=str(run.pk)).exists()
    assert len(ticks(queue)) == 1  # the tick scheduled its successor before anything else


def test_between_reconciliations_a_tick_queues_an_incremental_import(queue):
    completed(InventoryRun.Mode.FULL, days_ago=1)
    inventory_schedule.inventory_schedule()
    tick(queue)
    assert InventoryRun.objects.get(state=InventoryRun.State.QUEUED).mode == InventoryRun.Mode.INCREMENTAL


def test_when_the_last_full_import_is_older_than_the_interval_the_tick_reconciles_in_full(queue, settings):
    settings.INVENTORY_FULL_INTERVAL_DAYS = 3
    completed(InventoryRun.Mode.FULL, days_ago=3.5)
    completed(InventoryRun.Mode.INCREMENTAL, days_ago=0.1)
    inventory_schedule.inventory_schedule()
    tick(queue)
    run = InventoryRun.objects.get(state=InventoryRun.State.QUEUED)
    assert run.mode == InventoryRun.Mode.FULL
    reason = AuditEvent.objects.get(action="writeback.inventory.scheduled", object_id=str(run.pk)).reason
    assert "INVENTORY_FULL_INTERVAL_DAYS=3" in reason


def test_a_tick_while_an_import_is_open_requests_nothing_and_does_not_fail(queue):
    completed(InventoryRun.Mode.FULL, days_ago=1)
    running = InventoryRun.objects.create(mode=InventoryRun.Mode.FULL, state=InventoryRun.State.RUNNING)
    inventory_schedule.inventory_schedule()
    result = tick(queue)
    assert result.startswith("skipped:") and f"Import #{running.pk} is already running" in result
    assert InventoryRun.objects.filter(state__in=InventoryRun.OPEN_STATES).count() == 1
    assert not AuditEvent.objects.filter(action="writeback.inventory.scheduled").exists()
    assert len(ticks(queue)) == 1  # and the chain goes on


def test_with_incremental_imports_off_only_the_reconciliation_is_scheduled(queue, settings):
    settings.INVENTORY_INCREMENTAL_INTERVAL_MINUTES = 0
    completed(InventoryRun.Mode.FULL, days_ago=1)
    job, _ = inventory_schedule.inventory_schedule()
    assert inventory_schedule.tick_due_at(job) >= timezone.now() + dt.timedelta(minutes=59)
    assert tick(queue) == "nothing is due" and not InventoryRun.objects.filter(state=InventoryRun.State.QUEUED)


def test_with_both_intervals_zero_nothing_is_scheduled_and_a_pending_tick_ends_the_chain(queue, settings):
    inventory_schedule.inventory_schedule()
    settings.INVENTORY_FULL_INTERVAL_DAYS = 0
    settings.INVENTORY_INCREMENTAL_INTERVAL_MINUTES = 0
    assert tick(queue) == "nothing is due"
    assert ticks(queue) == [] and inventory_schedule.inventory_schedule() == (None, False)
    out = StringIO()
    call_command("inventory_schedule", stdout=out)
    assert "off" in out.getvalue()
