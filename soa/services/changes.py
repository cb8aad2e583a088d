"""Help desk's change requests: making one (scoped, validated, idempotent), and approving, rejecting or cancelling it.

Each service runs in one transaction with its audit event (``soa.change.requested``, ``.approved``, ``.rejected``,
``.cancelled``, ``.expired``). An attempt on a mailbox outside the actor's scope, or without the role, is refused
and recorded as ``soa.change.denied`` in a transaction of its own, so the record survives the refusal: a crafted
request is exactly what the audit log must keep.

Approval reuses the waves' rules (soa.services.approvals) but not their code: a wave has submission rounds, a
quorum, members chosen by several people and warnings to acknowledge, none of which a one-mailbox edit has. The
rules that carry over are written here the same way: four-eyes (the requester never decides), an approver
(``wave_approve``, "approve ... sensitive changes") whose scope covers the mailbox, and an expiry
(CHANGE_APPROVAL_DAYS). The decision is kept on the request itself (``decided_by``), as it is a single one.

A request ready to apply is queued after commit by the apply job's dotted name (soa.jobs.change_request_enqueue),
which does nothing while CHANGE_APPLY_ENABLED is off.
"""

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.correlation import correlation_scope, get_correlation_id, new_correlation_id
from portal.limits import REASON_MAX_LENGTH, too_long
from portal.models import User
from portal.roles import Action, may, scope_filter
from soa import jobs
from soa.attributes import BY_EXO, EDITABLE_ATTRIBUTES
from soa.choices import (
    CHANGE_OPEN_STATES,
    CHANGE_READY_STATES,
    CHANGE_TRANSITIONS,
    ROUTE_BY_AUTHORITY,
    Authority,
    ChangeOperation,
    ChangeState,
)
from soa.models import ChangeRequest, Mailbox, MailboxAddress, RemovedAddress
from soa.selectors import accepted_domains_known
from soa.services import Refusal, SoaError, refuse
from soa.validation import EMAIL_ADDRESSES, FieldError, Lookups, parse_address, requested_addresses, validate_change
from soa.values import same_value

IDEMPOTENCY_KEY_MAX = 64


class ChangeValidationError(SoaError):
    """The edit has errors; ``errors`` name each field, and nothing was written."""

    def __init__(self, errors: Iterable[FieldError]):
        self.errors = tuple(errors)
        super().__init__(" ".join(error.message for error in self.errors))


class ChangeConflict(SoaError):
    """The mailbox changed since the page the edit was made on; ``current`` holds its editable values now."""

    def __init__(self, message: str, *, current: dict[str, Any], version: int):
        self.current = current
        self.version = version
        super().__init__(message)


# -- settings ------------------------------------------------------------------------------------------------------


def approval_operations() -> frozenset[str]:
    """The operation kinds that wait for an approver (CHANGE_APPROVAL_OPERATIONS)."""
    names = frozenset(str(name).strip() for name in settings.CHANGE_APPROVAL_OPERATIONS if str(name).strip())
    unknown = sorted(names - set(ChangeOperation.values))
    if unknown:
        raise ImproperlyConfigured(_unknown_operations(unknown))
    return names


def _unknown_operations(unknown: list[str]) -> str:
    return f"CHANGE_APPROVAL_OPERATIONS names unknown operations: {', '.join(unknown)} (known: " + (
        ", ".join(ChangeOperation.values) + ")."
    )


def check_settings(**kwargs) -> list[checks.CheckMessage]:
    """System check (soa.E001): a misspelt operation in CHANGE_APPROVAL_OPERATIONS would let that edit skip approval."""
    unknown = sorted({str(n).strip() for n in settings.CHANGE_APPROVAL_OPERATIONS} - set(ChangeOperation.values) - {""})
    if not unknown:
        return []
    return [checks.Error(_unknown_operations(unknown), id="soa.E001")]


# -- reading what validation needs -----------------------------------------------------------------------------------


def editable_values(mailbox: Mailbox) -> dict[str, Any]:
    """The authoritative side's values of the editable attributes: what an edit starts from."""
    values = mailbox.exo_values if mailbox.authority == Authority.CLOUD else mailbox.ad_values
    return {attribute.exo: values.get(attribute.exo) for attribute in EDITABLE_ATTRIBUTES}


def mailbox_name(mailbox: Mailbox) -> str:
    return f"{mailbox.display_name} ({mailbox.upn})" if mailbox.display_name else mailbox.upn


def change_lookups(*, actor: User, mailbox: Mailbox, operations: Any, now: dt.datetime) -> Lookups:
    """Read, for the addresses the operations add, who else uses them and whether they are cooling down."""
    keys = requested_addresses(operations)
    used: dict[tuple[str, str], int] = {}
    pending: dict[tuple[str, str], int] = {}
    cooling: dict[tuple[str, str], dt.datetime] = {}
    if keys:
        addresses = sorted({address for _, address in keys})
        for prefix, address, owner in (
            MailboxAddress.objects.filter(address__in=addresses)
            .exclude(mailbox=mailbox)
            .values_list("prefix", "address", "mailbox_id")
        ):
            if (prefix, address) in keys:
                used.setdefault((prefix, address), owner)
        # An address another open request is adding is taken too: two requests must not both get it.
        for owner, requested in (
            ChangeRequest.objects.filter(state__in=CHANGE_OPEN_STATES)
            .exclude(mailbox=mailbox)
            .values_list("mailbox_id", "operations")
        ):
            for key in requested_addresses(requested) & keys:
                pending.setdefault(key, owner)
        window = dt.timedelta(hours=settings.ADDRESS_COOLDOWN_HOURS)
        for prefix, address, removed_at in (
            RemovedAddress.objects.filter(address__in=addresses, removed_at__gt=now - window)
            .exclude(mailbox=mailbox)
            .values_list("prefix", "address", "removed_at")
        ):
            if (prefix, address) in keys:
                free_from = removed_at + window
                cooling[(prefix, address)] = max(free_from, cooling.get((prefix, address), free_from))
    owners = set(used.values()) | set(pending.values())
    visible = {
        m.pk: mailbox_name(m)
        for m in Mailbox.objects.filter(scope_filter(actor, Action.MAILBOX_VIEW, "dn_norm"), pk__in=owners).only(
            "pk", "display_name", "upn"
        )
    }
    used_by = {key: visible.get(owner, "another mailbox") for key, owner in used.items()}
    for key, owner in pending.items():
        used_by.setdefault(key, f"{visible.get(owner, 'another mailbox')} (in a change not yet applied)")
    return Lookups(now=now, accepted_domains=accepted_domains_known(now=now), used_by=used_by, cooling_down=cooling)


# -- refusals --------------------------------------------------------------------------------------------------------


def _in_scope(user: User | None, action: Action, mailbox: Mailbox) -> bool:
    """Whether ``action`` is granted to ``user`` on the mailbox's OU: the same query the mailbox lists use."""
    return Mailbox.objects.filter(scope_filter(user, action, "dn_norm"), pk=mailbox.pk).exists()


def _deny(*, actor: User | None, attempted: str, obj: Any, mailbox: Mailbox, message: str, detail: Any = None) -> None:
    """Record a refused attempt (role or scope) in its own transaction, then refuse it."""
    with transaction.atomic():
        audit_record(
            actor=actor, action="soa.change.denied", obj=obj, reason=message,
            after={"attempted": attempted, "mailbox": mailbox.pk, "mailbox_dn": mailbox.dn, "detail": detail},
        )  # fmt: skip
    raise SoaError(message)


def _transition_refusal(request: ChangeRequest, target: str, verb: str) -> Refusal | None:
    if target in CHANGE_TRANSITIONS[request.state]:
        return None
    return Refusal(
        f"Change request #{request.pk} is {request.get_state_display().lower()}; it can no longer be {verb}.",
        Refusal.STATE,
    )


def change_decision_refusal(
    user: User | None, request: ChangeRequest, *, approve: bool = True, now: dt.datetime | None = None
) -> Refusal | None:
    """Why ``user`` may not approve (or reject, ``approve=False``) ``request`` now, or None when they may.

    The waves' rules for a single mailbox: the approver role, a scope covering the mailbox, four-eyes, expiry."""
    if not may(user, Action.WAVE_APPROVE):
        return Refusal("Your roles do not allow approving or rejecting changes.", Refusal.ROLE)
    refusal = _transition_refusal(request, ChangeState.APPROVED if approve else ChangeState.REJECTED,
                                  "approved" if approve else "rejected")  # fmt: skip
    if refusal:
        return refusal
    if request.requested_by_id == user.pk:
        return Refusal("You asked for this change; another approver must decide on it.")
    if approve and request.approval_expired(now):
        return Refusal(
            f"Change request #{request.pk} waited for approval until {request.approval_expires_at:%Y-%m-%d %H:%M} "
            "UTC and has expired; the change must be asked for again."
        )
    if not _in_scope(user, Action.WAVE_APPROVE, request.mailbox):
        return _scope_refusal(
            "This mailbox is outside your approval scope; an approver whose scope covers it must decide."
        )
    return None


def _reason(reason: str | None) -> str:
    """A decision's reason, stripped; SoaError when it is longer than REASON_MAX_LENGTH (nothing is written)."""
    reason = (reason or "").strip()
    message = too_long(reason, REASON_MAX_LENGTH, "The reason")
    if message:
        raise SoaError(message)
    return reason


def _scope_refusal(message: str) -> Refusal:
    """A refusal by OU scope: explained on a page like any rule, and audited as a denied attempt by the services."""
    refusal = Refusal(message)
    refusal.out_of_scope = True
    return refusal


def change_cancel_refusal(user: User | None, request: ChangeRequest) -> Refusal | None:
    """Why ``user`` may not cancel ``request``: whoever may edit the mailbox may withdraw an edit not yet applied, and
    whoever asked for it in a bulk edit (an operator holds ``bulk_edit`` without ``mailbox_edit``)."""
    own_bulk = (
        user is not None and request.requested_by_id == user.pk and _in_scope(user, Action.BULK_EDIT, request.mailbox)
    )
    if not (own_bulk or _in_scope(user, Action.MAILBOX_EDIT, request.mailbox)):
        return Refusal("Your roles do not allow editing this mailbox.", Refusal.ROLE)
    return _transition_refusal(request, ChangeState.CANCELLED, "cancelled")


# -- services --------------------------------------------------------------------------------------------------------


def _plain(value: Any, limit: int = 50) -> Any:
    """What a refused request asked for, fit for the audit log whatever it holds (a crafted one may hold anything)."""
    if isinstance(value, list | tuple):
        value = list(value)[:limit]
    return json.loads(json.dumps(value, default=str))


def _clean_key(idempotency_key: str) -> str:
    key = (idempotency_key or "").strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise SoaError("The form is missing its submission key; reload the page and make the change again.")
    return key


def _expire(request: ChangeRequest, now: dt.datetime) -> None:
    """Close a request whose approval window passed (inside the caller's transaction, with its audit event)."""
    refuse(_transition_refusal(request, ChangeState.EXPIRED, "expired"))
    before = request.audit_snapshot()
    request.state = ChangeState.EXPIRED
    request.finished_at = now
    request.save(update_fields=["state", "finished_at", "updated_at"])
    audit_record(actor=None, action="soa.change.expired", obj=request, before=before, after=request.audit_snapshot(),
                 reason="Nobody approved it within its approval window.")  # fmt: skip
    jobs.change_batch_poke(request_id=request.pk)


def _enqueue_after_commit(request: ChangeRequest) -> None:
    if request.state in CHANGE_READY_STATES:
        request_id = request.pk
        transaction.on_commit(lambda: jobs.change_request_enqueue(request_id=request_id))


def change_request_create(
    *,
    actor: User,
    mailbox_id: int,
    operations: Any,
    reason: str,
    base_version: int,
    idempotency_key: str,
    batch_id: int | None = None,
    undoes: list[int] | None = None,
) -> ChangeRequest:
    """Ask for an edit of one mailbox. Refuses, writing nothing: an actor without ``mailbox_edit`` on the mailbox's
    OU (``bulk_edit`` for a bulk edit's line; audited as denied); a page older than the mailbox's values
    (ChangeConflict, with the current values); a mailbox with another open request; a missing reason when one is
    required; any validation error (ChangeValidationError, every error by field). The same ``idempotency_key`` again
    returns the first request.

    The request waits for approval when it holds an operation of CHANGE_APPROVAL_OPERATIONS; otherwise it is ready
    to apply and its job is queued after commit. ``batch_id`` names the bulk edit a request is made for, in its event;
    ``undoes`` the audit events of the edits it undoes (soa.services.undo), which an administrator may ask for too.
    """
    key = _clean_key(idempotency_key)
    mailbox = Mailbox.objects.filter(pk=mailbox_id).first()
    if mailbox is None:
        raise SoaError(f"There is no mailbox #{mailbox_id} you may edit.")
    # A bulk edit's line is the uploader's request under bulk_edit (operators hold it without mailbox_edit).
    allowed = _in_scope(actor, Action.BULK_EDIT if batch_id is not None else Action.MAILBOX_EDIT, mailbox) or (
        undoes is not None and may(actor, Action.PORTAL_CONFIGURE)
    )
    if not allowed:
        # The same words as for a missing mailbox: a crafted request learns nothing about what exists.
        _deny(actor=actor, attempted="create", obj=mailbox, mailbox=mailbox, detail=_plain(operations),
              message=f"There is no mailbox #{mailbox_id} you may edit.")  # fmt: skip
    needs_approval_for = approval_operations()
    with transaction.atomic():
        mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
        replay = ChangeRequest.objects.filter(idempotency_key=key).first()
        if replay is not None:
            if replay.requested_by_id == actor.pk and replay.mailbox_id == mailbox.pk:
                return replay  # the same form sent twice: one request
            raise SoaError("This form was already used for another change; reload the page and make the change again.")
        now = timezone.now()
        current = current_values_for_edit(mailbox, base_version)
        _close_or_refuse_open_request(mailbox, now)
        reason = (reason or "").strip()
        known = change_lookups(actor=actor, mailbox=mailbox, operations=operations, now=now)
        outcome = validate_change(current, operations, known)
        errors = list(outcome.errors)
        if settings.CHANGE_REASON_REQUIRED and not reason:
            errors.append(FieldError("reason", "Give a reason for this change; it goes in the history."))
        if too_long(reason, REASON_MAX_LENGTH, "The reason"):
            errors.append(FieldError("reason", too_long(reason, REASON_MAX_LENGTH, "The reason")))
        if errors:
            raise ChangeValidationError(errors)
        needs_approval = any(op["op"] in needs_approval_for for op in outcome.operations)
        request = ChangeRequest.objects.create(
            mailbox=mailbox, requested_by=actor, created_at=now, operations=list(outcome.operations),
            before=outcome.before, desired=outcome.desired, base_version=mailbox.version, reason=reason,
            state=ChangeState.PENDING_APPROVAL if needs_approval else ChangeState.VALIDATED,
            route=ROUTE_BY_AUTHORITY[mailbox.authority], needs_approval=needs_approval,
            approval_expires_at=now + dt.timedelta(days=settings.CHANGE_APPROVAL_DAYS) if needs_approval else None,
            correlation_id=get_correlation_id() or new_correlation_id(), idempotency_key=key,
        )  # fmt: skip
        # Outside a web request (the shell, a bulk job) the id is new here: the event carries it too, so the
        # request, its Exchange write and its AD write share one id in the audit log.
        with correlation_scope(request.correlation_id):
            after = request.audit_snapshot() if batch_id is None else {**request.audit_snapshot(), "batch": batch_id}
            if undoes is not None:
                after["undoes"] = list(undoes)
            audit_record(actor=actor, action="soa.change.requested", obj=request, after=after, reason=reason)
        _enqueue_after_commit(request)
    return request


def current_values_for_edit(mailbox: Mailbox, base_version: int) -> dict[str, Any]:
    """The mailbox's editable values, once it is certain an edit based on ``base_version`` may be checked against
    them: a stale page raises ChangeConflict carrying the current values, a missing authoritative side SoaError.
    Shared by change_request_create and the read-only preview, so the preview never promises what creation refuses."""
    current = editable_values(mailbox)
    if base_version != mailbox.version:
        raise ChangeConflict(
            f"{mailbox_name(mailbox)} changed since you opened it; nothing was saved. Check its current "
            "values and make your change again.",
            current=current, version=mailbox.version,
        )  # fmt: skip
    refuse_if_side_missing(mailbox)
    return current


def refuse_if_side_missing(mailbox: Mailbox) -> None:
    if mailbox.authority == Authority.CLOUD and not mailbox.in_exo:
        raise SoaError("Exchange Online holds this mailbox's attributes, but the last inventory did not find it there; "
                       "it cannot be edited until it is found again.")  # fmt: skip
    if mailbox.authority == Authority.ON_PREM and not mailbox.in_ad:
        raise SoaError("Active Directory holds this mailbox's attributes, but the last inventory did not find the "
                       "user there; it cannot be edited until it is found again.")  # fmt: skip


def _close_or_refuse_open_request(mailbox: Mailbox, now: dt.datetime) -> None:
    """One open request per mailbox: an expired one waiting for approval is closed; any other refuses the edit."""
    for open_request in ChangeRequest.objects.select_for_update().filter(mailbox=mailbox, state__in=CHANGE_OPEN_STATES):
        if open_request.state == ChangeState.PENDING_APPROVAL and open_request.approval_expired(now):
            _expire(open_request, now)
            continue
        raise SoaError(
            f"Change request #{open_request.pk} for this mailbox is {open_request.get_state_display().lower()}; "
            "wait until it is finished, or cancel it, before making another change."
        )


def _locked_request(request_id: int) -> ChangeRequest:
    request = ChangeRequest.objects.select_for_update().select_related("mailbox").filter(pk=request_id).first()
    if request is None:
        raise SoaError(f"There is no change request #{request_id}.")
    return request


def _refuse_or_deny(actor: User | None, request: ChangeRequest, refusal: Refusal | None, attempted: str) -> None:
    """Refuse; one refused for role or scope is audited as denied first (its transaction is separate)."""
    if refusal is None:
        return
    if refusal.kind == Refusal.ROLE or getattr(refusal, "out_of_scope", False):
        _deny(actor=actor, attempted=attempted, obj=request, mailbox=request.mailbox, message=str(refusal))
    refuse(refusal)


def change_request_approve(*, actor: User, request_id: int, reason: str = "") -> ChangeRequest:
    """Approve a request waiting for approval; it becomes APPROVED and its job is queued after commit.

    Refused when the attributes it changes no longer hold the values it was made from (someone else changed them
    since): the approver would be approving a preview that is no longer true."""
    request = ChangeRequest.objects.select_related("mailbox").filter(pk=request_id).first()
    if request is None:
        raise SoaError(f"There is no change request #{request_id}.")
    _refuse_or_deny(actor, request, change_decision_refusal(actor, request), "approve")
    with transaction.atomic():
        request = _locked_request(request_id)
        refuse(change_decision_refusal(actor, request))
        current = editable_values(Mailbox.objects.select_for_update().get(pk=request.mailbox_id))
        changed = [
            name for name, value in request.before.items() if not same_value(BY_EXO[name], current.get(name), value)
        ]
        if changed:
            raise ChangeConflict(
                f"{mailbox_name(request.mailbox)} changed since this request was made ({', '.join(changed)}); "
                "reject it, and the change can be asked for again from the current values.",
                current=current, version=request.mailbox.version,
            )  # fmt: skip
        before = request.audit_snapshot()
        reason = _reason(reason)
        request.state = ChangeState.APPROVED
        request.decided_by, request.decided_at, request.decision_reason = actor, timezone.now(), reason
        request.save(update_fields=["state", "decided_by", "decided_at", "decision_reason", "updated_at"])
        audit_record(actor=actor, action="soa.change.approved", obj=request, before=before,
                     after=request.audit_snapshot(), reason=reason)  # fmt: skip
        _enqueue_after_commit(request)
    return request


def change_request_reject(*, actor: User, request_id: int, reason: str) -> ChangeRequest:
    """Reject a request waiting for approval, with the reason the requester will read (an expired one too)."""
    request = ChangeRequest.objects.select_related("mailbox").filter(pk=request_id).first()
    if request is None:
        raise SoaError(f"There is no change request #{request_id}.")
    _refuse_or_deny(actor, request, change_decision_refusal(actor, request, approve=False), "reject")
    reason = _reason(reason)
    if not reason:
        raise SoaError("Give a reason for rejecting the change; the person who asked for it needs it.")
    with transaction.atomic():
        request = _locked_request(request_id)
        refuse(change_decision_refusal(actor, request, approve=False))
        before = request.audit_snapshot()
        now = timezone.now()
        request.state = ChangeState.REJECTED
        request.decided_by, request.decided_at, request.decision_reason = actor, now, reason
        request.finished_at = now
        request.save(update_fields=["state", "decided_by", "decided_at", "decision_reason", "finished_at",
                                    "updated_at"])  # fmt: skip
        audit_record(actor=actor, action="soa.change.rejected", obj=request, before=before,
                     after=request.audit_snapshot(), reason=reason)  # fmt: skip
        jobs.change_batch_poke(request_id=request.pk)
    return request


def change_request_cancel(*, actor: User, request_id: int, reason: str = "") -> ChangeRequest:
    """Withdraw a request not yet being applied (waiting for approval, approved or ready): nothing is written."""
    request = ChangeRequest.objects.select_related("mailbox").filter(pk=request_id).first()
    if request is None:
        raise SoaError(f"There is no change request #{request_id}.")
    _refuse_or_deny(actor, request, change_cancel_refusal(actor, request), "cancel")
    with transaction.atomic():
        request = _locked_request(request_id)
        refuse(change_cancel_refusal(actor, request))
        before = request.audit_snapshot()
        reason = _reason(reason)
        request.state = ChangeState.CANCELLED
        request.finished_at = timezone.now()
        request.save(update_fields=["state", "finished_at", "updated_at"])
        audit_record(actor=actor, action="soa.change.cancelled", obj=request, before=before,
                     after=request.audit_snapshot(), reason=reason)  # fmt: skip
        jobs.change_batch_poke(request_id=request.pk)
    return request


def removed_addresses(request: ChangeRequest) -> list[tuple[str, str]]:
    """The addresses (type and address, lower case) the request takes off its mailbox."""
    before = {_key(raw) for raw in request.before.get(EMAIL_ADDRESSES) or []}
    after = {_key(raw) for raw in request.desired.get(EMAIL_ADDRESSES) or []}
    return sorted(before - after)


def _key(raw: str) -> tuple[str, str]:
    proxy, _ = parse_address(raw)
    if proxy is not None:
        return proxy.key
    prefix, sep, address = raw.partition(":")
    return (prefix.lower(), address.lower()) if sep else ("smtp", raw.lower())


def removed_addresses_record(*, request: ChangeRequest, at: dt.datetime) -> list[RemovedAddress]:
    """Start the cool-down of the addresses an applied request removed. For the apply job, inside the transaction
    that records the request APPLIED (so the cool-down starts exactly when the removal is recorded)."""
    return RemovedAddress.objects.bulk_create(
        RemovedAddress(
            mailbox_id=request.mailbox_id, prefix=prefix, address=address, removed_at=at, change_request=request
        )  # fmt: skip
        for prefix, address in removed_addresses(request)
    )
