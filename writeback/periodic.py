"""Every periodic job of the portal in one list: what each worker arms when it starts and checks while it runs
(writeback.worker), and what /healthz reports missing (portal.health).

Each is a self-renewing chain (writeback.jobs.chain) whose only state is in Redis: a Redis restarted without its data
(the demo runs one without persistence) loses every chain at once. Arming is idempotent (``Chain.ensure`` under the
chain's lock), so any number of workers may arm them as often as they like and there is still one tick per chain.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.utils import timezone

from writeback.inventory_schedule import CHAIN as INVENTORY_CHAIN
from writeback.inventory_schedule import tick_seconds as inventory_seconds
from writeback.jobs.accepted_domains import CHAIN as ACCEPTED_DOMAINS_CHAIN
from writeback.jobs.accepted_domains import interval_seconds as accepted_domains_seconds
from writeback.jobs.audit import CHAIN as AUDIT_HEAD_CHAIN
from writeback.jobs.audit import interval_seconds as audit_head_seconds
from writeback.jobs.chain import Chain
from writeback.jobs.drift import CHAIN as DRIFT_CHAIN
from writeback.jobs.drift import interval_seconds as drift_seconds
from writeback.jobs.readiness import CHAIN as READINESS_CHAIN
from writeback.jobs.readiness import interval_seconds as readiness_seconds
from writeback.wave_schedule import CHAIN as SWEEP_CHAIN
from writeback.wave_schedule import sweep_seconds

logger = logging.getLogger(__name__)

# A scheduled tick this late has no scheduler moving it to its queue: no worker runs with --with-scheduler.
OVERDUE_AFTER = dt.timedelta(seconds=120)


@dataclass(frozen=True)
class Periodic:
    """One periodic job: its chain, how often it ticks (None: switched off) and the command that arms it by hand."""

    chain: Chain
    seconds: Callable[[], int | None]
    command: str

    @property
    def name(self) -> str:
        return self.chain.name


PERIODIC: tuple[Periodic, ...] = (
    Periodic(SWEEP_CHAIN, sweep_seconds, "wave_sweep_schedule"),
    Periodic(INVENTORY_CHAIN, inventory_seconds, "inventory_schedule"),
    Periodic(ACCEPTED_DOMAINS_CHAIN, accepted_domains_seconds, "accepted_domains_schedule"),
    Periodic(DRIFT_CHAIN, drift_seconds, "drift_scan_schedule"),
    Periodic(AUDIT_HEAD_CHAIN, audit_head_seconds, "audit_head_schedule"),
    Periodic(READINESS_CHAIN, readiness_seconds, "readiness_snapshot_schedule"),
)


def periodic_arm() -> list[str]:
    """Make sure every periodic job that is switched on has its next tick in Redis. Returns the names of those whose
    tick was missing and has just been scheduled (none, normally)."""
    armed = []
    for periodic in PERIODIC:
        _job, created = periodic.chain.ensure(periodic.seconds())
        if created:
            armed.append(periodic.name)
    return armed


def periodic_problems(now: dt.datetime | None = None) -> list[str]:
    """What is wrong with the periodic jobs, one line each (empty: all is well): a job switched on with no tick in
    Redis (missing), or whose scheduled tick is long overdue (no worker runs the scheduler)."""
    now = now or timezone.now()
    problems = []
    for periodic in PERIODIC:
        if periodic.seconds() is None:
            continue
        job = periodic.chain.pending()
        if job is None:
            problems.append(f"missing schedule: {periodic.name} (a worker re-arms it; or run manage.py "
                            f"{periodic.command})")  # fmt: skip
            continue
        due = periodic.chain.due_at(job)
        if due is not None and due < now - OVERDUE_AFTER:
            problems.append(f"stalled: {periodic.name} was due at {due:%H:%M:%S} UTC and has not run "
                            "(no worker runs with --with-scheduler?)")  # fmt: skip
    return problems
