"""What the fault tests share (no tests here): a tenant whose directory can be stopped and started again on the same
port and data, and a clock that lets the retry delays the product schedules pass without waiting for them.

The clock is why a 60 s outage costs seconds: every retry the product makes is a job scheduled in Redis (a writeback
task's, a help-desk edit's) or a batch scheduled for a wave member's ``not_before``. ``VirtualClock.run`` runs the real
worker until nothing is due, then moves every scheduled job and every ``not_before``/``retry_at`` earlier by the time
to the next one (as if that time had passed), counting the time skipped. A fault ends when that count reaches its
length, so the product meets the outage with its production delays and attempt limits, retry for retry, as it would
in real time: what is skipped is only the idle waiting in between.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import django_rq
from django.db import close_old_connections
from django.db.models import F
from django.utils import timezone
from rq import SimpleWorker

from sandbox.directory import SandboxDirectory
from sandbox.exchange_online import ExchangeOnlineEmulator
from sandbox.seed import seed_tenant
from soa import jobs
from soa.choices import MemberState
from soa.models import ChangeRequest, WaveMember
from tests.exchange_fixtures import portal_points_at
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.jobs.sweep import sweep_job
from writeback.models import InventoryRun, WritebackTask

QUEUES = (jobs.QUEUE, jobs.WRITEBACK_QUEUE)


@dataclass
class Tenant:
    """A seeded directory and emulator of a test module's own; the directory's database survives ``stop_directory``,
    and ``start_directory`` brings it back on the same port, as a domain controller coming back after a restart."""

    workdir: Path
    users: int
    seed: int
    directory: SandboxDirectory = field(init=False)
    exchange: ExchangeOnlineEmulator = field(init=False)

    def __post_init__(self) -> None:
        self.directory = SandboxDirectory.start(users=self.users, seed=self.seed, workdir=self.workdir, keep=True)
        self.exchange = ExchangeOnlineEmulator.start(directory=self.directory)
        seed_tenant(self.directory, self.exchange, seed=self.seed)

    def stop_directory(self) -> None:
        self.directory.stop()

    def start_directory(self) -> None:
        port = self.directory.port
        self.directory = SandboxDirectory.start(
            users=self.users, seed=self.seed, workdir=self.workdir, keep=True, port=port
        )
        assert self.directory.reopened  # the same data, not a new directory

    @property
    def directory_running(self) -> bool:
        return self.directory.is_running()

    def close(self) -> None:
        self.exchange.stop()
        self.directory.stop()


@contextmanager
def tenant_for(workdir: Path, *, users: int, seed: int) -> Iterator[Tenant]:
    """A Tenant, with the portal's settings pointing at it until the block ends."""
    tenant = Tenant(workdir, users, seed)
    try:
        with portal_points_at(tenant.directory, tenant.exchange):
            yield tenant
    finally:
        tenant.close()


def cloud_managed(exchange, count: int) -> None:
    """Make the first ``count`` synced mailboxes (by alias) cloud-managed in the emulator, as a tenant part-way
    through its waves."""
    synced = sorted((m for m in exchange.mailboxes() if m.get("IsDirSynced")), key=lambda m: m["Alias"])
    for mailbox in synced[:count]:
        exchange.update_mailbox(mailbox["ExternalDirectoryObjectId"], IsExchangeCloudManaged=True)


def import_inventory() -> None:
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE


def empty_queues() -> None:
    for name in QUEUES:
        queue = django_rq.get_queue(name)
        queue.empty()
        for registry in (queue.failed_job_registry, queue.scheduled_job_registry):
            for job_id in registry.get_job_ids():
                registry.remove(job_id, delete_job=True)


def _error_of(job) -> str:
    result = job.latest_result() if job is not None else None
    return result.exc_string if result is not None else f"{job}: no result recorded"


class JobWorker(SimpleWorker):
    """RQ's in-process worker, each job starting and ending on a connection of its own as in production, where each
    job runs in a work horse forked after django-rq closed the parent's connections: a job that lost its database
    connection does not hand the dead one to the next job (nor to the test)."""

    def execute_job(self, job, queue):
        close_old_connections()
        try:
            return super().execute_job(job, queue)
        finally:
            close_old_connections()


def work(*, max_jobs: int | None = None, failures: list[str] | None = None) -> None:
    """The real worker (in-process, both queues, its scheduler on) until nothing is due. No job may fail, unless
    ``failures`` is given: each failed job's error is then added to it and taken out of RQ's failed registry."""
    queues = [django_rq.get_queue(name) for name in QUEUES]
    JobWorker(queues, connection=queues[0].connection).work(burst=True, with_scheduler=True, max_jobs=max_jobs)
    for queue in queues:
        failed = queue.failed_job_registry
        errors = [_error_of(queue.fetch_job(job_id)) for job_id in failed.get_job_ids()]
        if failures is None:
            assert not errors, errors
            continue
        failures += errors
        for job_id in failed.get_job_ids():
            failed.remove(job_id, delete_job=True)


@dataclass
class Event:
    """Something that happens at ``at`` seconds of the clock (a fault ending, say)."""

    at: float
    action: Callable[[], object]
    done: bool = False


class VirtualClock:
    """Real time plus the waiting it skipped. See the module docstring."""

    def __init__(self, *, failures: list[str] | None = None, sweep_every: float | None = None) -> None:
        self._started = time.monotonic()
        self.skipped = 0.0
        self.rounds = 0
        self.failures = failures  # None: a failed job fails the test; a list: failed jobs' errors are kept here
        # The periodic sweep (writeback.jobs.sweep), every this many seconds of the clock as WAVE_SWEEP_INTERVAL has
        # it in production; None: no sweep (nothing a dead worker left is returned).
        self.sweep_every = sweep_every
        self._next_sweep = sweep_every

    def now(self) -> float:
        return time.monotonic() - self._started + self.skipped

    def _next_due(self) -> dt.datetime | None:
        times = []
        for name in QUEUES:
            registry = django_rq.get_queue(name).scheduled_job_registry
            times += [registry.get_scheduled_time(job_id) for job_id in registry.get_job_ids()]
        return min(times, default=None)

    def _skip(self, seconds: float) -> None:
        """Move every scheduled job and every retry time ``seconds`` earlier, as if that much time had passed."""
        delta = dt.timedelta(seconds=seconds)
        for name in QUEUES:
            queue = django_rq.get_queue(name)
            registry = queue.scheduled_job_registry
            for job_id in registry.get_job_ids():
                job = queue.fetch_job(job_id)
                if job is not None:
                    registry.schedule(job, registry.get_scheduled_time(job_id) - delta)
        WaveMember.objects.filter(state=MemberState.PENDING, not_before__isnull=False).update(
            not_before=F("not_before") - delta
        )
        WritebackTask.objects.filter(retry_at__isnull=False).update(retry_at=F("retry_at") - delta)
        # The heartbeats of work in flight age as well, so the sweep finds what a dead worker left.
        WaveMember.objects.filter(state=MemberState.RUNNING).update(started_at=F("started_at") - delta)
        WritebackTask.objects.filter(state=WritebackTask.State.RUNNING).update(
            heartbeat_at=F("heartbeat_at") - delta, started_at=F("started_at") - delta
        )
        ChangeRequest.objects.filter(heartbeat_at__isnull=False).update(heartbeat_at=F("heartbeat_at") - delta)
        self.skipped += seconds

    def run(self, done: Callable[[], bool], *, events: list[Event] = (), limit: float = 3600.0) -> None:
        """Work until ``done()``, firing each event when the clock reaches it, skipping idle waits; fails when nothing
        is due or scheduled before ``done()`` holds (the work is stuck), or after ``limit`` seconds of the clock."""
        events = sorted(events, key=lambda event: event.at)
        while True:
            if self._next_sweep is not None and self.now() >= self._next_sweep:
                sweep_job()
                self._next_sweep += self.sweep_every
            for event in events:
                if not event.done and self.now() >= event.at:
                    event.action()
                    event.done = True
            work(failures=self.failures)
            self.rounds += 1
            if done():
                return
            assert self.now() < limit, f"not done after {limit:.0f} s of the clock"
            due = self._next_due()
            pending_event = next((event for event in events if not event.done), None)
            waits = []
            if due is not None:
                waits.append(max(0.0, (due - timezone.now()).total_seconds() + 1.0))  # rq keeps whole seconds
            if pending_event is not None:
                waits.append(max(0.0, pending_event.at - self.now()))
            if self._next_sweep is not None:
                waits.append(max(0.0, self._next_sweep - self.now()))
            assert waits, "nothing is due or scheduled, and the work is not done: it is stuck"
            self._skip(min(waits))
