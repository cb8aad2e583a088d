"""What a help-desk edit would do, shown before it is asked for: a read, never a write.

``change_preview`` answers with the same checks and the same errors as ``change_request_create`` (a stale page is a
ChangeConflict, a bad value a ChangeValidationError naming its field), from the same reads (the authoritative side's
values, who else uses an address, the cool-down, the accepted domains), so what the preview promises is what the
confirmation makes. The confirmation still runs every check again inside its transaction: the preview only
informs. Scope is the caller's to check (the page answers 404 outside it); refused attempts are audited by the
service, the only place something could be written.
"""

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.models import User
from soa.attributes import BY_EXO, MappedAttribute
from soa.choices import ROUTE_BY_AUTHORITY, ChangeRoute
from soa.models import Mailbox
from soa.services.changes import (
    ChangeValidationError,
    approval_operations,
    change_lookups,
    current_values_for_edit,
)
from soa.validation import validate_change


@dataclass(frozen=True)
class PreviewRow:
    """One attribute the edit changes: its values before and after, and for lists what joins and what leaves."""

    attribute: MappedAttribute
    before: Any
    after: Any
    added: list = field(default_factory=list)
    removed: list = field(default_factory=list)

    @property
    def is_list(self) -> bool:
        return isinstance(self.before, list) or isinstance(self.after, list)


@dataclass(frozen=True)
class ChangePreview:
    """The edit as the confirmation would record it: canonical operations, the rows that change, the systems it
    writes (from the mailbox's authority now), whether it waits for an approver, and whether a reason is required."""

    operations: tuple[dict[str, Any], ...]
    rows: tuple[PreviewRow, ...]
    route: ChangeRoute
    needs_approval: bool
    reason_required: bool


def preview_rows(before: dict[str, Any], desired: dict[str, Any]) -> tuple[PreviewRow, ...]:
    """The rows of a change from its attributes' values before and after (a request's ``before`` and ``desired``)."""
    return tuple(_row(name, before.get(name), desired[name]) for name in desired if name in BY_EXO)


def _row(name: str, before: Any, after: Any) -> PreviewRow:
    if isinstance(before, list) or isinstance(after, list):
        old, new = list(before or []), list(after or [])
        # Exact strings: a secondary address made primary leaves as smtp: and joins as SMTP:, which is the change.
        return PreviewRow(BY_EXO[name], old, new, [v for v in new if v not in old], [v for v in old if v not in new])
    return PreviewRow(BY_EXO[name], before, after)


def change_preview(*, user: User, mailbox: Mailbox, operations: Any, base_version: int) -> ChangePreview:
    """What ``change_request_create`` would make of this edit now, writing nothing; raises what it would raise for
    a stale page (ChangeConflict), a bad edit (ChangeValidationError) or a mailbox missing from its authoritative
    side (SoaError). The reason is asked for on the preview, so it is not checked here."""
    current = current_values_for_edit(mailbox, base_version)
    lookups = change_lookups(actor=user, mailbox=mailbox, operations=operations, now=timezone.now())
    outcome = validate_change(current, operations, lookups)
    if outcome.errors:
        raise ChangeValidationError(outcome.errors)
    needs = approval_operations()
    return ChangePreview(
        operations=outcome.operations,
        rows=preview_rows(outcome.before, outcome.desired),
        route=ChangeRoute(ROUTE_BY_AUTHORITY[mailbox.authority]),
        needs_approval=any(op["op"] in needs for op in outcome.operations),
        reason_required=settings.CHANGE_REASON_REQUIRED,
    )
