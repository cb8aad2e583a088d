"""Switching on the tenant default (exchange-facts §1.9), guarded: a request with a reason, then two approvers.

``Set-OrganizationConfig -ExchangeAttributesCloudManagedByDefault`` makes every user synced from then on arrive
without Exchange attributes and get a cloud-managed mailbox. Microsoft says not to switch it on while recipients are
still created on-premises or before every on-premises mailbox has moved, and its opposite does not undo it for the
users already affected: only Microsoft Support can (§1.9). So:

- An administrator (tenant-wide, as every portal_configure grant is) asks, with a reason, while no blocker holds.
- Two approvers other than the requester, each holding the approver role tenant-wide (the switch is tenant-wide, so an
  approver limited to OUs cannot answer for it), each typing the tenant's name. The second approval queues the job.
- The blockers are measured by the caller (writeback.tenant_default: some live in the writeback's rows, which soa does
  not read) and handed in; every service refuses while any holds, and the job measures them again before its call.

Each step writes its audit event in its own transaction. The job's own steps (claim, the call, finish or fail) are in
writeback.jobs.tenant_default, on the common lifecycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.models import User
from portal.roles import Action, may, scope_bases
from soa.choices import TENANT_DEFAULT_OPEN_STATES, TenantDefaultState
from soa.jobs import TENANT_DEFAULT_JOB, enqueue
from soa.models import TENANT_DEFAULT_APPROVALS, TenantDefaultApproval, TenantDefaultRequest
from soa.services import Refusal, SoaError, clean_text, refuse

# What the page and every refusal say about going back (exchange-facts §1.9).
REVERT_NOTE = (
    "Switching it off again (Set-OrganizationConfig -ExchangeAttributesServerManagedByDefault) changes the default "
    "only for users synced afterwards: the users synced while it was on stay cloud-managed, and only Microsoft "
    "Support can change them back (exchange-facts §1.9)."
)


@dataclass(frozen=True)
class Blocker:
    """One condition under which the default must not be switched on, as counted now."""

    key: str
    label: str
    count: int
    evidence: str  # a URL: the page that lists what was counted
    note: str = ""

    @property
    def holds(self) -> bool:
        return self.count > 0


def blockers_refusal(blockers: Sequence[Blocker]) -> Refusal | None:
    """Why the default cannot be switched on now, naming each blocker that holds; None when none does."""
    holding = [blocker for blocker in blockers if blocker.holds]
    if not holding:
        return None
    named = "; ".join(f"{blocker.label}: {blocker.count:,}" for blocker in holding)
    return Refusal(f"The tenant default cannot be switched on while this holds: {named}.", Refusal.RULE)


def may_approve(user: User | None) -> bool:
    """Whether ``user`` holds the approver's action tenant-wide (an approver limited to OUs may not answer for the
    tenant)."""
    return may(user, Action.WAVE_APPROVE) and scope_bases(user, Action.WAVE_APPROVE) is None


def request_refusal(actor: User | None) -> Refusal | None:
    if not may(actor, Action.PORTAL_CONFIGURE):
        return Refusal("Only an administrator may ask for the tenant default to be switched on.", Refusal.ROLE)
    if TenantDefaultRequest.objects.filter(state__in=TENANT_DEFAULT_OPEN_STATES).exists():
        return Refusal("A request to switch on the tenant default is already open; see it below.", Refusal.STATE)
    return None


@transaction.atomic
def tenant_default_request_create(
    *,
    actor: User,
    reason: str,
    tenant_name: str,
    property_name: str,
    enabled: bool | None,
    blockers: Sequence[Blocker],
) -> TenantDefaultRequest:
    """Ask for the default to be switched on. ``tenant_name`` is the name Exchange gives the tenant and ``enabled``
    the default it shows (both read now by the caller); each approver must type the name."""
    refuse(request_refusal(actor))
    if enabled:
        raise SoaError("Exchange Online already shows the tenant default switched on; there is nothing to ask for.")
    text = clean_text(reason)
    if not text:
        raise SoaError("Give the reason for switching on the tenant default: the approvers and the audit log read it.")
    if not tenant_name:
        raise SoaError("The tenant's name could not be read from Exchange Online; try again once it answers.")
    refuse(blockers_refusal(blockers))
    try:
        with transaction.atomic():
            request = TenantDefaultRequest.objects.create(
                tenant_name=tenant_name, property_name=property_name, reason=text, requested_by=actor,
                blockers_at_request=[asdict(blocker) for blocker in blockers],
            )  # fmt: skip
    except IntegrityError as error:  # another administrator's request won the race
        raise SoaError("A request to switch on the tenant default is already open; see it below.") from error
    audit_record(actor=actor, action="soa.tenant_default.requested", obj=request, after=request.audit_snapshot(),
                 reason=text)  # fmt: skip
    return request


def approval_refusal(actor: User | None, request: TenantDefaultRequest) -> Refusal | None:
    """Why ``actor`` may not approve ``request`` now; None when they may."""
    if not may_approve(actor):
        return Refusal(
            "Only an approver whose role covers the whole tenant may approve the tenant default.", Refusal.ROLE
        )
    if request.state != TenantDefaultState.PENDING:
        return Refusal(f"This request is {request.get_state_display().lower()}; it takes no more approvals.",
                       Refusal.STATE)  # fmt: skip
    if request.requested_by_id == actor.pk:
        return Refusal("You asked for this switch; two other approvers must approve it.", Refusal.ACTOR)
    if request.approvals.filter(approver=actor).exists():
        return Refusal("You have already approved this request; another approver must give the second approval.",
                       Refusal.ACTOR)  # fmt: skip
    return None


def name_matches(typed: str, tenant_name: str) -> bool:
    """The typed confirmation names the tenant: the same name, whatever its letter case and surrounding space."""
    return bool(typed.strip()) and typed.strip().casefold() == tenant_name.strip().casefold()


@transaction.atomic
def tenant_default_approve(
    *, request_id: int, actor: User, typed_name: str, blockers: Sequence[Blocker]
) -> TenantDefaultRequest:
    """One approval, confirmed by typing the tenant's name. The last one needed queues the job (after commit)."""
    request = TenantDefaultRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None:
        raise SoaError(f"There is no tenant default request #{request_id}.", Refusal.STATE)
    refuse(approval_refusal(actor, request))
    if not name_matches(typed_name or "", request.tenant_name):
        raise SoaError(
            f"The name typed does not match the tenant's name, {request.tenant_name}: nothing was approved. Type it "
            "exactly to confirm that you mean this tenant."
        )
    refuse(blockers_refusal(blockers))
    before = request.audit_snapshot()
    TenantDefaultApproval.objects.create(request=request, approver=actor, typed_name=typed_name.strip())
    if request.approvals.count() >= TENANT_DEFAULT_APPROVALS:
        request.state = TenantDefaultState.QUEUED
        request.queued_at = timezone.now()
        request.save(update_fields=["state", "queued_at"])
        transaction.on_commit(lambda: tenant_default_enqueue(request.pk))
    audit_record(actor=actor, action="soa.tenant_default.approved", obj=request, before=before,
                 after=request.audit_snapshot())  # fmt: skip
    return request


@transaction.atomic
def tenant_default_retry(*, request_id: int, actor: User, blockers: Sequence[Blocker]) -> TenantDefaultRequest:
    """Queue a FAILED request's job again (its approvals stand; the job reads before it writes, so a call that had
    gone through is not sent twice)."""
    refuse(None if may(actor, Action.PORTAL_CONFIGURE) else Refusal("Only an administrator may retry.", Refusal.ROLE))
    request = TenantDefaultRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None or request.state != TenantDefaultState.FAILED:
        raise SoaError("Only a failed request can be tried again.", Refusal.STATE)
    refuse(blockers_refusal(blockers))
    before = request.audit_snapshot()
    request.state, request.queued_at = TenantDefaultState.QUEUED, timezone.now()
    request.save(update_fields=["state", "queued_at"])
    transaction.on_commit(lambda: tenant_default_enqueue(request.pk))
    audit_record(actor=actor, action="soa.tenant_default.retried", obj=request, before=before,
                 after=request.audit_snapshot())  # fmt: skip
    return request


@transaction.atomic
def tenant_default_cancel(*, request_id: int, actor: User, reason: str) -> TenantDefaultRequest:
    """Withdraw a request that has not been carried out (awaiting approval, or failed)."""
    refuse(None if may(actor, Action.PORTAL_CONFIGURE) else Refusal("Only an administrator may cancel.", Refusal.ROLE))
    request = TenantDefaultRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None or TenantDefaultState.CANCELLED not in TenantDefaultRequest.TRANSITIONS[request.state]:
        raise SoaError("Only a request awaiting approval, or one that failed, can be cancelled.", Refusal.STATE)
    text = clean_text(reason)
    before = request.audit_snapshot()
    request.state, request.cancelled_by, request.finished_at = TenantDefaultState.CANCELLED, actor, timezone.now()
    request.save(update_fields=["state", "cancelled_by", "finished_at"])
    audit_record(actor=actor, action="soa.tenant_default.cancelled", obj=request, before=before,
                 after=request.audit_snapshot(), reason=text)  # fmt: skip
    return request


def tenant_default_enqueue(request_id: int) -> None:
    """Queue the job of a QUEUED request (after commit) and keep its RQ id on the row."""
    job_id = enqueue(TENANT_DEFAULT_JOB, request_id, job_timeout=900)
    if job_id:
        TenantDefaultRequest.objects.filter(pk=request_id, state=TenantDefaultState.QUEUED).update(job_id=job_id)
