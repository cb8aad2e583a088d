"""Queueing background jobs by the dotted name of the function a worker runs.

``soa`` sits below ``writeback`` (docs/architecture.md, the import-linter contracts in pyproject.toml), so a
service cannot import the job it queues; rq accepts the function's dotted path instead and the worker imports
it. Services call these from ``transaction.on_commit``, so a worker never looks for a row that is not
committed yet. ``writeback`` queues its own follow-up batches through the same functions, so a batch carries
the same timeout whoever queued it.

When Redis cannot be reached, ``enqueue`` logs it and returns None instead of raising: the change that asked for the
job is committed by then (an on-commit callback that raised would turn a saved, audited start into a 500, and a
worker queueing its next batch would crash). The row in the database still says the work waits, and the periodic
sweep (writeback.jobs.sweep) queues it again once Redis answers.

A renamed job function must be renamed here too, and keep its old name importable for a release (a queued or
scheduled job in Redis still names it); tests/soa/test_jobs.py checks each name, old and new, resolves.
"""

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from soa.choices import BatchState
from soa.models import ChangeBatchLine, PilotWave

logger = logging.getLogger(__name__)

QUEUE = "default"  # docs/configuration.md: imports and waves on "default", AD writes on "writeback"
WAVE_RUN_JOB = "writeback.jobs.waves.wave_run_job"
INVENTORY_RUN_JOB = "writeback.jobs.inventory.inventory_run_job"
# A helper of a full import spread over workers: it imports parts of the directory (writeback.inventory_shards).
INVENTORY_SHARD_JOB = "writeback.jobs.inventory.inventory_shard_job"
# Applies one ready change request to the side holding the mailbox's authority (Exchange Online then AD, or AD only).
CHANGE_APPLY_JOB = "writeback.jobs.changes.change_request_apply_job"
# One mailbox's write into AD (writeback.tasks.writeback_task_request queues it), on the AD queue.
WRITEBACK_TASK_JOB = "writeback.jobs.writeback.writeback_task_job"
WRITEBACK_QUEUE = "writeback"
# One step of a bulk edit: creates the change requests of the lines whose turn has come (soa.services.change_batches).
CHANGE_BATCH_JOB = "writeback.jobs.change_batches.change_batch_job"
# Switches on the tenant default once two approvers have confirmed it (soa.services.tenant_default).
TENANT_DEFAULT_JOB = "writeback.jobs.tenant_default.tenant_default_job"
# What an unreachable Redis raises (BusyLoadingError, a Redis still loading its data, is a ConnectionError).
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
# Names jobs had before writeback.jobs; still importable for one release, for jobs queued under them.
MOVED_JOBS = {
    "writeback.wave_jobs.wave_run_job": WAVE_RUN_JOB,
    "writeback.wave_jobs.wave_sweep_job": "writeback.jobs.waves.wave_sweep_job",
    "writeback.inventory.inventory_run_job": INVENTORY_RUN_JOB,
}
# An import may take hours on a large tenant; the sweep, not this timeout, is what notices a dead one.
INVENTORY_JOB_TIMEOUT = 6 * 3600
# Head room added to a batch's job timeout beyond batch_size / max_rate.
JOB_TIMEOUT_MARGIN = 600


def enqueue(
    func: str, *args, queue: str = QUEUE, at: dt.datetime | None = None, job_timeout: int | None = None
) -> str | None:
    """Queue ``func`` (a dotted name) with ``args``, or schedule it for ``at`` when that is still ahead.
    Returns the RQ job id, or None when Redis could not be reached (logged; the sweep queues the work again). A
    scheduled job is moved to the queue when due by a worker started with ``--with-scheduler``."""
    import django_rq

    try:
        rq_queue = django_rq.get_queue(queue)
        if at is not None and at > timezone.now():
            return rq_queue.enqueue_at(at, func, *args, job_timeout=job_timeout).id
        return rq_queue.enqueue(func, *args, job_timeout=job_timeout).id
    except REDIS_UNREACHABLE as error:
        # Never raised to the caller: what asked for the job is committed, and its row says the work waits.
        logger.error("Could not queue %s%s on %r: Redis is unreachable (%s); the sweep queues it again.",
                     func, args, queue, error)  # fmt: skip
        return None


def job_pending(job_id: str, *, queue: str = QUEUE) -> bool:
    """Whether the RQ job ``job_id`` is still on its way: queued, scheduled, deferred or running. False when Redis no
    longer has it (emptied by a restart) or it ended without its row moving (the sweep then queues the row again)."""
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    if not job_id:
        return False
    try:
        status = Job.fetch(job_id, connection=django_rq.get_queue(queue).connection).get_status()
    except NoSuchJobError:
        return False
    return status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.STARTED)


def wave_enqueue(*, wave_id: int, at: dt.datetime | None = None) -> str | None:
    """Queue one batch of the wave (call after commit), or schedule it for ``at``. Returns the RQ job id, or
    None when the wave is gone. The job may run for the whole batch at the wave's rate, plus a margin."""
    wave = PilotWave.objects.filter(pk=wave_id).only("batch_size", "max_rate").first()
    if wave is None:
        return None
    timeout = int(wave.batch_size / wave.max_rate) + JOB_TIMEOUT_MARGIN
    return enqueue(WAVE_RUN_JOB, wave_id, at=at, job_timeout=timeout)


def change_request_enqueue(*, request_id: int) -> str | None:
    """Queue the apply job of a ready change request (call after commit). Returns the RQ job id, or None while
    CHANGE_APPLY_ENABLED is off: the request then stays ready to apply, and nothing is lost."""
    if not settings.CHANGE_APPLY_ENABLED:
        return None
    return enqueue(CHANGE_APPLY_JOB, request_id)


def change_batch_enqueue(*, batch_id: int) -> str | None:
    """Queue the next step of a bulk edit (call after commit). A step is short (BULK_CHANGE_STEP lines at
    BULK_CHANGE_RATE), so the apply jobs of the requests it made run between two steps."""
    timeout = int(settings.BULK_CHANGE_STEP / max(settings.BULK_CHANGE_RATE, 0.01)) + JOB_TIMEOUT_MARGIN
    return enqueue(CHANGE_BATCH_JOB, batch_id, job_timeout=timeout)


def change_batch_poke(*, request_id: int) -> None:
    """A change request ended: when a running bulk edit made it, queue that batch's next step after commit (the
    mailbox's next line may go now, or the batch is done). Call inside the transaction that ended the request."""
    batch_id = (
        ChangeBatchLine.objects.filter(request_id=request_id, batch__state=BatchState.RUNNING)
        .values_list("batch_id", flat=True)
        .first()
    )
    if batch_id is not None:
        transaction.on_commit(lambda: change_batch_enqueue(batch_id=batch_id))
