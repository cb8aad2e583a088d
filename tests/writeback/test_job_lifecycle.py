"""The job lifecycle (writeback.jobs.lifecycle): a run function that raises anything at all is recorded failed
with its error and an audit event, never left RUNNING; the sweep fails a run whose heartbeat stopped, after which
the next import may run, and the stale run's own worker, should it wake, stops without writing."""

import dataclasses
import datetime as dt

import pytest
from django.utils import timezone

from portal.models import AuditEvent
from soa.choices import MemberState, WaveState
from soa.models import PilotWave, WaveMember
from tests.soa.test_wave_support import movable, started_wave
from tests.writeback import test_wave_jobs
from tests.writeback.test_wave_jobs import states
from writeback import wave_jobs
from writeback.inventory import _bump, inventory_run_request
from writeback.jobs import inventory as inventory_jobs
from writeback.jobs import lifecycle, waves
from writeback.jobs.sweep import sweep_job
from writeback.models import InventoryRun

tenant = test_wave_jobs.tenant
exchange = test_wave_jobs.exchange
people = test_wave_jobs.people


def _queued() -> InventoryRun:
    return inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)


def _explode(run: InventoryRun) -> None:
    _bump(run, ad_read=3)  # some progress first, as a real failure would come mid-run
    raise KeyError("Identity")


@pytest.mark.django_db
def test_a_run_function_that_raises_unexpectedly_is_recorded_failed_with_its_error_and_an_audit_event():
    run = _queued()
    work = dataclasses.replace(inventory_jobs.INVENTORY, run=_explode)
    with pytest.raises(KeyError):  # raised again after it is recorded, for RQ's Failed registry
        lifecycle.perform(work, run.pk, correlation="test-explode")
    run.refresh_from_db()
    assert run.state == InventoryRun.State.FAILED and run.finished_at is not None
    assert run.error == "Unexpected error KeyError: 'Identity'" and run.ad_read == 3
    started = AuditEvent.objects.get(action="writeback.inventory.started", object_id=str(run.pk))
    failed = AuditEvent.objects.get(action="writeback.inventory.failed", object_id=str(run.pk))
    assert started.correlation_id == failed.correlation_id == "test-explode"
    assert failed.reason == run.error and failed.after["state"] == InventoryRun.State.FAILED
    # Nothing is left open, so the next import may be requested.
    assert _queued().state == InventoryRun.State.QUEUED


@pytest.mark.django_db
def test_the_sweep_fails_an_import_whose_heartbeat_stopped_and_the_next_one_may_run(settings):
    settings.INVENTORY_STALE_SECONDS = 1800
    stale = inventory_jobs.claim(_queued().pk)
    assert stale.state == InventoryRun.State.RUNNING and stale.heartbeat_at is not None
    assert sweep_job() == 0 and InventoryRun.objects.get(pk=stale.pk).state == InventoryRun.State.RUNNING  # alive
    InventoryRun.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=31))
    sweep_job()
    stale.refresh_from_db()
    assert stale.state == InventoryRun.State.FAILED and "Its worker stopped: no heartbeat since" in stale.error
    event = AuditEvent.objects.get(action="writeback.inventory.failed", object_id=str(stale.pk))
    assert event.actor is None and event.reason == stale.error
    # The stale run's worker, were it only slow, stops at its next heartbeat instead of writing beside the next run.
    with pytest.raises(lifecycle.RunAbandoned):
        _bump(stale, ad_read=1)
    assert inventory_jobs.claim(_queued().pk).state == InventoryRun.State.RUNNING


@pytest.mark.django_db
def test_a_failure_recorded_after_the_sweep_took_the_run_changes_nothing():
    run = inventory_jobs.claim(_queued().pk)
    InventoryRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
    assert inventory_jobs.inventory_sweep() == [run.pk]
    ended = inventory_jobs._fail(run, "late")
    assert ended.error.startswith("Its worker stopped") and ended.state == InventoryRun.State.FAILED
    assert AuditEvent.objects.filter(action="writeback.inventory.failed", object_id=str(run.pk)).count() == 1


@pytest.mark.django_db(transaction=True)  # the wave's next batch is queued on commit
def test_a_wave_batch_whose_flip_raises_unexpectedly_gives_its_members_back_with_the_error(
    exchange, people, monkeypatch
):
    mailboxes = movable(3)
    wave = started_wave(people, mailboxes, batch_size=3, max_rate=50.0)

    def broken_flip(client, member, **options):
        raise RuntimeError("a bug in the runner")

    monkeypatch.setattr(wave_jobs, "flip", broken_flip)
    with pytest.raises(RuntimeError):
        waves.wave_run_job(wave.pk)
    # Nothing is left RUNNING: the member being flipped is charged and recorded, the two not reached are released.
    assert states(wave) == {MemberState.PENDING: 3}
    first = WaveMember.objects.filter(wave=wave).order_by("pk").first()
    assert first.attempts == 1 and first.last_error == "Unexpected error RuntimeError: a bug in the runner"
    released = AuditEvent.objects.get(action="soa.wave.member_released", object_id=str(first.pk))
    assert released.reason == first.last_error
    batch = AuditEvent.objects.get(action="soa.wave.batch_released", object_id=str(wave.pk))
    assert len(batch.after["members"]) == 2 and "a bug in the runner" in batch.reason
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.RUNNING
    # The next batch waits for the retry policy's backoff.
    queue = test_wave_jobs.django_rq.get_queue(wave_jobs.QUEUE)
    [scheduled] = queue.scheduled_job_registry.get_job_ids()
    due = queue.scheduled_job_registry.get_scheduled_time(queue.fetch_job(scheduled))
    assert due > timezone.now() + dt.timedelta(seconds=lifecycle.MEMBER_RETRY.backoff / 2)
