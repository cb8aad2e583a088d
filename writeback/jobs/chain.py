"""A periodic job as one self-renewing RQ chain: what the wave sweep and the inventory schedule share.

RQ 3 offers three ways to run a job periodically; the chain uses the one that needs no extra process:

- rq's cron (``manage.py rqcron``) is one more long-running process whose schedule lives in its memory; two
  of them would each enqueue the job.
- ``Repeat`` re-schedules the same job after each success, but stops for good after a failure, after a worker
  died mid-job, and after a fixed number of runs.
- ``enqueue_in``-style scheduling (used here) stores a delayed job in the queue's ScheduledJobRegistry in Redis;
  any worker started with ``--with-scheduler`` moves it to the queue when it is due. It survives worker restarts,
  and a worker that dies mid-job loses nothing: each tick schedules its successor before it does its work.

Exactly one chain: a Redis key names the one job the chain waits for. Only that job schedules a successor (moving
the key to it), under a lock; any other run of the job (a stray duplicate, or one requeued from the dashboard)
does its work once and ends. ``ensure`` (the ``manage.py`` command each chain has, run before the workers start)
starts a chain when the key names no scheduled or queued job, and otherwise leaves it. Each tick's work runs on the
job lifecycle (writeback.jobs.lifecycle): a failure is recorded as ``writeback.job.failed`` and raised for RQ.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rq.job import Job, JobStatus
from rq.queue import Queue

from writeback.jobs.lifecycle import Work, job_failed, perform

logger = logging.getLogger(__name__)

PENDING_STATES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED})


@dataclass(frozen=True)
class Chain:
    """One periodic job's chain: its queue, its Redis keys, the function each tick runs, and how ticks look."""

    name: str  # in logs and in the audit event of a failed tick
    queue_name: str
    next_key: str  # id of the pending tick
    lock_key: str
    job_id_prefix: str
    func: Callable[..., Any]  # the RQ entrypoint of a tick (its dotted name is what Redis keeps)
    description: str  # with {seconds}
    timeout: int
    result_ttl: int

    def queue(self) -> Queue:
        import django_rq

        return django_rq.get_queue(self.queue_name)

    def _next_id(self, queue: Queue) -> str | None:
        value = queue.connection.get(self.next_key)
        return value.decode() if isinstance(value, bytes) else value

    def pending(self, queue: Queue | None = None) -> Job | None:
        """The chain's next tick when it is scheduled or queued; None when the chain is broken or not started."""
        queue = queue or self.queue()
        job_id = self._next_id(queue)
        job = queue.fetch_job(job_id) if job_id else None
        if job is None or job.get_status() not in PENDING_STATES:
            return None
        return job

    def due_at(self, job: Job) -> dt.datetime | None:
        """When a scheduled tick is due (UTC); None when it is already queued or not scheduled."""
        from rq.exceptions import NoSuchJobError

        try:
            return self.queue().scheduled_job_registry.get_scheduled_time(job)
        except NoSuchJobError:
            return None

    def _schedule_next(self, queue: Queue, seconds: int) -> Job:
        """Create the next tick ``seconds`` from now and point the key at it, in one Redis transaction. The caller
        holds the lock."""
        job = queue.create_job(
            self.func,
            job_id=f"{self.job_id_prefix}{uuid.uuid4().hex[:12]}",
            description=self.description.format(seconds=seconds),
            timeout=self.timeout,
            result_ttl=self.result_ttl,
            status=JobStatus.SCHEDULED,
        )
        with queue.connection.pipeline() as pipe:
            queue.schedule_job(job, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds), pipeline=pipe)
            pipe.set(self.next_key, job.id)
            pipe.execute()
        return job

    def ensure(self, seconds: int | None) -> tuple[Job | None, bool]:
        """Make sure the chain runs, a tick every ``seconds`` (None: it is switched off); safe to call any number of
        times from any number of hosts. Returns the pending tick and whether this call created it."""
        if seconds is None:
            return None, False
        queue = self.queue()
        with queue.connection.lock(self.lock_key, timeout=30, blocking_timeout=30):
            job = self.pending(queue)
            if job is not None:
                return job, False
            job = self._schedule_next(queue, seconds)
        logger.info("Scheduled %s %s in %d s.", self.name, job.id, seconds)
        return job, True

    def follow(self, job_id: str, seconds: int | None) -> Job | None:
        """Schedule the successor of tick ``job_id`` if it is the chain's current one; None for a stray tick, or when
        the chain was switched off (``seconds`` None), which ends it."""
        queue = self.queue()
        with queue.connection.lock(self.lock_key, timeout=30, blocking_timeout=30):
            if self._next_id(queue) != job_id:
                return None
            if seconds is None:
                queue.connection.delete(self.next_key)
                return None
            return self._schedule_next(queue, seconds)

    def tick(self, body: Callable[[], Any], seconds: Callable[[], int | None]) -> Any:
        """Run one tick from inside its RQ job: schedule the successor first (so a failure or a dead worker does not
        end the chain), then ``body`` on the job lifecycle. Returns what ``body`` returned."""
        from rq import get_current_job

        job = get_current_job()
        job_id = job.id if job is not None else f"{self.job_id_prefix}inline"
        if job is not None and self.follow(job.id, seconds()) is None:
            logger.info("%s %s is not the chain's current tick (or the chain is off); it schedules nothing.",
                        self.name, job.id)  # fmt: skip
        work = Work(
            name=self.name,
            claim=lambda key: key,  # a tick has no row of its own to claim; the chain's key was its claim
            run=lambda _key: body(),
            finish=lambda _key, result: result,
            fail=lambda key, error: job_failed(name=self.name, job_id=key, error=error),
        )
        return perform(work, job_id, correlation=job_id)
