"""Bulk edits: a checked CSV file made into one ChangeBatch, whose lines become change requests one by one.

``change_batch_create`` checks the file again (soa.bulk_csv, the single edit's validator) and, only when every line is
good, records the batch and its lines in one transaction with ``soa.batch.created``; the same submission key again
returns the first batch. Its job (writeback.jobs.change_batches, queued by name through soa.jobs) then creates the
requests in steps, each through ``change_request_create`` (the one place a request is made: scope, validation, the
one-open-request rule, its own ``soa.change.requested`` event, which names the batch) at BULK_CHANGE_RATE per second.
A mailbox's lines are taken in file order: a line waits while its mailbox has an open request (the line before it,
or anyone's), and the end of that request queues the next step (soa.jobs.change_batch_poke). A line that can no
longer be made (the mailbox changed since the preview) keeps the service's message and the batch goes on.

The batch moves as BATCH_TRANSITIONS allows; pause, resume and cancel are for its owner or an admin, each audited.
"""

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from portal.audit import audit_record
from portal.limits import REASON_MAX_LENGTH, too_long
from portal.models import User
from portal.roles import Action, may
from soa import jobs
from soa.bulk_csv import BulkInputError, BulkPreview, bulk_preview
from soa.choices import (
    BATCH_OPEN_STATES,
    BATCH_TRANSITIONS,
    CHANGE_OPEN_STATES,
    CHANGE_TERMINAL_STATES,
    BatchState,
    ChangeState,
)
from soa.models import ChangeBatch, ChangeBatchLine, ChangeRequest, Mailbox
from soa.services import Refusal, SoaError, refuse
from soa.services.changes import IDEMPOTENCY_KEY_MAX, change_request_create

__all__ = ["BulkInputError", "BulkLinesError", "change_batch_create"]


class BulkLinesError(SoaError):
    """Some lines of the file are bad; ``preview`` holds every one. Nothing was created."""

    def __init__(self, preview: BulkPreview):
        self.preview = preview
        super().__init__(f"{len(preview.problems)} line(s) of the file have problems; nothing was created.")


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands: lines in all, requests created, applied, ended otherwise (failed, rejected, cancelled,
    or not made), and waiting for an approver."""

    total: int
    created: int
    applied: int
    failed: int
    waiting_approval: int

    @property
    def ended(self) -> int:
        return self.applied + self.failed

    @property
    def percent(self) -> int:
        return int(100 * self.ended / self.total) if self.total else 100


def batch_progress(batch: ChangeBatch) -> BatchProgress:
    lines = ChangeBatchLine.objects.filter(batch=batch)
    return BatchProgress(
        total=batch.line_count,
        created=lines.exclude(request=None).count(),
        applied=lines.filter(request__state=ChangeState.APPLIED).count(),
        failed=lines.filter(
            Q(request=None, error__gt="") | Q(request__state__in=sorted(CHANGE_TERMINAL_STATES - {ChangeState.APPLIED}))
        ).count(),
        waiting_approval=lines.filter(request__state=ChangeState.PENDING_APPROVAL).count(),
    )


# -- refusals --------------------------------------------------------------------------------------------------------


def _transition_refusal(batch: ChangeBatch, target: str, verb: str) -> Refusal | None:
    if target in BATCH_TRANSITIONS[batch.state]:
        return None
    return Refusal(f"Bulk edit #{batch.pk} is {batch.get_state_display().lower()}; it cannot be {verb}.", Refusal.STATE)


def batch_control_refusal(user: User | None, batch: ChangeBatch, target: str) -> Refusal | None:
    """Why ``user`` may not move ``batch`` to ``target`` (PAUSED, RUNNING to resume, CANCELLED), or None."""
    if user is None or (batch.created_by_id != user.pk and not may(user, Action.PORTAL_CONFIGURE)):
        return Refusal("Only the person who started this bulk edit, or an administrator, can control it.", Refusal.ROLE)
    verb = {BatchState.PAUSED: "paused", BatchState.RUNNING: "resumed", BatchState.CANCELLED: "cancelled"}[target]
    refusal = _transition_refusal(batch, target, verb)
    if refusal is None and target == BatchState.RUNNING and batch.state != BatchState.PAUSED:
        return Refusal(f"Bulk edit #{batch.pk} is not paused.", Refusal.STATE)
    return refusal


def batch_visible(user: User | None, batch: ChangeBatch) -> bool:
    """The owner and administrators see a batch (its lines name mailboxes of the owner's scope)."""
    return user is not None and (batch.created_by_id == user.pk or may(user, Action.PORTAL_CONFIGURE))


# -- creating a batch ------------------------------------------------------------------------------------------------


def change_batch_create(*, actor: User, lines, file_name: str, reason: str, idempotency_key: str) -> ChangeBatch:
    """Check the file's ``lines`` (an iterable of text lines) for ``actor`` and, when every line is good, record the
    batch and queue its job after commit. Raises BulkInputError (the file as a whole), BulkLinesError (bad lines,
    each with its number) or SoaError (no reason when one is required, no submission key); nothing is written then.
    The same ``idempotency_key`` again returns the first batch. The file is read before any transaction opens."""
    key = (idempotency_key or "").strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise SoaError("The form is missing its submission key; upload the file again.")
    replay = ChangeBatch.objects.filter(idempotency_key=key).first()
    if replay is not None:
        if replay.created_by_id == actor.pk:
            return replay  # the confirmation sent twice: one batch
        raise SoaError("This form was already used for another bulk edit; upload the file again.")
    reason = (reason or "").strip()
    if settings.CHANGE_REASON_REQUIRED and not reason:
        raise SoaError("Give a reason for this bulk edit; it goes in the history of every change it makes.")
    if too_long(reason, REASON_MAX_LENGTH, "The reason"):
        raise SoaError(too_long(reason, REASON_MAX_LENGTH, "The reason"))
    preview = bulk_preview(user=actor, lines=lines)
    if not preview.ok:
        raise BulkLinesError(preview)
    with transaction.atomic():
        replay = ChangeBatch.objects.select_for_update().filter(idempotency_key=key).first()
        if replay is not None:
            return replay
        same = _open_batch_with_lines(actor, preview.lines)
        if same is not None:
            # The same file confirmed from a second tab (its page made its own key): the open one makes these changes.
            raise SoaError(
                f"Your bulk edit #{same.pk} with these same lines is still {same.get_state_display().lower()}; it "
                "makes these changes. Cancel it first to send them again."
            )
        batch = ChangeBatch.objects.create(
            created_by=actor, reason=reason, file_name=(file_name or "")[:255], line_count=len(preview.lines),
            idempotency_key=key,
        )  # fmt: skip
        ChangeBatchLine.objects.bulk_create(
            (
                ChangeBatchLine(batch=batch, number=line.number, mailbox_id=line.mailbox_id, operation=line.operation)
                for line in preview.lines
            ),
            batch_size=500,
        )
        audit_record(actor=actor, action="soa.batch.created", obj=batch, after={
            **batch.audit_snapshot(), "mailboxes": preview.mailbox_count,
        }, reason=reason)  # fmt: skip
        batch_id = batch.pk
        transaction.on_commit(lambda: jobs.change_batch_enqueue(batch_id=batch_id))
    return batch


def _open_batch_with_lines(actor: User, lines) -> ChangeBatch | None:
    """The actor's open bulk edit holding exactly ``lines`` (same mailboxes, same operations, same order), if any."""
    wanted = [(line.mailbox_id, line.operation) for line in lines]
    candidates = ChangeBatch.objects.filter(created_by=actor, state__in=BATCH_OPEN_STATES, line_count=len(wanted))
    for batch in candidates.order_by("pk"):
        if list(batch.lines.order_by("number").values_list("mailbox_id", "operation")) == wanted:
            return batch
    return None


# -- controlling a batch ---------------------------------------------------------------------------------------------


def _move(*, actor: User | None, batch_id: int, target: str, action: str, reason: str = "", error: str = ""):
    with transaction.atomic():
        batch = ChangeBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None:
            raise SoaError(f"There is no bulk edit #{batch_id}.")
        if actor is not None:
            refuse(batch_control_refusal(actor, batch, target))
        elif target not in BATCH_TRANSITIONS[batch.state]:
            return None
        before = batch.audit_snapshot()
        batch.state = target
        batch.error = error
        if target in (BatchState.DONE, BatchState.CANCELLED):
            batch.finished_at = timezone.now()
        batch.save(update_fields=["state", "error", "finished_at", "updated_at"])
        audit_record(actor=actor, action=action, obj=batch, before=before, after=batch.audit_snapshot(), reason=reason)
        if target == BatchState.RUNNING:
            transaction.on_commit(lambda: jobs.change_batch_enqueue(batch_id=batch_id))
    return batch


def change_batch_pause(*, actor: User, batch_id: int, reason: str = "") -> ChangeBatch:
    """Stop creating requests for the batch's remaining lines; the requests already made go on."""
    return _move(actor=actor, batch_id=batch_id, target=BatchState.PAUSED, action="soa.batch.paused", reason=reason)


def change_batch_resume(*, actor: User, batch_id: int, reason: str = "") -> ChangeBatch:
    """Carry on with a paused batch from its first line without a request."""
    return _move(actor=actor, batch_id=batch_id, target=BatchState.RUNNING, action="soa.batch.resumed", reason=reason)


def change_batch_cancel(*, actor: User, batch_id: int, reason: str = "") -> ChangeBatch:
    """End the batch: its remaining lines are never made; requests already made go on (each can be cancelled on
    its mailbox's page while it is not being applied)."""
    return _move(actor=actor, batch_id=batch_id, target=BatchState.CANCELLED, action="soa.batch.cancelled",
                 reason=reason)  # fmt: skip


# -- the job's steps (writeback.jobs.change_batches) ---------------------------------------------------------------


def change_batch_claim(*, batch_id: int) -> int | None:
    """Start a step: a queued batch becomes RUNNING (audited); a running one is taken as it is. None when the batch
    is paused, cancelled or done: the step has nothing to do."""
    with transaction.atomic():
        batch = ChangeBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.state not in (BatchState.QUEUED, BatchState.RUNNING):
            return None
        now = timezone.now()
        if batch.state == BatchState.QUEUED:
            before = batch.audit_snapshot()
            batch.state, batch.started_at = BatchState.RUNNING, now
            audit_record(actor=None, action="soa.batch.started", obj=batch, before=before,
                         after=batch.audit_snapshot())  # fmt: skip
        batch.heartbeat_at = now
        batch.save(update_fields=["state", "started_at", "heartbeat_at", "updated_at"])
    return batch_id


def change_batch_running(*, batch_id: int) -> bool:
    """Whether the batch may still create requests (it is RUNNING); records the step's heartbeat."""
    return bool(ChangeBatch.objects.filter(pk=batch_id, state=BatchState.RUNNING).update(heartbeat_at=timezone.now()))


def change_batch_next_lines(*, batch_id: int, limit: int) -> list[int]:
    """The lines whose turn has come, in file order: no request yet, and no open request on their mailbox, nor an
    earlier line of their mailbox still without one."""
    pending = list(
        ChangeBatchLine.objects.filter(batch_id=batch_id, request=None, error="")
        .order_by("number")
        .values_list("pk", "mailbox_id")
    )
    busy = set(
        ChangeRequest.objects.filter(
            mailbox_id__in={mailbox for _, mailbox in pending}, state__in=sorted(CHANGE_OPEN_STATES)
        ).values_list("mailbox_id", flat=True)
    )
    ready: list[int] = []
    for pk, mailbox in pending:
        if mailbox not in busy:
            ready.append(pk)
            if len(ready) >= limit:
                break
        busy.add(mailbox)  # a later line of this mailbox waits for this one
    return ready


def change_batch_line_create(*, line_id: int) -> ChangeRequest | None:
    """Make the change request of one line, as its batch's owner with the batch's reason, through
    ``change_request_create``; a refusal is kept on the line (its batch goes on). None when the line is done or
    its batch no longer running."""
    with transaction.atomic():
        line = (
            ChangeBatchLine.objects.select_for_update(skip_locked=True)
            .select_related("batch", "batch__created_by")
            .filter(pk=line_id, request=None, error="")
            .first()
        )
        if line is None or line.batch.state != BatchState.RUNNING:
            return None
        mailbox = Mailbox.objects.filter(pk=line.mailbox_id).only("version").first()
        try:
            with transaction.atomic():
                request = change_request_create(
                    actor=line.batch.created_by, mailbox_id=line.mailbox_id, operations=[line.operation],
                    reason=line.batch.reason, base_version=mailbox.version if mailbox else 0,
                    idempotency_key=f"batch-{line.batch_id}-line-{line.number}", batch_id=line.batch_id,
                )  # fmt: skip
        except SoaError as exc:
            line.error = str(exc) or type(exc).__name__
            line.save(update_fields=["error"])
            return None
        line.request = request
        line.save(update_fields=["request"])
    return request


def change_batch_step_done(*, batch_id: int, more: bool) -> ChangeBatch | None:
    """End a step: a batch whose every line has ended is DONE (audited); one with lines ready now (``more``) queues
    its next step; otherwise it waits for a request of its to end (soa.jobs.change_batch_poke)."""
    batch = ChangeBatch.objects.filter(pk=batch_id).first()
    if batch is None or batch.state != BatchState.RUNNING:
        return batch
    open_lines = ChangeBatchLine.objects.filter(batch_id=batch_id).filter(
        Q(request=None, error="") | Q(request__state__in=sorted(CHANGE_OPEN_STATES))
    )
    if not open_lines.exists():
        return _move(actor=None, batch_id=batch_id, target=BatchState.DONE, action="soa.batch.done")
    if more:
        transaction.on_commit(lambda: jobs.change_batch_enqueue(batch_id=batch_id))
    return batch


def change_batch_step_failed(*, batch_id: int, error: str) -> ChangeBatch | None:
    """A step failed unexpectedly: the batch is PAUSED with the error (audited), for its owner to resume."""
    return _move(actor=None, batch_id=batch_id, target=BatchState.PAUSED, action="soa.batch.paused", error=error)


def batch_stalled_since(batch: ChangeBatch, *, before: dt.datetime) -> dt.datetime | None:
    """When a RUNNING batch's steps stopped, if it is stalled: no step since ``before`` (its heartbeat, or its start)
    while a line's turn has come (a worker died mid-step, or its next step was never queued); for a QUEUED batch,
    since it was confirmed (its first step was lost: Redis emptied, or down at the commit). None otherwise: it runs,
    or it waits for a request to end, which queues its next step."""
    if batch.state not in (BatchState.RUNNING, BatchState.QUEUED):
        return None
    last = batch.heartbeat_at or batch.started_at or batch.created_at
    if last >= before or not change_batch_next_lines(batch_id=batch.pk, limit=1):
        return None
    return last


def change_batches_stalled(*, before: dt.datetime) -> list[int]:
    """The batches the sweep restarts: stalled (``batch_stalled_since``) and with nothing else moving since
    ``before`` (not restarted since, and no request of theirs changed since, whose end has queued a step)."""
    recent = ChangeBatchLine.objects.filter(batch_id=OuterRef("pk"), request__updated_at__gte=before)
    candidates = (
        ChangeBatch.objects.filter(state__in=(BatchState.RUNNING, BatchState.QUEUED), updated_at__lt=before)
        .filter(Q(heartbeat_at__lt=before) | Q(heartbeat_at=None))
        .exclude(Exists(recent))
        .order_by("pk")
    )
    return [batch.pk for batch in candidates if batch_stalled_since(batch, before=before) is not None]


def change_batch_restart(*, batch_id: int, before: dt.datetime) -> ChangeBatch | None:
    """The sweep's restart of a stalled batch: its next step queued after commit, audited ``soa.batch.restarted``
    with when its steps stopped. None when it is no longer stalled (a step or its owner moved it meanwhile)."""
    with transaction.atomic():
        batch = ChangeBatch.objects.select_for_update(skip_locked=True).filter(pk=batch_id).first()
        since = batch_stalled_since(batch, before=before) if batch is not None else None
        if since is None or batch.updated_at >= before:
            return None
        batch.save(update_fields=["updated_at"])  # restarted now: the next sweep waits a staleness again
        snapshot = batch.audit_snapshot()
        audit_record(actor=None, action="soa.batch.restarted", obj=batch, before=snapshot, after=snapshot,
                     reason=f"No step since {since:%Y-%m-%d %H:%M:%S} UTC; the sweep queued the next.")  # fmt: skip
        transaction.on_commit(lambda: jobs.change_batch_enqueue(batch_id=batch_id))
    return batch


def batch_pace() -> dt.timedelta:
    """The time between two requests a batch creates (BULK_CHANGE_RATE per second)."""
    return dt.timedelta(seconds=1 / settings.BULK_CHANGE_RATE) if settings.BULK_CHANGE_RATE > 0 else dt.timedelta()
