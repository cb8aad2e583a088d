"""The readiness snapshot: the tenant-wide decommission readiness figures (soa.readiness), measured in the background
so the page need not scan a million mailboxes per view, and kept one per day for the page's trend. The snapshot
also keeps its counts per group of mailboxes (OU, recipient type, authority), so an OU-scoped view sums its
subtree's groups rather than scanning.

One self-renewing chain (writeback.jobs.chain), a tick every READINESS_SNAPSHOT_INTERVAL_MINUTES (15; 0: off),
started by ``manage.py readiness_snapshot_schedule`` and armed by every worker (writeback.periodic). Each tick
replaces the day's snapshot, so the trend holds each day's last measurement and a restarted chain never leaves two
for one day.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone
from rq.job import Job

from soa.models import Mailbox, ReadinessSnapshot
from soa.readiness import group_counts, snapshot_take, summarise
from writeback.jobs.chain import Chain
from writeback.jobs.prerequisites import prerequisites_run
from writeback.selectors import readiness_writeback_groups

QUEUE = "default"


def interval_seconds() -> int | None:
    """Seconds between snapshots; None when READINESS_SNAPSHOT_INTERVAL_MINUTES is 0."""
    minutes = int(settings.READINESS_SNAPSHOT_INTERVAL_MINUTES)
    if minutes < 0:
        raise ValueError(f"READINESS_SNAPSHOT_INTERVAL_MINUTES cannot be negative (it is {minutes}).")
    return minutes * 60 or None


def readiness_snapshot_take(*, now: dt.datetime | None = None) -> ReadinessSnapshot:
    """Measure the whole tenant now and record it as today's snapshot."""
    now = now or timezone.now()
    groups = group_counts(
        Mailbox.objects.all(), now=now, quiet_period=dt.timedelta(hours=settings.WAVE_QUIET_PERIOD_HOURS)
    )
    # Each group keeps its own writeback counts, so an OU-scoped view sums them with the rest (soa.readiness).
    writeback = readiness_writeback_groups()
    totals = dict.fromkeys(("open_drift", "failed_writebacks"), 0)
    for group in groups:
        key = (group["ou_norm"], group["recipient_type_details"], group["authority"])
        for name in totals:
            group[name] = writeback.get(key, {}).get(name, 0)
            totals[name] += group[name]
    figures = summarise(groups, measured_at=now.isoformat(), writeback=totals)
    return snapshot_take(figures, day=now.date(), groups=groups)


def _take() -> str:
    snapshot = readiness_snapshot_take()
    checks = prerequisites_run()  # the page's prerequisites too (the canary's flip only when due)
    return (f"readiness snapshot of {snapshot.day}: {snapshot.cloud} of {snapshot.total} mailboxes cloud-managed; "
            f"prerequisites {checks}")  # fmt: skip


def readiness_snapshot_periodic_job() -> str:
    """RQ entrypoint (scheduled): schedule the next tick when this one is the chain's, then take the snapshot."""
    return CHAIN.tick(_take, interval_seconds)


def readiness_snapshot_schedule() -> tuple[Job | None, bool]:
    """Make sure the snapshot is scheduled (idempotent). Returns the pending tick and whether this call created it."""
    return CHAIN.ensure(interval_seconds())


CHAIN = Chain(
    name="Readiness snapshot",
    queue_name=QUEUE,
    next_key="soa:readiness-snapshot:next",
    lock_key="soa:readiness-snapshot:lock",
    job_id_prefix="readiness-snapshot-",
    func=readiness_snapshot_periodic_job,
    description="Readiness snapshot (every {seconds} s)",
    timeout=1800,
    result_ttl=86400,
)
