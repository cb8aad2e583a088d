"""The periodic wave sweep: one pending sweep job in Redis at a time, each run scheduling the next.

RQ 3 offers three ways to run a job periodically; this module uses the one that needs no extra process:

- rq's cron (``manage.py rqcron``) is one more long-running process whose schedule lives in its memory; two
  of them would each enqueue the sweep.
- ``Repeat`` re-schedules the same job after each success, but stops for good after a failure, after a worker
  died mid-job, and after a fixed number of runs.
- ``enqueue_in`` (used here) stores a delayed job in the queue's ScheduledJobRegistry in Redis; any worker
  started with ``--with-scheduler`` moves it to the queue when it is due. It survives worker restarts, and a
  worker that dies mid-sweep loses nothing: each sweep schedules its successor before it sweeps.

Exactly one chain: the Redis key ``NEXT_KEY`` names the one sweep the chain waits for. Only that job schedules
a successor (moving the key to it), under a lock; any other sweep job (a stray duplicate, or one run again from
the dashboard) sweeps once and ends. ``wave_sweep_schedule`` (``manage.py wave_sweep_schedule``, run before
the workers start) starts a chain when the key names no scheduled or queued job, and otherwise leaves it.
"""

import datetime as dt
import logging
import uuid

from django.conf import settings
from rq.job import Job, JobStatus
from rq.queue import Queue

from writeback.wave_jobs import QUEUE, wave_sweep_job

logger = logging.getLogger(__name__)

NEXT_KEY = "soa:wave-sweep:next"  # id of the pending sweep job
LOCK_KEY = "soa:wave-sweep:lock"
JOB_ID_PREFIX = "wave-sweep-"
JOB_TIMEOUT = 600
RESULT_TTL = 3600  # the last hour's sweeps stay visible under Finished in /jobs/
PENDING_STATES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED})


def _queue() -> Queue:
    import django_rq

    return django_rq.get_queue(QUEUE)


def _interval() -> int:
    interval = int(settings.WAVE_SWEEP_INTERVAL)
    if interval < 1:
        raise ValueError(f"WAVE_SWEEP_INTERVAL must be at least 1 second (it is {settings.WAVE_SWEEP_INTERVAL}).")
    return interval


def _next_id(queue: Queue) -> str | None:
    value = queue.connection.get(NEXT_KEY)
    return value.decode() if isinstance(value, bytes) else value


def pending_sweep(queue: Queue | None = None) -> Job | None:
    """The chain's next sweep, when it is scheduled or queued; None when the chain is broken or not started."""
    queue = queue or _queue()
    job_id = _next_id(queue)
    job = queue.fetch_job(job_id) if job_id else None
    if job is None or job.get_status() not in PENDING_STATES:
        return None
    return job


def sweep_due_at(job: Job) -> dt.datetime | None:
    """When a scheduled sweep is due (UTC); None when it is already queued or not scheduled."""
    from rq.exceptions import NoSuchJobError

    try:
        return _queue().scheduled_job_registry.get_scheduled_time(job)
    except NoSuchJobError:
        return None


def _schedule_next(queue: Queue, interval: int) -> Job:
    """Create the next sweep ``interval`` seconds from now and point NEXT_KEY at it, in one Redis transaction.
    The caller holds LOCK_KEY."""
    job = queue.create_job(
        wave_sweep_periodic_job,
        job_id=f"{JOB_ID_PREFIX}{uuid.uuid4().hex[:12]}",
        description=f"Wave sweep (every {interval} s)",
        timeout=JOB_TIMEOUT,
        result_ttl=RESULT_TTL,
        status=JobStatus.SCHEDULED,
    )
    with queue.connection.pipeline() as pipe:
        queue.schedule_job(job, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=interval), pipeline=pipe)
        pipe.set(NEXT_KEY, job.id)
        pipe.execute()
    return job


def wave_sweep_schedule() -> tuple[Job, bool]:
    """Make sure the periodic sweep is scheduled (safe to run any number of times, from any number of hosts).

    Returns the pending sweep job and whether this call created it. A running sweep has already scheduled its
    successor; one that has not (its worker died before) is replaced, and stops the chain if it runs later.
    """
    queue = _queue()
    interval = _interval()
    with queue.connection.lock(LOCK_KEY, timeout=30, blocking_timeout=30):
        job = pending_sweep(queue)
        if job is not None:
            return job, False
        job = _schedule_next(queue, interval)
    logger.info("Scheduled the wave sweep %s in %d s.", job.id, interval)
    return job, True


def _continue_chain(job_id: str) -> Job | None:
    """Schedule the successor of sweep ``job_id`` if it is the chain's current one; None for a stray sweep."""
    queue = _queue()
    interval = _interval()
    with queue.connection.lock(LOCK_KEY, timeout=30, blocking_timeout=30):
        if _next_id(queue) != job_id:
            return None
        return _schedule_next(queue, interval)


def wave_sweep_periodic_job() -> int:
    """RQ entrypoint (scheduled): schedule the next sweep when this one is the chain's, then run wave_sweep_job.
    Returns how many members the sweep returned to PENDING."""
    from rq import get_current_job

    job = get_current_job()
    following = _continue_chain(job.id) if job is not None else None
    if job is not None and following is None:
        logger.info("Wave sweep %s is not the scheduled one; it sweeps once and schedules nothing.", job.id)
    return wave_sweep_job()
