"""Runs whose job Redis lost (emptied by a restart, or down when the request committed) are queued again by the sweep,
with the real Redis and database: a queued import would otherwise block every later import, and a queued drift scan
every later scan. A run whose job is still queued is left to it, and the job queued again names the run."""

import datetime as dt

import django_rq
import pytest
from django.utils import timezone

from portal.models import AuditEvent
from soa import jobs
from writeback.drift import drift_scan_request
from writeback.inventory import inventory_run_request
from writeback.jobs.drift import drift_scan_sweep
from writeback.jobs.inventory import inventory_sweep
from writeback.models import DriftScan, InventoryRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def queue():
    queue = django_rq.get_queue(jobs.QUEUE)
    queue.empty()
    yield queue
    queue.empty()


def _requested(model, pk: int, minutes: int) -> None:
    model.objects.filter(pk=pk).update(requested_at=timezone.now() - dt.timedelta(minutes=minutes))


def test_a_queued_import_whose_job_was_lost_is_queued_again_and_one_still_queued_is_left(
    queue, django_capture_on_commit_callbacks
):
    run = inventory_run_request(actor=None)
    (job,) = queue.jobs
    assert job.args == (run.pk,) and InventoryRun.objects.get(pk=run.pk).job_id == job.id
    _requested(InventoryRun, run.pk, minutes=10)

    inventory_sweep()
    assert [queued.args for queued in queue.jobs] == [(run.pk,)]  # its job is still there: nothing added
    assert not AuditEvent.objects.filter(action="writeback.inventory.requeued").exists()

    queue.empty()  # Redis restarted without its data
    inventory_sweep()
    (again,) = queue.jobs
    assert again.args == (run.pk,) and InventoryRun.objects.get(pk=run.pk).job_id == again.id
    (event,) = AuditEvent.objects.filter(action="writeback.inventory.requeued", object_id=str(run.pk))
    assert "no longer in Redis" in event.reason


def test_a_recent_queued_import_is_left_to_its_worker_even_without_a_job(queue):
    inventory_run_request(actor=None)
    queue.empty()
    inventory_sweep()
    assert queue.count == 0  # requested a moment ago: a worker may be about to claim it


def test_a_queued_drift_scan_whose_job_was_lost_is_queued_again(queue):
    scan = drift_scan_request(actor=None)
    queue.empty()
    _requested(DriftScan, scan.pk, minutes=10)
    drift_scan_sweep()
    (again,) = queue.jobs
    assert again.args == (scan.pk,) and DriftScan.objects.get(pk=scan.pk).job_id == again.id
    assert AuditEvent.objects.filter(action="writeback.drift_scan.requeued", object_id=str(scan.pk)).exists()
