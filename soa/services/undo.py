"""Undo from history: a past edit of a mailbox (an applied change request, as the audit log recorded it), or every
edit one correlation id applied, becomes a NEW change request that puts the earlier values back.

History is never rewritten: the undo is an edit like any other, made by change_request_create (scope, validation,
approval rules, idempotency, its own ``soa.change.requested`` event), and the undo itself is recorded as
``soa.change.undo_requested`` naming the events it undoes. The operations are worked out from the mailbox's values
NOW to the values before the edit, so an undo restores those values even where the mailbox moved on since; where it
did (a value differs from what the edit left), the undo is a conflict the person must acknowledge first.

Who may undo: whoever may edit the mailbox (``mailbox_edit`` in scope), or an administrator (``portal_configure``,
tenant-wide), who holds no edit role but answers for the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal.audit import audit_record
from portal.models import AuditEvent, User
from portal.roles import Action, may, scope_filter
from soa.attributes import BY_EXO
from soa.choices import ChangeOperation
from soa.models import ChangeRequest, Mailbox
from soa.services import SoaError
from soa.services.changes import (
    IDEMPOTENCY_KEY_MAX,
    ChangeConflict,
    change_lookups,
    change_request_create,
    editable_values,
    mailbox_name,
)
from soa.validation import (
    CUSTOM_ATTRIBUTES,
    EMAIL_ADDRESSES,
    EXTENSION_ATTRIBUTES,
    HIDDEN,
    FieldError,
    validate_change,
)
from soa.values import same_value

# The event of an edit that took effect: what an undo starts from (a request never applied changed nothing).
UNDOABLE_ACTION = "soa.change.applied"
CHANGE_REQUEST = "soa.changerequest"
# An undo of a correlation id spans at most this many edits; more is a bulk edit, undone by another bulk edit.
MAX_EVENTS = 200


class UndoDenied(SoaError):
    """The actor may not undo an edit of one of the mailboxes (or it is gone): audited, as any refused attempt."""


@dataclass
class UndoPlan:
    """What undoing the edits of one mailbox would do: the values to restore, what the edits left, what the mailbox
    holds now, the operations from now to the restored values, and what validation says of them today."""

    mailbox: Mailbox
    events: list[AuditEvent]
    restore: dict[str, Any]
    edited: dict[str, Any]
    current: dict[str, Any]
    operations: list[dict[str, Any]]
    conflicts: list[str] = field(default_factory=list)
    errors: list[FieldError] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per attribute, for the confirm page."""
        return [
            {"attribute": name, "label": BY_EXO[name].label, "edited": shown(self.edited.get(name)),
             "current": shown(self.current.get(name)), "restore": shown(value), "conflict": name in self.conflicts}
            for name, value in self.restore.items()
        ]  # fmt: skip


def shown(value: Any) -> str:
    """A value as the confirm page writes it."""
    if value is None or value == "" or value == []:
        return "(empty)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def undo_events(*, event_id: int | None = None, correlation_id: str = "") -> list[AuditEvent]:
    """The applied edits an undo covers, oldest first: the one event, or every one of the correlation id. Raises
    SoaError when there is none (an event that is not an applied edit cannot be undone from here)."""
    events = AuditEvent.objects.filter(action=UNDOABLE_ACTION, object_type=CHANGE_REQUEST)
    if event_id is not None:
        events = events.filter(pk=event_id)
    elif correlation_id:
        events = events.filter(correlation_id=correlation_id)
    else:
        raise SoaError("Name the event or the correlation id to undo.")
    found = list(events.order_by("id")[: MAX_EVENTS + 1])
    if not found:
        what = f"event #{event_id}" if event_id is not None else f"correlation id {correlation_id}"
        raise SoaError(f"The audit log holds no applied edit for {what}; only an applied edit can be undone.")
    if len(found) > MAX_EVENTS:
        raise SoaError(f"This correlation id applied more than {MAX_EVENTS} edits; undo them with a bulk edit.")
    return found


def _mailbox_of(event: AuditEvent) -> int | None:
    mailbox = (event.after or {}).get("mailbox")
    return mailbox if isinstance(mailbox, int) else None


def undo_allowed(user: User | None, mailbox: Mailbox) -> bool:
    """Whether ``user`` may undo an edit of ``mailbox``: an administrator anywhere, help desk within its scope."""
    if may(user, Action.PORTAL_CONFIGURE):
        return True
    return Mailbox.objects.filter(scope_filter(user, Action.MAILBOX_EDIT, "dn_norm"), pk=mailbox.pk).exists()


def undoable_event_ids(user: User | None, events: list[AuditEvent]) -> set[int]:
    """The ids among ``events`` of the applied edits ``user`` may undo (for the links of a listing; one query)."""
    edits = {event.pk: _mailbox_of(event) for event in events if event.action == UNDOABLE_ACTION}
    edits = {pk: mailbox for pk, mailbox in edits.items() if mailbox is not None}
    if not edits:
        return set()
    if may(user, Action.PORTAL_CONFIGURE):
        return set(edits)
    editable = set(
        Mailbox.objects.filter(scope_filter(user, Action.MAILBOX_EDIT, "dn_norm"), pk__in=set(edits.values()))
        .values_list("pk", flat=True)
    )  # fmt: skip
    return {pk for pk, mailbox in edits.items() if mailbox in editable}


def undo_plans(*, actor: User, event_id: int | None = None, correlation_id: str = "") -> list[UndoPlan]:
    """One plan per mailbox the edits touched, in the order of their first edit. Raises SoaError when the actor may
    not undo one of them (the same words whether it exists or not), or when there is nothing to undo."""
    events = undo_events(event_id=event_id, correlation_id=correlation_id)
    by_mailbox: dict[int, list[AuditEvent]] = {}
    for event in events:
        mailbox_id = _mailbox_of(event)
        if mailbox_id is None:
            raise SoaError(f"Event #{event.pk} does not name its mailbox; it cannot be undone from here.")
        by_mailbox.setdefault(mailbox_id, []).append(event)
    mailboxes = Mailbox.objects.in_bulk(list(by_mailbox))
    plans = []
    for mailbox_id, edits in by_mailbox.items():
        mailbox = mailboxes.get(mailbox_id)
        if mailbox is None or not undo_allowed(actor, mailbox):
            raise UndoDenied(f"There is no mailbox #{mailbox_id} you may edit; this undo covers it.")
        plans.append(_plan(actor, mailbox, edits))
    return plans


def _plan(actor: User, mailbox: Mailbox, edits: list[AuditEvent]) -> UndoPlan:
    restore: dict[str, Any] = {}
    edited: dict[str, Any] = {}
    for event in edits:  # oldest first: the first edit's before is the value to go back to, the last's after is left
        before, desired = (event.after or {}).get("before") or {}, (event.after or {}).get("desired") or {}
        for name, value in before.items():
            if name in BY_EXO and BY_EXO[name].editable and name != "WindowsEmailAddress":
                restore.setdefault(name, value)
        for name, value in desired.items():
            if name in restore:
                edited[name] = value
    current = editable_values(mailbox)
    conflicts = [name for name in restore if not same_value(BY_EXO[name], current.get(name), edited.get(name))]
    operations = restoring_operations(current, restore)
    plan = UndoPlan(mailbox=mailbox, events=edits, restore=restore, edited=edited, current=current,
                    operations=operations, conflicts=conflicts)  # fmt: skip
    if operations:
        known = change_lookups(actor=actor, mailbox=mailbox, operations=operations, now=timezone.now())
        plan.errors = list(validate_change(current, operations, known).errors)
    return plan


def _proxy(raw: Any) -> tuple[str, str]:
    kind, sep, address = str(raw).partition(":")
    return (kind, address) if sep else ("SMTP", str(raw))


def restoring_operations(current: dict[str, Any], restore: dict[str, Any]) -> list[dict[str, Any]]:
    """The operations that take ``current`` to the values of ``restore`` (attributes it does not name are left as
    they are); [] when the mailbox already holds them."""
    operations: list[dict[str, Any]] = []
    for name, target in restore.items():
        now = current.get(name)
        if name == EMAIL_ADDRESSES:
            operations += _address_operations(now or [], target or [])
        elif name in CUSTOM_ATTRIBUTES:
            target = None if target in (None, "") else str(target)
            if target is None and now not in (None, ""):
                operations.append({"op": ChangeOperation.CLEAR_CUSTOM_ATTRIBUTE.value, "attribute": name})
            elif target is not None and target != now:
                operations.append({"op": ChangeOperation.SET_CUSTOM_ATTRIBUTE.value, "attribute": name,
                                   "value": target})  # fmt: skip
        elif name in EXTENSION_ATTRIBUTES:
            have, want = [str(v) for v in now or []], [str(v) for v in target or []]
            for value in have:
                if value.casefold() not in {v.casefold() for v in want}:
                    operations.append({"op": ChangeOperation.REMOVE_EXTENSION_VALUE.value, "attribute": name,
                                       "value": value})  # fmt: skip
            for value in want:
                if value.casefold() not in {v.casefold() for v in have}:
                    operations.append({"op": ChangeOperation.ADD_EXTENSION_VALUE.value, "attribute": name,
                                       "value": value})  # fmt: skip
        elif name == HIDDEN and bool(target) != bool(now):
            kind = ChangeOperation.HIDE_FROM_ADDRESS_LISTS if target else ChangeOperation.SHOW_IN_ADDRESS_LISTS
            operations.append({"op": kind.value})
    return operations


def _address_operations(current: list[Any], target: list[Any]) -> list[dict[str, Any]]:
    # The primary first (Exchange needs exactly one at every step the validation checks), then what to add, then
    # what to take off, so the old primary is already a plain alias when it is removed.
    have = {(kind.lower(), address.lower()): (kind, address) for kind, address in map(_proxy, current)}
    want = {(kind.lower(), address.lower()): (kind, address) for kind, address in map(_proxy, target)}
    primary_now = next((key for key, (kind, _) in have.items() if kind == "SMTP"), None)
    primary_then = next((key for key, (kind, _) in want.items() if kind == "SMTP"), None)
    operations = []
    if primary_then is not None and primary_then != primary_now:
        operations.append({"op": ChangeOperation.MAKE_PRIMARY.value, "address": f"SMTP:{want[primary_then][1]}"})
    for key, (kind, address) in want.items():
        if key not in have and key != primary_then:
            operations.append({"op": ChangeOperation.ADD_ALIAS.value, "address": f"{kind}:{address}"})
    for key, (kind, address) in have.items():
        if key not in want:
            operations.append({"op": ChangeOperation.REMOVE_ALIAS.value, "address": f"{kind}:{address}"})
    return operations


def undo_request_create(
    *,
    actor: User,
    event_id: int | None = None,
    correlation_id: str = "",
    versions: dict[int, int],
    reason: str,
    idempotency_key: str,
    acknowledge_conflicts: bool = False,
) -> list[ChangeRequest]:
    """Make the change requests that undo the edits, all or none, and record the undo. ``versions`` maps each
    mailbox to the version the confirm page showed: a mailbox changed since refuses the whole undo (ChangeConflict),
    so nobody confirms a preview that is no longer true. Conflicts (values changed again after the edits) must be
    acknowledged. Mailboxes already back at the earlier values are left alone; when all are, SoaError. The same
    ``idempotency_key`` again returns the requests the first submission made."""
    key = (idempotency_key or "").strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise SoaError("The form is missing its submission key; reload the page and undo again.")
    made = list(
        ChangeRequest.objects.filter(requested_by=actor)
        .filter(Q(idempotency_key=key) | Q(idempotency_key__startswith=f"{key[:56]}:"))
        .order_by("pk")
    )  # fmt: skip
    if made:
        return made  # the same form sent twice: one undo
    try:
        plans = undo_plans(actor=actor, event_id=event_id, correlation_id=correlation_id)
    except UndoDenied as exc:
        with transaction.atomic():
            audit_record(actor=actor, action="soa.change.undo_denied", object_type="audit", reason=str(exc),
                         object_id=str(event_id) if event_id is not None else correlation_id)  # fmt: skip
        raise
    for plan in plans:
        if versions.get(plan.mailbox.pk) != plan.mailbox.version:
            raise ChangeConflict(
                f"{mailbox_name(plan.mailbox)} changed since this undo was shown; nothing was saved. Review the "
                "undo again.", current=plan.current, version=plan.mailbox.version,
            )  # fmt: skip
    conflicted = [f"{mailbox_name(p.mailbox)}: {', '.join(p.conflicts)}" for p in plans if p.conflicts and p.operations]
    if conflicted and not acknowledge_conflicts:
        raise SoaError("These values changed again after the edit; tick the box to restore them anyway ("
                       + "; ".join(conflicted) + ").")  # fmt: skip
    work = [plan for plan in plans if plan.operations]
    if not work:
        raise SoaError("The mailbox already holds the values from before this edit; there is nothing to undo.")
    undone = [event.pk for plan in plans for event in plan.events]
    with transaction.atomic():
        requests = [
            change_request_create(
                actor=actor,
                mailbox_id=plan.mailbox.pk,
                operations=plan.operations,
                reason=reason,
                base_version=plan.mailbox.version,
                idempotency_key=_key(idempotency_key, index, len(work)),
                undoes=[event.pk for event in plan.events],
            )  # fmt: skip
            for index, plan in enumerate(work)
        ]
        audit_record(
            actor=actor, action="soa.change.undo_requested", object_type="audit",
            object_id=str(event_id) if event_id is not None else correlation_id, reason=reason,
            after={"events": undone, "correlation_id": correlation_id or None, "requests": [r.pk for r in requests],
                   "conflicts": {p.mailbox.pk: p.conflicts for p in work if p.conflicts},
                   "acknowledged": bool(conflicted)},
        )  # fmt: skip
    return requests


def _key(key: str, index: int, count: int) -> str:
    # One form makes several requests for a correlation id; each needs its own key, the same on a resubmission.
    return key if count == 1 else f"{key[:56]}:{index}"
