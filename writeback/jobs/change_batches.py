"""A bulk edit's job: one step creates the change requests of the lines whose turn has come, on the one lifecycle.

``change_batch_job(batch_id)`` claims the batch (soa.services.change_batches: QUEUED -> RUNNING, or a running one as
it is), creates up to BULK_CHANGE_STEP requests at BULK_CHANGE_RATE per second, outside any transaction, each line
in its own (through ``change_request_create``), and checks before each line that the batch is still running, so a
pause or a cancel stops it at the next line. The step ends: DONE when every line has ended; the next step queued at
once when lines are ready now; otherwise the batch waits for one of its requests to end, which queues the next step
(soa.jobs.change_batch_poke). An unexpected error pauses the batch with its message, for its owner to resume.
A step lost to a dead worker, or never queued, the sweep (``change_batch_sweep``) queues again: a running batch with
a line whose turn has come and no step for STALE_AFTER.
Steps are safe to run twice or side by side: a line is locked while its request is made, and its submission key
(``batch-<id>-line-<n>``) makes one request however often it is sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.conf import settings
from django.utils import timezone

from soa.services.change_batches import (
    batch_pace,
    change_batch_claim,
    change_batch_line_create,
    change_batch_next_lines,
    change_batch_restart,
    change_batch_running,
    change_batch_step_done,
    change_batch_step_failed,
    change_batches_stalled,
)
from writeback.jobs.lifecycle import RunAbandoned, Work, perform

logger = logging.getLogger(__name__)

# Every line a step makes is its heartbeat (one change_request_create, at BULK_CHANGE_RATE); a running batch with a
# line whose turn has come and no heartbeat for this long has lost its step.
STALE_AFTER = dt.timedelta(minutes=5)


def _run(batch_id: int) -> bool:
    """Create the requests of the ready lines; True when the step stopped at its limit with more ready."""
    limit = settings.BULK_CHANGE_STEP
    ready = change_batch_next_lines(batch_id=batch_id, limit=limit)
    pace = batch_pace().total_seconds()
    next_at = time.monotonic()
    for line_id in ready:
        if not change_batch_running(batch_id=batch_id):
            raise RunAbandoned(f"bulk edit #{batch_id} is no longer running (paused or cancelled)")
        wait = next_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        change_batch_line_create(line_id=line_id)
        next_at = max(next_at, time.monotonic() - pace) + pace
    return len(ready) >= limit


BATCH = Work(
    name="Bulk edit",
    claim=lambda batch_id: change_batch_claim(batch_id=batch_id),
    run=_run,
    finish=lambda batch_id, more: change_batch_step_done(batch_id=batch_id, more=more),
    fail=lambda batch_id, error: change_batch_step_failed(batch_id=batch_id, error=error),
)


def change_batch_job(batch_id: int, correlation: str | None = None) -> None:
    """RQ entrypoint (soa.jobs.CHANGE_BATCH_JOB): one step of bulk edit ``batch_id``. Safe to run twice."""
    perform(BATCH, batch_id, correlation=correlation or f"batch-{batch_id}")


def change_batch_sweep(older_than_seconds: float | None = None) -> list[int]:
    """Queue the next step of running batches whose step was lost (a worker died mid-step, or the step was never
    queued): a line's turn has come and no step for STALE_AFTER. Each restart is audited as ``soa.batch.restarted``.
    Returns the ids of the batches restarted."""
    limit = dt.timedelta(seconds=older_than_seconds) if older_than_seconds is not None else STALE_AFTER
    before = timezone.now() - limit
    restarted = [pk for pk in change_batches_stalled(before=before) if change_batch_restart(batch_id=pk, before=before)]
    if restarted:
        logger.warning("Batch sweep queued the next step of stalled bulk edit(s) %s.", restarted)
    return restarted
