"""Scheduled inventory imports: a full reconciliation every INVENTORY_FULL_INTERVAL_DAYS (the only run that finds
objects deleted on either side) and an incremental import every INVENTORY_INCREMENTAL_INTERVAL_MINUTES.

One self-renewing RQ chain, as the sweep has (``writeback.jobs.chain`` explains the choice): one pending job in the
``default`` queue's scheduled jobs, named by the Redis key ``NEXT_KEY``; only that job schedules its successor,
under a lock, before it does anything else, so a failure or a dead worker does not end the schedule.
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

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rq.job import Job
from rq.queue import Queue

from portal.audit import audit_record
from writeback.inventory import InventoryError, inventory_run_request
from writeback.jobs.chain import Chain
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


def pending_tick(queue: Queue | None = None) -> Job | None:
    """The chain's next tick when it is scheduled or queued; None when the chain is not running."""
    return CHAIN.pending(queue)


def tick_due_at(job: Job) -> dt.datetime | None:
    """When a scheduled tick is due (UTC); None when it is already queued."""
    return CHAIN.due_at(job)


def inventory_schedule() -> tuple[Job | None, bool]:
    """Make sure the chain runs (safe to call any number of times). Returns the pending tick and whether this call
    created it; (None, False) when both intervals are 0."""
    return CHAIN.ensure(tick_seconds())


def inventory_periodic_job() -> str:
    """RQ entrypoint (scheduled): schedule the next tick when this is the chain's, then request what is due.
    Returns what it did, which /jobs/ shows as the job's result."""
    return CHAIN.tick(_request_due, tick_seconds)


def _request_due() -> str:
    run, why = inventory_scheduled_request()
    return f"queued {run.mode.lower()} import #{run.pk}: {why}" if run else why


CHAIN = Chain(
    name="Inventory schedule",
    queue_name=QUEUE,
    next_key=NEXT_KEY,
    lock_key=LOCK_KEY,
    job_id_prefix=JOB_ID_PREFIX,
    func=inventory_periodic_job,
    description="Scheduled inventory import (every {seconds} s)",
    timeout=JOB_TIMEOUT,
    result_ttl=RESULT_TTL,
)
