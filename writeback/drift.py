"""Drift findings and scans: who sees them, asking for a scan, and repairing findings with the cloud's values.

A finding is one written-back attribute of a cloud-managed mailbox whose AD value differs from Exchange Online's
(recorded by the drift scan, writeback.jobs.drift, or by a writeback that met a direct AD edit). The cloud holds
authority, so a repair is a writeback task with the mailbox's cloud values (``source="drift_repair"``); the task's
completion closes every open finding of the attributes it wrote (writeback.jobs.writeback). Reads go through
``drift_finding_list`` (scoped to the user); writes are the services below, each in one transaction with its audit
event. Who may do what:

- see findings: administrators and auditors everywhere, help desk within its OUs (``drift_visible``);
- repair a finding: help desk with ``mailbox_edit`` on the mailbox's OU, or an administrator;
- request a scan: administrators.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.audit import audit_record
from portal.dn import InvalidDn, normalize_dn
from portal.limits import REASON_MAX_LENGTH, too_long
from portal.models import User
from portal.roles import Action, may, scope_filter
from soa.jobs import enqueue
from writeback.models import DriftFinding, DriftScan, WritebackTask
from writeback.tasks import WritebackError, writeback_task_request

DRIFT_SCAN_JOB = "writeback.jobs.drift.drift_scan_job"
SCAN_JOB_TIMEOUT = 6 * 3600  # a full scan reads both sides whole, as a full inventory import does
REPAIR_SOURCE = "drift_repair"
# The actions whose holders see findings: tenant-wide for the first two, within the OUs of the grant for the third.
VIEW_ACTIONS = (Action.PORTAL_CONFIGURE, Action.AUDIT_VIEW, Action.MAILBOX_EDIT)


class DriftError(Exception):
    """A drift scan or repair refused; the message says why and what to do."""


# -- reads -------------------------------------------------------------------------------------------------------------


def drift_visible(user) -> bool:
    """Whether the drift page is for ``user`` at all (some finding could be theirs to see)."""
    return any(may(user, action) for action in VIEW_ACTIONS)


def drift_finding_list(
    *, user, ou: str = "", attribute: str = "", older_than_days: int | None = None, open_only: bool = True
) -> QuerySet[DriftFinding]:
    """Findings ``user`` may see (open ones unless ``open_only`` is False), newest first, filtered by an OU subtree
    (a DN; a malformed one matches nothing), an Exchange attribute name and a minimum age in days."""
    conditions = [scope_filter(user, action, "mailbox__dn_norm") for action in VIEW_ACTIONS]
    # A tenant-wide grant is the empty Q, which an OR would drop (Q | Q() is the left side alone): it means everything.
    visible = Q() if any(not condition for condition in conditions) else Q(pk__in=[])
    for condition in conditions:
        visible = visible if not visible else visible | condition
    findings = DriftFinding.objects.filter(visible).select_related("mailbox", "repair_task")
    if open_only:
        findings = findings.filter(resolved_at__isnull=True)
    if ou:
        try:
            base = normalize_dn(ou)
        except InvalidDn:
            return findings.none()
        findings = findings.filter(Q(mailbox__ou_norm=base) | Q(mailbox__ou_norm__endswith="," + base))
    if attribute:
        findings = findings.filter(attribute=attribute)
    if older_than_days:
        findings = findings.filter(found_at__lte=timezone.now() - dt.timedelta(days=older_than_days))
    return findings.order_by("-found_at", "-id")


def drift_repair_refusal(finding: DriftFinding, actor: User) -> str | None:
    """Why ``actor`` may not repair ``finding`` now, or None. Help desk within the mailbox's OU, or an administrator."""
    if not (may(actor, Action.MAILBOX_EDIT, dn=finding.mailbox.dn_norm) or may(actor, Action.PORTAL_CONFIGURE)):
        return "Only help desk for this mailbox's OU, or an administrator, can repair its drift."
    if finding.resolved_at is not None:
        return f"{finding} is already resolved."
    if finding.repair_task_id is not None and finding.repair_task.state in WritebackTask.OPEN_STATES:
        return f"A repair ({finding.repair_task}) is already on its way."
    if finding.mailbox.ad_guid is None:
        return f"{finding.mailbox} has no AD user the portal knows of; import the inventory first."
    return None


def drift_scan_refusal(actor: User) -> str | None:
    """Why ``actor`` may not start a scan now, or None."""
    if not may(actor, Action.PORTAL_CONFIGURE):
        return "Only an administrator can start a drift scan."
    running = DriftScan.objects.filter(state__in=DriftScan.OPEN_STATES).first()
    if running is not None:
        return f"{running} is already {running.get_state_display().lower()}."
    return None


# -- writes ------------------------------------------------------------------------------------------------------------


def _denied(*, actor: User, finding_ids: list[int], reason: str) -> None:
    """A refused repair, audited in a transaction of its own (the refusal rolls nothing else back)."""
    with transaction.atomic():
        audit_record(
            actor=actor, action="writeback.drift.denied", object_type="writeback.driftfinding",
            object_id=",".join(str(pk) for pk in finding_ids), after={"finding_ids": finding_ids}, reason=reason,
        )  # fmt: skip


def _repair_mailbox(findings: list[DriftFinding], actor: User | None, reason: str) -> WritebackTask:
    """One writeback task with the mailbox's cloud values for its findings, noted on each (audited). Inside the
    caller's transaction; the findings are locked."""
    mailbox = findings[0].mailbox
    task = writeback_task_request(mailbox_id=mailbox.pk, desired=mailbox.exo_values, source=REPAIR_SOURCE, actor=actor)
    for finding in findings:
        before = finding.audit_snapshot()
        finding.repair_task = task
        finding.save(update_fields=["repair_task"])
        audit_record(
            actor=actor, action="writeback.drift.repair_requested", obj=finding, before=before,
            after=finding.audit_snapshot(), reason=reason,
        )  # fmt: skip
    return task


def drift_finding_repair(*, finding_id: int, actor: User, reason: str = "") -> WritebackTask:
    """Queue the writeback of the mailbox's cloud values over the finding (``source="drift_repair"``), audited as
    ``writeback.drift.repair_requested``; the finding is resolved when that task completes. A refusal is audited as
    ``writeback.drift.denied`` and raised as DriftError."""
    try:
        with transaction.atomic():
            finding = DriftFinding.objects.select_for_update(of=("self",)).select_related("mailbox").get(pk=finding_id)
            refusal = drift_repair_refusal(finding, actor) or too_long(reason, REASON_MAX_LENGTH, "The reason")
            if refusal:
                raise DriftError(refusal)
            return _repair_mailbox([finding], actor, reason)
    except DriftError as exc:
        _denied(actor=actor, finding_ids=[finding_id], reason=str(exc))
        raise
    except WritebackError as exc:
        raise DriftError(str(exc)) from exc


def drift_findings_repair(*, finding_ids: Iterable[int], actor: User, reason: str = "") -> list[WritebackTask]:
    """Repair many findings at once (the drift page's bulk repair): one writeback task per mailbox, all or none. Every
    finding must be repairable by ``actor``; a refusal names the first one refused (audited, nothing queued). Audited
    as ``writeback.drift.bulk_repair`` naming the findings, and each as ``writeback.drift.repair_requested``."""
    ids = sorted(set(finding_ids))
    if not ids:
        raise DriftError("No open finding matches these filters; there is nothing to repair.")
    try:
        with transaction.atomic():
            findings = list(
                DriftFinding.objects.select_for_update(of=("self",)).select_related("mailbox", "repair_task")
                .filter(pk__in=ids).order_by("mailbox_id", "pk")
            )  # fmt: skip
            if len(findings) != len(ids):
                raise DriftError("Some of these findings no longer exist; reload the page.")
            if too_long(reason, REASON_MAX_LENGTH, "The reason"):
                raise DriftError(too_long(reason, REASON_MAX_LENGTH, "The reason"))
            for finding in findings:
                refusal = drift_repair_refusal(finding, actor)
                if refusal:
                    raise DriftError(f"{finding}: {refusal}")
            by_mailbox: dict[int, list[DriftFinding]] = {}
            for finding in findings:
                by_mailbox.setdefault(finding.mailbox_id, []).append(finding)
            tasks = [_repair_mailbox(group, actor, reason) for group in by_mailbox.values()]
            audit_record(
                actor=actor, action="writeback.drift.bulk_repair", object_type="writeback.driftfinding",
                object_id=f"{len(ids)} findings",
                after={"finding_ids": ids, "task_ids": [task.pk for task in tasks]}, reason=reason,
            )  # fmt: skip
            return tasks
    except DriftError as exc:
        _denied(actor=actor, finding_ids=ids, reason=str(exc))
        raise
    except WritebackError as exc:
        raise DriftError(str(exc)) from exc


def drift_auto_repair(*, finding_ids: list[int]) -> list[WritebackTask]:
    """DRIFT_AUTO_REPAIR: the scan repairs what it found (actor: the system), one task per mailbox."""
    with transaction.atomic():
        findings = list(
            DriftFinding.objects.select_for_update(of=("self",)).select_related("mailbox")
            .filter(pk__in=finding_ids, resolved_at__isnull=True, repair_task__isnull=True)
            .exclude(mailbox__ad_guid=None).order_by("mailbox_id", "pk")
        )  # fmt: skip
        by_mailbox: dict[int, list[DriftFinding]] = {}
        for finding in findings:
            by_mailbox.setdefault(finding.mailbox_id, []).append(finding)
        return [_repair_mailbox(group, None, "DRIFT_AUTO_REPAIR is on") for group in by_mailbox.values()]


def scan_mode_due(now: dt.datetime | None = None) -> tuple[str, str]:
    """The scan due now: a full one when none has completed within DRIFT_FULL_SCAN_INTERVAL_HOURS (or none has
    completed at all), else an incremental one; and why, in words for the audit log."""
    now = now or timezone.now()
    hours = int(settings.DRIFT_FULL_SCAN_INTERVAL_HOURS)
    last_full = (
        DriftScan.objects.filter(state=DriftScan.State.DONE, mode=DriftScan.Mode.FULL).order_by("-finished_at").first()
    )
    if last_full is None:
        return DriftScan.Mode.FULL, "no full drift scan has completed yet"
    if hours <= 0 or last_full.finished_at <= now - dt.timedelta(hours=hours):
        return DriftScan.Mode.FULL, f"the last full scan (#{last_full.pk}) is older than {hours} h"
    return DriftScan.Mode.INCREMENTAL, f"a full scan (#{last_full.pk}) completed within {hours} h"


def drift_scan_request(*, actor: User | None, mode: str | None = None, enqueue_job: bool = True) -> DriftScan:
    """Queue a drift scan (one at a time), audited as ``writeback.drift_scan.requested``. ``mode`` None: the mode
    due (``scan_mode_due``). ``actor`` None is the schedule or the command line."""
    if actor is not None:
        refusal = drift_scan_refusal(actor)
        if refusal:
            raise DriftError(refusal)
    why = ""
    if mode is None:
        mode, why = scan_mode_due()
    try:
        with transaction.atomic():
            running = DriftScan.objects.select_for_update().filter(state__in=DriftScan.OPEN_STATES).first()
            if running is not None:
                raise DriftError(f"{running} is already {running.get_state_display().lower()}.")
            scan = DriftScan.objects.create(mode=mode, requested_by=actor)
            audit_record(
                actor=actor, action="writeback.drift_scan.requested", obj=scan, after=scan.audit_snapshot(), reason=why
            )
            if enqueue_job:
                transaction.on_commit(partial(drift_scan_enqueue, scan.pk))
    except IntegrityError as exc:  # another scan was requested at the same instant
        raise DriftError("A drift scan is already queued.") from exc
    return scan


def drift_scan_enqueue(scan_id: int) -> None:
    """Queue a queued scan's job (after the commit) and note its id on the scan."""
    job_id = enqueue(DRIFT_SCAN_JOB, scan_id, job_timeout=SCAN_JOB_TIMEOUT)
    if job_id is not None:  # None: Redis was unreachable; the scan stays queued and the sweep queues it later
        DriftScan.objects.filter(pk=scan_id).update(job_id=job_id)
