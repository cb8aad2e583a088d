"""Reads of the writeback's rows for the pages, scoped to what the user may see (soa.selectors' mailbox scope)."""

from collections.abc import Iterable

from django.db.models import Count, Exists, OuterRef, QuerySet

from soa.models import Mailbox
from soa.selectors import mailbox_list
from writeback.models import DriftFinding, WritebackTask


def writeback_tasks_of(*, user, mailbox: Mailbox, task_ids: Iterable[int]) -> dict[int, WritebackTask]:
    """The writeback tasks ``task_ids`` of ``mailbox`` by id, when the user may see the mailbox; ids of another
    mailbox, or of one outside the user's scope, are left out."""
    ids = {int(pk) for pk in task_ids}
    if not ids:
        return {}
    tasks = WritebackTask.objects.filter(pk__in=ids, mailbox_id=mailbox.pk, mailbox__in=mailbox_list(user=user))
    return {task.pk: task for task in tasks}


def _readiness_writeback_rows() -> tuple[QuerySet[DriftFinding], QuerySet[WritebackTask]]:
    """Open drift findings, and failed writebacks that no later writeback of the same mailbox made good."""
    findings = DriftFinding.objects.filter(resolved_at__isnull=True)
    failed = WritebackTask.objects.filter(state=WritebackTask.State.FAILED).exclude(
        Exists(WritebackTask.objects.filter(mailbox=OuterRef("mailbox"), state=WritebackTask.State.DONE,
                                            id__gt=OuterRef("id")))
    )  # fmt: skip
    return findings, failed


def readiness_writeback_counts(mailboxes: QuerySet[Mailbox]) -> dict[str, int]:
    """What the readiness page (soa.readiness.measure) needs of the writeback, over ``mailboxes``: open drift
    findings, and failed writebacks that no later writeback of the same mailbox made good."""
    findings, failed = _readiness_writeback_rows()
    if mailboxes.query.where:  # a scoped user: a tenant-wide one needs no join with a million mailboxes
        findings = findings.filter(mailbox__in=mailboxes.values("pk"))
        failed = failed.filter(mailbox__in=mailboxes.values("pk"))
    return {"open_drift": findings.count(), "failed_writebacks": failed.count()}


def readiness_writeback_groups() -> dict[tuple[str, str, str], dict[str, int]]:
    """readiness_writeback_counts of the whole tenant per group of mailboxes (parent OU, recipient type, authority),
    as the readiness snapshot keeps them (soa.readiness.group_counts): only groups with any count are present."""
    keys = ("mailbox__ou_norm", "mailbox__recipient_type_details", "mailbox__authority")
    groups: dict[tuple[str, str, str], dict[str, int]] = {}
    for name, rows in zip(("open_drift", "failed_writebacks"), _readiness_writeback_rows(), strict=True):
        for row in rows.order_by().values(*keys).annotate(count=Count("id")):
            groups.setdefault(tuple(row[key] for key in keys), {})[name] = row["count"]
    return groups
