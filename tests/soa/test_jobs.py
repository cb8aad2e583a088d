"""Queueing by dotted name (soa.jobs): soa cannot import the jobs it queues, so the names are checked here."""

import datetime as dt

import django_rq
import pytest
from django.utils import timezone
from django.utils.module_loading import import_string

from soa import jobs
from tests.soa.test_wave_support import cast, new_wave
from writeback.jobs import changes, inventory, tenant_default, waves, writeback


def test_each_job_name_resolves_to_the_function_a_worker_runs():
    assert import_string(jobs.WAVE_RUN_JOB) is waves.wave_run_job
    assert import_string(jobs.INVENTORY_RUN_JOB) is inventory.inventory_run_job
    assert import_string(jobs.CHANGE_APPLY_JOB) is changes.change_request_apply_job
    assert import_string(jobs.WRITEBACK_TASK_JOB) is writeback.writeback_task_job
    assert import_string(jobs.TENANT_DEFAULT_JOB) is tenant_default.tenant_default_job


def test_the_names_jobs_had_before_the_move_still_resolve_to_the_same_functions():
    # Jobs queued or scheduled in Redis before the move name the old modules; a worker must still find them.
    for old, new in jobs.MOVED_JOBS.items():
        assert import_string(old) is import_string(new), old


@pytest.fixture
def queue():
    queue = django_rq.get_queue(jobs.QUEUE)
    queue.empty()
    for job_id in queue.scheduled_job_registry.get_job_ids():
        queue.scheduled_job_registry.remove(job_id, delete_job=True)
    yield queue
    queue.empty()


@pytest.mark.django_db(transaction=True)  # django_rq queues only after the commit when inside one
def test_a_batch_is_queued_by_name_with_time_for_the_whole_batch_at_the_waves_rate(make_user, queue):
    wave = new_wave(cast(make_user)["op"], batch_size=100, max_rate=0.5)
    job = queue.fetch_job(jobs.wave_enqueue(wave_id=wave.pk))
    assert job.func_name == jobs.WAVE_RUN_JOB and job.args == (wave.pk,)
    assert job.timeout == 100 / 0.5 + jobs.JOB_TIMEOUT_MARGIN


@pytest.mark.django_db(transaction=True)  # django_rq queues only after the commit when inside one
def test_a_batch_for_later_is_scheduled_and_one_for_the_past_is_queued_now(make_user, queue):
    wave = new_wave(cast(make_user)["op"])
    later = timezone.now() + dt.timedelta(minutes=5)
    scheduled = queue.fetch_job(jobs.wave_enqueue(wave_id=wave.pk, at=later))
    assert scheduled.id in queue.scheduled_job_registry.get_job_ids()
    assert abs(queue.scheduled_job_registry.get_scheduled_time(scheduled) - later) < dt.timedelta(seconds=1)
    now = jobs.wave_enqueue(wave_id=wave.pk, at=timezone.now() - dt.timedelta(seconds=1))
    assert now in queue.job_ids


@pytest.mark.django_db(transaction=True)  # django_rq queues only after the commit when inside one
def test_no_job_for_a_wave_that_is_gone(queue):
    assert jobs.wave_enqueue(wave_id=999_999) is None
    assert queue.count == 0
