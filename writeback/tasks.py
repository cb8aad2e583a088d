"""Writeback tasks' services: asking for a mailbox's values to be written into AD, and retrying a failed write.

Each runs in one transaction with its audit event and queues the job (writeback.jobs.writeback) after the commit,
by its dotted name (soa.jobs.enqueue). They live here, not in soa, because the task is writeback's row; soa's
change requests call ``writeback_task_request`` from the job that applied the edit to Exchange Online.
"""

from collections.abc import Mapping
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.correlation import get_correlation_id
from portal.limits import REASON_MAX_LENGTH, too_long
from portal.models import User
from portal.roles import Action, may
from soa.attributes import BY_EXO, EXCHANGE_ATTRIBUTES
from soa.jobs import REDIS_UNREACHABLE, WRITEBACK_QUEUE, WRITEBACK_TASK_JOB, enqueue
from soa.models import Mailbox
from writeback.jobs.lifecycle import require_run_transition
from writeback.models import WritebackTask

EXCHANGE_NAMES = frozenset(attribute.exo for attribute in EXCHANGE_ATTRIBUTES)
# A job writes a batch of tasks (two searches and a modify each); RQ's timeout only bounds a hung worker.
JOB_TIMEOUT = 300


class WritebackError(Exception):
    """A writeback request or retry refused, or a write AD did not take; the message says why and what to do."""


def writeback_enqueue(task_id: int, *, at=None) -> str | None:
    """Queue (or schedule for ``at``) the job of one task. Call after the commit. Returns the job id, or None when a
    writeback job is already waiting in the queue: it has not claimed yet, and its batch takes every due task, this
    one included (writeback.jobs.writeback), so a backlog of requests is written in batches, not a job each.

    A scheduled job's id is noted on the task at once; a queued one's by its claim: an update here could hold the
    row just as an idle worker's claim (skip_locked) reaches it, and the claim would pass the task by."""
    if at is None and _queue_waiting():
        return None
    job_id = enqueue(WRITEBACK_TASK_JOB, task_id, queue=WRITEBACK_QUEUE, at=at, job_timeout=JOB_TIMEOUT)
    if at is not None and job_id is not None:  # None: Redis was unreachable, and the sweep queues it later
        WritebackTask.objects.filter(pk=task_id, state=WritebackTask.State.QUEUED).update(job_id=job_id)
    return job_id


def writeback_drain_enqueue() -> str | None:
    """Queue a job that writes a batch of due tasks, unless one is already waiting (None then)."""
    if _queue_waiting():
        return None
    return enqueue(WRITEBACK_TASK_JOB, None, queue=WRITEBACK_QUEUE, job_timeout=JOB_TIMEOUT)


def _queue_waiting() -> bool:
    import django_rq

    try:
        return django_rq.get_queue(WRITEBACK_QUEUE).count > 0
    except REDIS_UNREACHABLE:
        return False  # then enqueue finds Redis unreachable too, logs it, and the sweep queues the task later


def _desired(desired: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(name for name in desired if name not in BY_EXO)
    if unknown:
        raise WritebackError(f"Not Exchange Online properties the portal knows: {', '.join(unknown)}.")
    # Identity attributes (a whole exo_values may be passed) are mastered in AD and never written back.
    return {name: value for name, value in desired.items() if name in EXCHANGE_NAMES}


def writeback_task_request(
    *, mailbox_id: int, desired: Mapping[str, Any], source: str, actor: User | None = None, enqueue: bool = True
) -> WritebackTask:
    """Ask for the mailbox's AD user to hold ``desired`` (the cloud's values, by Exchange Online property name).

    A task still queued for the mailbox is superseded by the new one (audited ``writeback.task.superseded``): only
    the newest desired state is written. A task running meanwhile finishes, and the new one runs after it.
    ``enqueue`` False leaves the job to the caller (tests, benchmarks). Audited as ``writeback.task.requested``.
    """
    if not source:
        raise WritebackError("Say what asks for the writeback (source), e.g. change_request:<id>.")
    cleaned = _desired(desired)
    with transaction.atomic():
        # Serialises requests for one mailbox: two at once would both find no queued task and both create one.
        mailbox = Mailbox.objects.select_for_update().get(pk=mailbox_id)
        if mailbox.ad_guid is None:
            raise WritebackError(f"{mailbox} has no AD user the portal knows of; import the inventory first.")
        queued = WritebackTask.objects.select_for_update().filter(mailbox=mailbox, state=WritebackTask.State.QUEUED)
        older = queued.first()
        if older is not None:
            require_run_transition(older, WritebackTask.State.SUPERSEDED)
            before = older.audit_snapshot()
            older.state, older.finished_at = WritebackTask.State.SUPERSEDED, timezone.now()
            older.save(update_fields=["state", "finished_at"])
        task = WritebackTask.objects.create(
            mailbox=mailbox, desired=cleaned, source=source, requested_by=actor,
            correlation_id=get_correlation_id(),
        )  # fmt: skip
        if older is not None:
            older.superseded_by = task
            older.save(update_fields=["superseded_by"])
            audit_record(
                actor=actor, action="writeback.task.superseded", obj=older, before=before,
                after={**older.audit_snapshot(), "superseded_by": task.pk},
            )  # fmt: skip
        audit_record(actor=actor, action="writeback.task.requested", obj=task, after=task.audit_snapshot())
        if enqueue:
            transaction.on_commit(partial(writeback_enqueue, task.pk))
    return task


def writeback_task_retry_refusal(task: WritebackTask, actor: User) -> str | None:
    """Why ``actor`` may not retry ``task`` now, or None. Help desk within the mailbox's OU, or an administrator."""
    if not (may(actor, Action.MAILBOX_EDIT, dn=task.mailbox.dn_norm) or may(actor, Action.PORTAL_CONFIGURE)):
        return "Only help desk for this mailbox's OU, or an administrator, can retry its writeback."
    if task.state != WritebackTask.State.FAILED:
        return f"{task} is {task.get_state_display().lower()}; only a failed writeback can be retried."
    later = WritebackTask.objects.filter(mailbox_id=task.mailbox_id, pk__gt=task.pk).order_by("-pk").first()
    if later is not None:
        # Its values are older than the newer task's: writing them now would undo the newer state in AD.
        return f"A newer writeback ({later}) replaces this one; only the newest can be retried."
    return None


def writeback_task_retry(*, task_id: int, actor: User, reason: str = "") -> WritebackTask:
    """Queue a FAILED task again (FAILED -> QUEUED, its attempts from zero), audited ``writeback.task.retried``.
    Its desired values are written as they were asked for; a newer request would have replaced them."""
    with transaction.atomic():
        task = WritebackTask.objects.select_for_update().select_related("mailbox").get(pk=task_id)
        refusal = writeback_task_retry_refusal(task, actor) or too_long(reason, REASON_MAX_LENGTH, "The reason")
        if refusal:
            raise WritebackError(refusal)
        require_run_transition(task, WritebackTask.State.QUEUED)
        before = task.audit_snapshot()
        now = timezone.now()
        task.state, task.attempts, task.error, task.retry_at = WritebackTask.State.QUEUED, 0, "", None
        task.finished_at, task.queued_at = None, now
        task.save(update_fields=["state", "attempts", "error", "retry_at", "finished_at", "queued_at"])
        audit_record(
            actor=actor, action="writeback.task.retried", obj=task, before=before, after=task.audit_snapshot(),
            reason=reason,
        )  # fmt: skip
        transaction.on_commit(partial(writeback_enqueue, task.pk))
    return task
