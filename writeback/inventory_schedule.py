"""Scheduled inventory imports: a full reconciliation every INVENTORY_FULL_INTERVAL_DAYS (the only run that finds
objects deleted on either side) and an incremental import every INVENTORY_INCREMENTAL_INTERVAL_MINUTES.

One self-renewing RQ chain, as the wave sweep has (``writeback.wave_schedule`` explains the choice): one pending
job in the ``default`` queue's scheduled jobs, named by the Redis key ``NEXT_KEY``; only that job schedules its
successor, under a lock, before it does anything else, so a failure or a dead worker does not end the schedule.
Each tick decides what is due: a full import when the last completed full import is older than the full interval
(or there is none), else an incremental one when those are on. A tick that finds an import queued or running
requests nothing and waits for the next tick: scheduled imports never fail on, or pile up behind, a running one.
Every scheduled request is audited (``writeback.inventory.scheduled``, actor None: the system) next to the request
itself (``writeback.inventory.requested``).

``manage.py inventory_schedule`` (run before the workers start, like ``wave_sweep_schedule``) starts the chain when
none is pending. With both intervals 0 the chain schedules nothing and ends.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rq.job import Job, JobStatus
from rq.queue import Queue

from portal.audit import audit_record
from writeback.inventory import InventoryError, inventory_run_request
from writeback.models import InventoryRun

logger = logging.getLogger(__name__)

QUEUE = "default"
NEXT_KEY = "soa:inventory-schedule:next"
LOCK_KEY = "soa:inventory-schedule:lock"
JOB_ID_PREFIX = "inventory-schedule-"
JOB_TIMEOUT = 300  # a tick only queues an import; the import runs as its own job
RESULT_TTL = 86400
# With incremental imports off, a tick still comes hourly to see whether the full reconciliation is due.
FULL_ONLY_TICK = 3600
PENDING_STATES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED})


def _queue() -> Queue:
    import django_rq

    return django_rq.get_queue(QUEUE)


def tick_seconds() -> int | None:
    """Seconds between ticks; None when neither full nor incremental imports are scheduled."""
    full_days = int(settings.INVENTORY_FULL_INTERVAL_DAYS)
    minutes = int(settings.INVENTORY_INCREMENTAL_INTERVAL_MINUTES)
    if full_days < 0 or minutes < 0:
        raise ValueError("INVENTORY_FULL_INTERVAL_DAYS and INVENTORY_INCREMENTAL_INTERVAL_MINUTES cannot be negative.")
    if minutes > 0:
        return minutes * 60
    return FULL_ONLY_TICK if full_days > 0 else None


def due(now: dt.datetime | None = None) -> tuple[str | None, str]:
    """The import mode due now (None: nothing) and why, in words for the audit log."""
    now = now or timezone.now()
    full_days = int(settings.INVENTORY_FULL_INTERVAL_DAYS)
    minutes = int(settings.INVENTORY_INCREMENTAL_INTERVAL_MINUTES)
    done = InventoryRun.objects.filter(state=InventoryRun.State.DONE)
    last_full = done.filter(mode=InventoryRun.Mode.FULL).order_by("-finished_at").first()
    if full_days > 0:
        if last_full is None:
            return InventoryRun.Mode.FULL, "no full import has completed yet"
        if last_full.finished_at <= now - dt.timedelta(days=full_days):
            return InventoryRun.Mode.FULL, (
                f"the last full import (#{last_full.pk}) finished {last_full.finished_at:%Y-%m-%d %H:%M} UTC, more "
                f"than INVENTORY_FULL_INTERVAL_DAYS={full_days} days ago"
            )
    if minutes > 0:
        if not done.exists():
            return InventoryRun.Mode.FULL, "no import has completed yet, and an incremental one needs one"
        return InventoryRun.Mode.INCREMENTAL, f"INVENTORY_INCREMENTAL_INTERVAL_MINUTES={minutes}"
    return None, "nothing is due"


def inventory_scheduled_request() -> tuple[InventoryRun | None, str]:
    """Queue the import that is due, audited as scheduled; (None, why not) when nothing is due or one is open."""
    mode, why = due()
    if mode is None:
        return None, why
    try:
        with transaction.atomic():
            run = inventory_run_request(actor=None, mode=mode)
            audit_record(actor=None, action="writeback.inventory.scheduled", obj=run, after={"mode": mode}, reason=why)
    except (InventoryError, IntegrityError) as exc:
        # Another import is queued or running (IntegrityError: one was requested at the same instant): this tick
        # leaves it alone, and the next tick sees what is due then.
        logger.info("Scheduled %s inventory import not requested: %s", mode, exc)
        return None, f"skipped: {exc}"
    logger.info("Scheduled %s inventory import #%s requested: %s.", mode, run.pk, why)
    return run, why


# -- the chain ------------------------------------------------------------------------------------------------------


def _next_id(queue: Queue) -> str | None:
    value = queue.connection.get(NEXT_KEY)
    return value.decode() if isinstance(value, bytes) else value


def pending_tick(queue: Queue | None = None) -> Job | None:
    """The chain's next tick when it is scheduled or queued; None when the chain is not running."""
    queue = queue or _queue()
    job_id = _next_id(queue)
    job = queue.fetch_job(job_id) if job_id else None
    if job is None or job.get_status() not in PENDING_STATES:
        return None
    return job


def tick_due_at(job: Job) -> dt.datetime | None:
    """When a scheduled tick is due (UTC); None when it is already queued."""
    from rq.exceptions import NoSuchJobError

    try:
        return _queue().scheduled_job_registry.get_scheduled_time(job)
    except NoSuchJobError:
        return None


def _schedule_next(queue: Queue, seconds: int) -> Job:
    """Create the next tick and point NEXT_KEY at it in one Redis transaction. The caller holds LOCK_KEY."""
    job = queue.create_job(
        inventory_periodic_job,
        job_id=f"{JOB_ID_PREFIX}{uuid.uuid4().hex[:12]}",
        description=f"Scheduled inventory import (every {seconds} s)",
        timeout=JOB_TIMEOUT,
        result_ttl=RESULT_TTL,
        status=JobStatus.SCHEDULED,
    )
    with queue.connection.pipeline() as pipe:
        queue.schedule_job(job, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds), pipeline=pipe)
        pipe.set(NEXT_KEY, job.id)
        pipe.execute()
    return job


def inventory_schedule() -> tuple[Job | None, bool]:
    """Make sure the chain runs (safe to call any number of times). Returns the pending tick and whether this call
    created it; (None, False) when both intervals are 0."""
    queue = _queue()
    seconds = tick_seconds()
    if seconds is None:
        return None, False
    with queue.connection.lock(LOCK_KEY, timeout=30, blocking_timeout=30):
        job = pending_tick(queue)
        if job is not None:
            return job, False
        job = _schedule_next(queue, seconds)
    logger.info("Scheduled the inventory tick %s in %d s.", job.id, seconds)
    return job, True


def _continue_chain(job_id: str) -> Job | None:
    """Schedule the successor of tick ``job_id`` if it is the chain's current one; None for a stray tick or when
    scheduling was switched off."""
    queue = _queue()
    seconds = tick_seconds()
    with queue.connection.lock(LOCK_KEY, timeout=30, blocking_timeout=30):
        if _next_id(queue) != job_id:
            return None
        if seconds is None:
            queue.connection.delete(NEXT_KEY)
            return None
        return _schedule_next(queue, seconds)


def inventory_periodic_job() -> str:
    """RQ entrypoint (scheduled): schedule the next tick when this is the chain's, then request what is due.
    Returns what it did, which /jobs/ shows as the job's result."""
    from rq import get_current_job

    job = get_current_job()
    following = _continue_chain(job.id) if job is not None else None
    if job is not None and following is None:
        logger.info("Inventory tick %s schedules no successor (not the chain's, or scheduling is off).", job.id)
    run, why = inventory_scheduled_request()
    return f"queued {run.mode.lower()} import #{run.pk}: {why}" if run else why
