"""The one lifecycle of every background job: claim, heartbeat while running, then finish or fail.

``perform(work, key)`` is the whole of it. A kind of work (``Work``) brings four steps: ``claim`` takes its rows in a
short transaction (None: nothing to do, or another worker has them), ``run`` does the work outside any transaction
and heartbeats as it goes, ``finish`` records success, ``fail`` records the failure; each step that changes a row
writes its audit event in the same transaction. ``perform`` catches every exception the run raises: an error of one
of the kind's ``expected`` types is the reason a human needs and is recorded as it is; any other is recorded with
its type, logged with its traceback, and raised again so RQ keeps the job under Failed too. Nothing is swallowed
and nothing is left RUNNING by an error.

What an error cannot cover, a dead worker, the sweep does (writeback.jobs.sweep): a row whose heartbeat is older
than its kind's staleness is failed (``run_sweep``) or returned to its queue, as the kind's ``RetryPolicy`` says.
The policies are below, in one place: how many attempts, which errors are worth another, what a stale row becomes.

Run rows (InventoryRun, WritebackTask) carry ``state`` (QUEUED -> RUNNING -> DONE | FAILED, and QUEUED -> FAILED),
``started_at``, ``heartbeat_at``, ``finished_at``, ``error`` and ``audit_snapshot()``; the ``run_*`` helpers below are
their claim, heartbeat, release, finish, fail and sweep. A model whose rows may make more moves (a writeback task goes
back to QUEUED to be retried) states them in its own ``TRANSITIONS`` table, which replaces RUN_TRANSITIONS for it.
Wave members keep their own rows and table (soa.choices.MEMBER_TRANSITIONS) and plug in through writeback.jobs.waves.

A new kind of work adds its run function and a ``Work``; it does not add a lifecycle.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.correlation import correlation_scope
from soa.jobs import job_pending

logger = logging.getLogger(__name__)


class RunAbandoned(Exception):
    """The run row is no longer this worker's: the sweep found its heartbeat stopped and failed or returned it.
    The run must stop; the sweep has already recorded what became of the row."""


# -- the retry policy -----------------------------------------------------------------------------------------------

RETURN = "return"  # a stale row goes back to its queue: the work can be picked up where it stopped
FAIL = "fail"  # a stale row is failed: the work cannot resume half-way, and the next run starts afresh


@dataclass(frozen=True)
class RetryPolicy:
    """How a kind of work is retried: how many claims it gets, which errors earn another, what a stale row becomes,
    and how long to wait before trying again (``backoff``, seconds: after an unexpected error for wave members, after
    a retryable one for writeback tasks). With ``max_backoff`` the wait doubles with every attempt up to that
    ceiling (``delay``), so a directory that stays down is not hammered."""

    max_attempts: int
    stale: str
    backoff: float = 60.0
    max_backoff: float | None = None

    @staticmethod
    def retryable(error: BaseException) -> bool:
        """Whether an error is worth another attempt: the clients mark theirs (timeouts, 429, 5xx, LDAP busy or
        unavailable); anything unmarked is permanent, so a bug is not retried into a loop."""
        return bool(getattr(error, "retryable", False))

    def gives_up(self, attempts: int) -> bool:
        """Whether a row claimed ``attempts`` times has had its last chance."""
        return attempts >= self.max_attempts

    def delay(self, attempts: int) -> float:
        """Seconds to wait before the next claim of a row claimed ``attempts`` times."""
        if self.max_backoff is None:
            return self.backoff
        return min(self.backoff * 2 ** max(attempts - 1, 0), self.max_backoff)


# An import reads both sides from the start and cannot resume half-way: a failed or stale run is failed, and the
# next one (the schedule's next tick, or an administrator) is its retry.
INVENTORY_RETRY = RetryPolicy(max_attempts=1, stale=FAIL)
# One member's flip: returned after a transient failure (Exchange's 5xx, the directory unreachable: the member and the
# rest of its batch wait 15 s, 30 s, 1 min ... up to 4 min, so a minute's outage costs each member at most four claims)
# or a dead worker (its next claim reads Exchange before writing), failed after five claims. After an unexpected error
# the wave's next batch waits a minute (writeback.jobs.waves), so a bug that fails every batch does not spin.
MEMBER_RETRY = RetryPolicy(max_attempts=5, stale=RETURN, backoff=15.0, max_backoff=240.0)
# One mailbox's write into AD: a retryable directory error (busy, unavailable, a broken connection) or a dead worker
# returns the task to its queue, scheduled 15 s, 30 s, 1 min ... up to 15 min later (a domain controller being
# restarted or patched is back within that); after eight claims it is FAILED, for a person to retry. Its next claim
# reads AD before writing, so a write the last attempt had landed is not sent twice.
WRITEBACK_RETRY = RetryPolicy(max_attempts=8, stale=RETURN, backoff=15.0, max_backoff=900.0)
# One help-desk edit applied to Exchange Online or AD: a retryable error (throttling, a 5xx, AD busy) or a dead worker
# leaves it APPLYING and schedules the next attempt 15 s, 30 s, 1 min ... up to 10 min later; after six claims it is
# FAILED and the person asks again. Each attempt reads the side it writes first, so nothing is sent twice.
CHANGE_RETRY = RetryPolicy(max_attempts=6, stale=RETURN, backoff=15.0, max_backoff=600.0)


def describe(error: BaseException, *, expected: bool) -> str:
    """The error as recorded: an expected error's own message (written for the person who reads it); an unexpected
    one's type as well, since its message alone ("'Identity'", "list index out of range") says nothing."""
    return str(error) if expected else f"Unexpected error {type(error).__name__}: {error}"


# -- one kind of work -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """One kind of background work on the lifecycle (see the module's docstring for the steps).

    ``release``, when a kind has one, is called instead of ``fail`` for an expected error that
    ``RetryPolicy.retryable`` marks: the kind gives its row back for a later attempt (or fails it when its policy
    gives up)."""

    name: str
    claim: Callable[[Any], Any]
    run: Callable[[Any], Any]
    finish: Callable[[Any, Any], Any]
    fail: Callable[[Any, str], Any]
    expected: tuple[type[BaseException], ...] = ()
    release: Callable[[Any, str], Any] | None = None


def perform(work: Work, key: Any, *, correlation: str) -> Any:
    """Claim ``key``'s work, run it, then finish or fail it, all under ``correlation`` (logs and audit events).
    Returns what ``finish`` or ``fail`` returned, or None when there was nothing to claim."""
    with correlation_scope(correlation):
        claimed = work.claim(key)
        if claimed is None:
            return None
        return complete(work, claimed)


def complete(work: Work, claimed: Any) -> Any:
    """Run claimed work and record how it ended (``perform`` without the claim, for callers that claimed it)."""
    try:
        result = work.run(claimed)
    except RunAbandoned as error:
        logger.warning("%s stopped: %s", work.name, error)
        return None
    except work.expected as error:
        if work.release is not None and RetryPolicy.retryable(error):
            logger.warning("%s will be retried: %s", work.name, error)
            return work.release(claimed, describe(error, expected=True))
        logger.warning("%s failed: %s", work.name, error)
        return work.fail(claimed, describe(error, expected=True))
    except Exception as error:
        # The one place a job catches everything: the failure is recorded on its rows with an audit event, logged
        # with its traceback, and raised again for RQ's Failed registry.
        logger.exception("%s failed unexpectedly", work.name)
        work.fail(claimed, describe(error, expected=False))
        raise
    return work.finish(claimed, result)


def job_failed(*, name: str, job_id: str, error: str) -> None:
    """Record the failure of a job that has no row of its own (a sweep, a schedule tick), as an audit event."""
    with transaction.atomic():
        audit_record(
            actor=None, action="writeback.job.failed", object_type="rq.job", object_id=job_id, object_repr=name,
            reason=error,
        )  # fmt: skip


# -- run rows ---------------------------------------------------------------------------------------------------------

RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    "QUEUED": frozenset({"RUNNING", "FAILED"}),
    "RUNNING": frozenset({"DONE", "FAILED"}),
    "DONE": frozenset(),
    "FAILED": frozenset(),
}


class RunTransitionError(Exception):
    """A run row asked to make a move RUN_TRANSITIONS does not allow."""


def require_run_transition(row: models.Model, target: str) -> None:
    """Refuse a run row's move that its model's TRANSITIONS (by default RUN_TRANSITIONS) does not allow."""
    table = getattr(type(row), "TRANSITIONS", RUN_TRANSITIONS)
    if target not in table[row.state]:
        raise RunTransitionError(f"{row} cannot go from {row.state} to {target}.")


def run_claim(model: type[models.Model], pk: int, *, action: str) -> Any:
    """QUEUED -> RUNNING, with its first heartbeat and ``action`` as audit event; None when the row is not queued
    (another worker claimed it, or it has ended): a job delivered twice then does nothing."""
    with transaction.atomic():
        row = model.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
        if row is None or row.state != model.State.QUEUED:
            return None
        require_run_transition(row, model.State.RUNNING)
        before = row.audit_snapshot()
        row.state = model.State.RUNNING
        row.started_at = row.heartbeat_at = timezone.now()
        row.save(update_fields=["state", "started_at", "heartbeat_at"])
        audit_record(actor=None, action=action, obj=row, before=before, after=row.audit_snapshot())
    return row


def run_heartbeat(model: type[models.Model], pk: int, **fields: Any) -> None:
    """Say the run is alive (and update ``fields``, its progress, in the same statement). Raises RunAbandoned when
    the row is no longer RUNNING: the sweep took it, and two runs must not write the same rows. Not audited: it
    changes no state, and an event per page would bury the ones that do."""
    if not model.objects.filter(pk=pk, state=model.State.RUNNING).update(heartbeat_at=timezone.now(), **fields):
        raise RunAbandoned(f"{model._meta.verbose_name} #{pk} is no longer running here (swept as stale?).")


def run_move(
    model: type[models.Model],
    pk: int,
    target: str,
    *,
    action: str,
    error: str,
    fields: dict[str, Any],
    ended: bool = True,
    then: Callable[[Any], None] | None = None,
) -> Any:
    """Move a QUEUED or RUNNING row to ``target`` (as its model's table allows), setting ``error`` and ``fields``,
    ``finished_at`` when the move ``ended`` it; ``then(row)`` records what else the kind keeps of the move, before
    the row's own ``action`` audit event, all in one transaction. None when the row had ended meanwhile."""
    with transaction.atomic():
        row = model.objects.select_for_update().get(pk=pk)
        if row.state not in (model.State.QUEUED, model.State.RUNNING):
            # Ended meanwhile (swept while this worker was slow): the sweep has recorded it; nothing more to say.
            logger.warning("%s already ended as %s; not recording %s.", row, row.state, target)
            return None
        require_run_transition(row, target)
        before = row.audit_snapshot()
        row.state, row.error = target, error
        row.finished_at = timezone.now() if ended else None
        for name, value in fields.items():
            setattr(row, name, value)
        row.save(update_fields=["state", "finished_at", "error", *fields])
        if then is not None:
            then(row)
        audit_record(actor=None, action=action, obj=row, before=before, after=row.audit_snapshot(), reason=error)
    return row


def run_finish(
    model: type[models.Model], pk: int, *, action: str, then: Callable[[Any], None] | None = None, **fields: Any
) -> Any:
    """RUNNING -> DONE with ``action`` as audit event; ``fields`` are set with it, and ``then(row)`` runs in the same
    transaction (what else the kind records with it). None when the row had ended."""
    return run_move(model, pk, model.State.DONE, action=action, error="", fields=fields, then=then)


def run_fail(
    model: type[models.Model],
    pk: int,
    error: str,
    *,
    action: str,
    then: Callable[[Any], None] | None = None,
    **fields: Any,
) -> Any:
    """QUEUED or RUNNING -> FAILED with ``error`` and ``action`` as audit event. None when the row had ended."""
    return run_move(model, pk, model.State.FAILED, action=action, error=error, fields=fields, then=then)


def run_release(
    model: type[models.Model],
    pk: int,
    error: str,
    *,
    action: str,
    then: Callable[[Any], None] | None = None,
    **fields: Any,
) -> Any:
    """RUNNING -> QUEUED (for models whose TRANSITIONS allow it): the run gives its row back to be claimed again,
    with ``error`` saying why and ``action`` as audit event. None when the row had ended meanwhile."""
    return run_move(model, pk, model.State.QUEUED, action=action, error=error, fields=fields, ended=False, then=then)


# A queued run's job is taken within seconds by an idle worker; after this long without a claim, and with Redis no
# longer holding the job, it was lost.
REQUEUE_AFTER = dt.timedelta(minutes=2)


def run_requeue_lost(
    model: type[models.Model], *, older_than: dt.timedelta, action: str, requeue: Callable[[int], Any]
) -> list[int]:
    """Queue again the QUEUED rows requested more than ``older_than`` ago whose job Redis no longer holds (emptied by
    a restart, or down when the request committed): ``requeue(pk)`` queues the job and notes its id on the row, and
    ``action`` is audited. A row whose job is still queued or running is left to it. Returns the ids queued again."""
    cutoff = timezone.now() - older_than
    lost = [
        pk
        for pk, job_id in model.objects.filter(state=model.State.QUEUED, requested_at__lt=cutoff).values_list(
            "pk", "job_id"
        )
        if not job_pending(job_id)
    ]
    for pk in lost:
        with transaction.atomic():
            row = model.objects.select_for_update().filter(pk=pk, state=model.State.QUEUED).first()
            if row is None:
                continue
            snapshot = row.audit_snapshot()
            audit_record(actor=None, action=action, obj=row, before=snapshot, after=snapshot,
                         reason="Its job was no longer in Redis; the sweep queued it again.")  # fmt: skip
            transaction.on_commit(lambda pk=pk: requeue(pk))
    if lost:
        logger.warning("Queued %s run(s) %s again: their jobs were lost.", model.__name__, lost)
    return lost


def run_sweep(
    model: type[models.Model], *, stale_after: dt.timedelta, action: str, policy: RetryPolicy, **fields: Any
) -> list[int]:
    """Fail the RUNNING rows whose heartbeat is older than ``stale_after`` (their worker died, or was killed by a
    timeout), each with ``action`` as audit event and the time of its last heartbeat as the error. Returns their ids.
    Only a FAIL policy is swept here: a kind whose stale rows are returned (WRITEBACK_RETRY) sweeps them through its
    own release step, which also decides whether the policy gives up (writeback.jobs.writeback.writeback_sweep)."""
    if policy.stale != FAIL:
        raise ValueError(f"{model.__name__} rows can only be failed when stale, not returned.")
    cutoff = timezone.now() - stale_after
    stale = model.objects.filter(state=model.State.RUNNING, heartbeat_at__lt=cutoff).values_list("pk", "heartbeat_at")
    swept = []
    for pk, beat in list(stale):
        error = (
            f"Its worker stopped: no heartbeat since {beat:%Y-%m-%d %H:%M:%S} UTC, more than "
            f"{stale_after.total_seconds():.0f} s before the sweep."
        )
        if run_fail(model, pk, error, action=action, **fields) is not None:
            swept.append(pk)
    if swept:
        logger.warning("Swept %s run(s) %s whose heartbeat had stopped.", model.__name__, swept)
    return swept
