"""The portal's RQ worker (settings.RQ["WORKER_CLASS"], so ``manage.py rqworker`` runs it): rq's forking worker that
also keeps the periodic jobs alive and outlives a Redis outage.

- Periodic work comes back by itself: every start arms every periodic job (writeback.periodic), and every
  WORKER_WATCH_SECONDS (30) while it runs the worker checks them again, so a Redis that restarted empty, or was
  flushed under a running worker, gets its chains back within that time. The same check restarts rq's scheduler
  process when it died (rq itself only looks every ten minutes) and puts the worker back in Redis's list of workers
  after a flush.
- An outage is waited out, not fatal. rq 3.0 retries a lost connection only while it waits for a job: one lost while
  it watches a running job, or after the job, makes it log "unhandled exception, quitting" and exit. Here the job's
  heartbeats skip a Redis that does not answer (the job goes on; its rows in the database carry its state), and a
  worker loop that ended without being asked to stop waits until Redis answers and starts again. Work that could not
  be queued meanwhile is left waiting in the database and queued again by the sweep (soa.jobs.enqueue).

- A dead worker is found in seconds: every WAVE_WATCH_SECONDS (3), idle or watching its own job, the worker runs
  writeback.jobs.waves.wave_watch, which returns the wave members whose batch stopped beating (another worker died,
  or this one's horse was killed) and queues their waves. A worker that starts runs it at once, so a machine that
  restarts its one worker after a crash picks the wave up again by itself.

- Writeback jobs run in the worker's own process; every other job in a forked work horse, as rq does it. A writeback
  job is a batch of up to 200 AD writes that takes well under a second; a horse forked for each, with its own
  database connection and LDAP bind, made a lone edit wait 71 ms (p50) instead of 26 ms, and two workers wrote 519
  tasks/s instead of 559 (bench/bench_writeback.py, --worker-class fork against the default, on an idle 2-core
  machine). The worker keeps its directory, Exchange and database connections between those jobs; before
  forking a horse for any other job it closes its database connections (a horse must not share them; the directory and
  Exchange clients open their own in a forked process: writeback.jobs.clients). A database connection that broke in
  one job is replaced before the next. A crash of an in-process job ends the worker, as a killed horse ends its job:
  the task's heartbeat stops and the sweep gives it back (writeback.jobs.writeback.writeback_sweep).

A burst worker, or one given --max-jobs or --max-idle-time, ends as rq's does: those are meant to end.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections
from redis.exceptions import RedisError
from rq import worker_registration
from rq.exceptions import StopRequested
from rq.utils import now
from rq.worker import Worker as RqWorker
from rq.worker import WorkerStatus

from soa.jobs import REDIS_UNREACHABLE, WRITEBACK_QUEUE
from writeback.exchange import ExchangeOnlineError
from writeback.jobs.clients import directory_schema_read
from writeback.jobs.waves import wave_watch
from writeback.periodic import periodic_arm

# Queues whose jobs run in the worker's process instead of a forked work horse.
IN_PROCESS_QUEUES = frozenset({WRITEBACK_QUEUE})
# Waiting for Redis to come back: the first wait, and the longest.
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 30.0


def _watch_seconds() -> int:
    """How often a running worker checks the periodic jobs (and how long it blocks waiting for a job between checks)."""
    return int(settings.WORKER_WATCH_SECONDS)


def _wave_watch_seconds() -> float:
    """How often a worker looks for wave members whose worker died."""
    return float(settings.WAVE_WATCH_SECONDS)


class Worker(RqWorker):
    """rq's Worker, which arms the periodic jobs and survives Redis going away (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._watched_at: float | None = None
        self._waves_watched_at: float | None = None
        super().__init__(*args, **kwargs)
        # While its horse runs, the worker wakes this often (rq: every 30 s) to beat, and to watch the waves.
        self.job_monitoring_interval = max(1, min(self.job_monitoring_interval, int(_wave_watch_seconds())))

    # -- running a job: in this process, or in a forked work horse ------------------------------------------------

    def execute_job(self, job, queue) -> None:
        if queue.name not in IN_PROCESS_QUEUES:
            connections.close_all()  # the horse is forked from this process: it must not share its connections
            super().execute_job(job, queue)
            return
        # As rq's SimpleWorker runs a job; the job's timeout is kept by the same death penalty, in this process.
        execution = self.prepare_execution(job)
        _replace_broken_connections()
        self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        if job.origin in IN_PROCESS_QUEUES:
            # Nothing beats while the job runs in this process: the worker's key must outlive the job's timeout.
            return int(job.timeout or self.queue_class.DEFAULT_TIMEOUT) + 60
        return super().get_heartbeat_ttl(job, working_time)

    # -- the loop, started again after an outage ---------------------------------------------------------------------

    def work(self, burst: bool = False, **options: Any) -> bool:
        ends_by_itself = burst or options.get("max_jobs") is not None or options.get("max_idle_time") is not None
        worked = False
        while True:
            self._wait_for_redis()
            self._arm()
            self._watch_waves()
            directory_schema_read()  # once here, not once per work horse
            try:
                worked = super().work(burst=burst, **options) or worked
            except REDIS_UNREACHABLE as error:  # the teardown of a loop that lost Redis, mostly
                self.log.warning("Worker %s: lost Redis (%s).", self.name, error)
                self._drop_subscription()
            # An idle worker told to stop raises StopRequested without setting _stop_requested; both note the date.
            if ends_by_itself or self._stop_requested or self._shutdown_requested_date is not None:
                return worked
            self.log.warning("Worker %s: its loop ended without a stop request; it starts again once Redis answers.",
                             self.name)  # fmt: skip

    def _wait_for_redis(self) -> None:
        """Block until Redis answers, waiting longer each time (a SIGTERM or Ctrl-C meanwhile ends the process, as
        before a worker starts: no job is running)."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        wait = RECONNECT_FIRST
        while True:
            try:
                self.connection.ping()
                break
            except REDIS_UNREACHABLE as error:
                self.log.warning("Worker %s: Redis does not answer (%s); trying again in %.0f s.", self.name, error,
                                 wait)  # fmt: skip
                time.sleep(wait)
                wait = min(wait * 2, RECONNECT_MAX)
        if self.birth_date is not None:
            # A second start of this worker: its last loop could not record its end while Redis was away.
            self.register_death()

    def _drop_subscription(self) -> None:
        """Stop the command channel's thread of a loop whose teardown could not reach Redis; the next loop opens its
        own."""
        if self.pubsub_thread is not None:
            self.pubsub_thread.stop()
            self.pubsub_thread = None
        if self.pubsub is not None:
            with contextlib.suppress(RedisError):  # the connection is gone already: nothing to close
                self.pubsub.close()
            self.pubsub = None

    # -- staying alive while a job runs ---------------------------------------------------------------------------

    def maintain_heartbeats(self, job, execution) -> None:
        """rq's heartbeats while the work horse runs; a Redis that does not answer skips them instead of ending the
        worker (which would leave its horse running unwatched)."""
        try:
            super().maintain_heartbeats(job, execution)
        except REDIS_UNREACHABLE as error:
            self.log.warning("Worker %s: Redis does not answer (%s); job %s goes on.", self.name, error, job.id)
        if self._waves_due():
            self._watch_waves()

    # -- the periodic check ---------------------------------------------------------------------------------------

    @property
    def dequeue_timeout(self) -> int:
        # rq blocks for a job for worker_ttl - 15 s (405 s by default); the watches must come round more often.
        return max(1, min(super().dequeue_timeout, _watch_seconds(), int(_wave_watch_seconds())))

    def _watch_due(self) -> bool:
        return self._watched_at is None or time.monotonic() - self._watched_at >= _watch_seconds()

    def _waves_due(self) -> bool:
        return self._waves_watched_at is None or time.monotonic() - self._waves_watched_at >= _wave_watch_seconds()

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return super().should_run_maintenance_tasks or self._watch_due() or self._waves_due()

    def run_maintenance_tasks(self) -> None:
        if self._waves_due():
            self._watch_waves()
        # Not once a stop was asked for: rq has stopped the scheduler, and the watch would start it again.
        if self._watch_due() and not self._stop_requested and self._shutdown_requested_date is None:
            self._watch()
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()

    def _watch_waves(self) -> None:
        """Return (or settle) the wave members whose worker died (writeback.jobs.waves.wave_watch). A database or
        Exchange that does not answer is logged and met again at the next watch; the worker goes on."""
        self._waves_watched_at = time.monotonic()
        try:
            found = wave_watch()
        except (DatabaseError, ExchangeOnlineError, *REDIS_UNREACHABLE) as error:
            self.log.warning("Worker %s: the wave watch failed (%s); it runs again in %.0f s.", self.name, error,
                             _wave_watch_seconds())  # fmt: skip
            found = 0
        except StopRequested:
            raise  # SIGTERM arrived during the watch: the worker stops, as it would between jobs
        except Exception:
            # Runs in the worker's own loop, outside any job: an error raised from here would end the worker (every
            # worker, since each runs it), so it is logged with its traceback and the worker goes on with its jobs.
            self.log.exception("Worker %s: the wave watch failed unexpectedly.", self.name)
            found = 0
        finally:
            # The work horse is forked from this process: it must not inherit (and share) its database connection.
            connections.close_all()
        if found:
            self.log.warning("Worker %s: returned or settled %d wave member(s) whose worker had stopped.", self.name,
                             found)  # fmt: skip

    def _arm(self) -> None:
        armed = periodic_arm()
        self._watched_at = time.monotonic()
        if armed:
            self.log.warning("Worker %s: scheduled the missing periodic job(s) %s.", self.name, ", ".join(armed))

    def _watch(self) -> None:
        """The check every WORKER_WATCH_SECONDS: periodic jobs, the scheduler process, this worker's registration."""
        self._arm()
        if self.scheduler is not None and (self.scheduler._process is None or not self.scheduler._process.is_alive()):
            # As rq's own maintenance does, only sooner: take the scheduler's lock when free and start its process.
            self.scheduler.acquire_locks(auto_start=True)
        if not self.connection.sismember(self.redis_workers_keys, self.key):
            # Redis lost its data under this worker: put it back where the job dashboard and rq look for workers.
            self.last_heartbeat = now()
            with self.connection.pipeline() as pipeline:
                pipeline.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, pipeline)
                pipeline.expire(self.key, self.worker_ttl + 60)
                pipeline.execute()


def _replace_broken_connections() -> None:
    """Close each database connection that an earlier job left broken (the server restarted, the network dropped it),
    so the next query opens a new one instead of failing on the old. Django does this between requests; rq does not do
    it between jobs."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and connection.errors_occurred:
            if not connection.is_usable():
                connection.close()
            connection.errors_occurred = False
