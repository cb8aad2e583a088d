"""The periodic sweep: one pending sweep job in Redis at a time, each run scheduling the next.

The chain is writeback.jobs.chain's (which says why a self-renewing chain rather than rq's cron or ``Repeat``);
each tick runs writeback.jobs.sweep.sweep_job: wave members and inventory runs whose heartbeat stopped.

Exactly one chain: the Redis key ``NEXT_KEY`` names the one sweep the chain waits for. Only that job schedules
a successor (moving the key to it), under a lock; any other sweep job (a stray duplicate, or one run again from
the dashboard) sweeps once and ends. ``wave_sweep_schedule`` (``manage.py wave_sweep_schedule``, run before
the workers start) starts a chain when the key names no scheduled or queued job, and otherwise leaves it.
"""

import datetime as dt

from django.conf import settings
from rq.job import Job
from rq.queue import Queue

from writeback.jobs.chain import Chain
from writeback.jobs.sweep import sweep_job
from writeback.wave_jobs import QUEUE

NEXT_KEY = "soa:wave-sweep:next"  # id of the pending sweep job
LOCK_KEY = "soa:wave-sweep:lock"
JOB_ID_PREFIX = "wave-sweep-"
JOB_TIMEOUT = 600
RESULT_TTL = 3600  # the last hour's sweeps stay visible under Finished in /jobs/


def _interval() -> int:
    interval = int(settings.WAVE_SWEEP_INTERVAL)
    if interval < 1:
        raise ValueError(f"WAVE_SWEEP_INTERVAL must be at least 1 second (it is {settings.WAVE_SWEEP_INTERVAL}).")
    return interval


def sweep_seconds() -> int:
    """Seconds between sweeps (WAVE_SWEEP_INTERVAL); the sweep cannot be switched off."""
    return _interval()


def pending_sweep(queue: Queue | None = None) -> Job | None:
    """The chain's next sweep, when it is scheduled or queued; None when the chain is broken or not started."""
    return CHAIN.pending(queue)


def sweep_due_at(job: Job) -> dt.datetime | None:
    """When a scheduled sweep is due (UTC); None when it is already queued or not scheduled."""
    return CHAIN.due_at(job)


def wave_sweep_schedule() -> tuple[Job, bool]:
    """Make sure the periodic sweep is scheduled (safe to run any number of times, from any number of hosts).

    Returns the pending sweep job and whether this call created it. A running sweep has already scheduled its
    successor; one that has not (its worker died before) is replaced, and stops the chain if it runs later.
    """
    return CHAIN.ensure(_interval())


def wave_sweep_periodic_job() -> int:
    """RQ entrypoint (scheduled): schedule the next sweep when this one is the chain's, then sweep (wave members
    and inventory runs whose heartbeat stopped). Returns how many members the sweep returned to PENDING."""
    return CHAIN.tick(sweep_job, _interval)


CHAIN = Chain(
    name="Sweep",
    queue_name=QUEUE,
    next_key=NEXT_KEY,
    lock_key=LOCK_KEY,
    job_id_prefix=JOB_ID_PREFIX,
    func=wave_sweep_periodic_job,
    description="Wave sweep (every {seconds} s)",
    timeout=JOB_TIMEOUT,
    result_ttl=RESULT_TTL,
)
