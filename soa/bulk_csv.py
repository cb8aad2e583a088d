"""A bulk edit's CSV file, read and checked line by line before anything is asked for: a read, never a write.

One line is one edit of one mailbox: ``mailbox,operation,attribute,value`` (a header naming those columns is optional;
without one the columns are in that order, and a line for an alias may leave the attribute out:
``ann@corp.example.com,add-alias,ann.a@corp.example.com``). The mailbox is a UPN or any of its addresses, read as the
waves' CSV reads it (soa.wave_csv). Operations: ``add-alias``, ``remove-alias``, ``make-primary`` (the value is the
address), ``set`` / ``clear`` (CustomAttribute1-15), ``add-value`` / ``remove-value`` (ExtensionCustomAttribute1-5),
``hide`` / ``show`` (address lists).

Every line is checked by the validator the single edit uses (soa.validation through the change service's reads),
each on top of the lines before it for the same mailbox, since the batch applies them in that order. Bad lines are
reported with their number: unreadable, unknown mailbox or one outside the user's scope (the same words for both, so
the file learns nothing about what exists), an invalid value, a line repeated, two lines that conflict, an address
two mailboxes of the file would both take. The input is bounded (BULK_CHANGE_MAX_BYTES, BULK_CHANGE_MAX_LINES) and
read line by line from the upload.
"""

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.models import User
from portal.roles import Action, scope_filter
from soa.choices import ChangeOperation
from soa.models import Mailbox
from soa.selectors import accepted_domains_known
from soa.services import SoaError
from soa.services.changes import change_lookups, editable_values, mailbox_name, refuse_if_side_missing
from soa.validation import (
    CUSTOM_ATTRIBUTES,
    EXTENSION_ATTRIBUTES,
    HIDDEN,
    Lookups,
    requested_addresses,
    validate_change,
)
from soa.wave_csv import IDENTITY_HEADERS, CsvInputError, LineProblem, identity_entry, match_mailboxes, upload_lines

# The operation column's words (case, "-" and "_" ignored) and the change each asks for.
OPERATION_WORDS: dict[str, str] = {
    "addalias": ChangeOperation.ADD_ALIAS,
    "removealias": ChangeOperation.REMOVE_ALIAS,
    "makeprimary": ChangeOperation.MAKE_PRIMARY,
    "set": ChangeOperation.SET_CUSTOM_ATTRIBUTE,
    "clear": ChangeOperation.CLEAR_CUSTOM_ATTRIBUTE,
    "addvalue": ChangeOperation.ADD_EXTENSION_VALUE,
    "add": ChangeOperation.ADD_EXTENSION_VALUE,
    "removevalue": ChangeOperation.REMOVE_EXTENSION_VALUE,
    "remove": ChangeOperation.REMOVE_EXTENSION_VALUE,
    "hide": ChangeOperation.HIDE_FROM_ADDRESS_LISTS,
    "show": ChangeOperation.SHOW_IN_ADDRESS_LISTS,
}
OPERATION_HELP = "add-alias, remove-alias, make-primary, set, clear, add-value, remove-value, hide or show"
_ALIAS_OPS = (ChangeOperation.ADD_ALIAS, ChangeOperation.REMOVE_ALIAS, ChangeOperation.MAKE_PRIMARY)
_ATTRIBUTE_OPS = (
    ChangeOperation.SET_CUSTOM_ATTRIBUTE, ChangeOperation.CLEAR_CUSTOM_ATTRIBUTE,
    ChangeOperation.ADD_EXTENSION_VALUE, ChangeOperation.REMOVE_EXTENSION_VALUE,
)  # fmt: skip
_VALUE_OPS = (*_ALIAS_OPS, ChangeOperation.SET_CUSTOM_ATTRIBUTE, ChangeOperation.ADD_EXTENSION_VALUE,
              ChangeOperation.REMOVE_EXTENSION_VALUE)  # fmt: skip
_ATTRIBUTES = {name.lower(): name for name in CUSTOM_ATTRIBUTES | EXTENSION_ATTRIBUTES}
_COLUMNS = {
    "mailbox": "mailbox", **{name: "mailbox" for name in IDENTITY_HEADERS},
    "operation": "operation", "op": "operation", "action": "operation",
    "attribute": "attribute", "value": "value",
}  # fmt: skip
UNKNOWN = "unknown mailbox: no mailbox you may edit has this UPN or address"
_CHUNK = 500


class BulkInputError(SoaError):
    """The file cannot be read as a whole (too large, too many lines, not UTF-8, empty): nothing was checked."""


@dataclass(frozen=True)
class BulkLine:
    """One good line: its number, the mailbox it names, and the one operation (canonical, as the validator left it)."""

    number: int
    identity: str
    mailbox_id: int
    mailbox: str
    operation: dict[str, Any]

    @property
    def summary(self) -> str:
        op = self.operation
        label = ChangeOperation(op["op"]).label
        if op.get("address"):
            return f"{label}: {op['address']}"
        if op.get("value") is not None:
            return f"{label}: {op['attribute']} = “{op['value']}”"
        return f"{label}: {op['attribute']}" if op.get("attribute") else label


@dataclass
class BulkPreview:
    """What a file would make: its good lines in file order, and every bad line with its number and why."""

    lines: list[BulkLine] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.lines) and not self.problems

    @property
    def mailbox_count(self) -> int:
        return len({line.mailbox_id for line in self.lines})


@dataclass(frozen=True)
class _Row:
    number: int
    identity: str
    key: tuple[str, str]
    operation: dict[str, Any]


def text_lines(upload: Any) -> Iterator[str]:
    """The lines of an uploaded file, decoded as they are read, refusing a file larger than BULK_CHANGE_MAX_BYTES
    (by its declared size first, then by what was read: a client may lie about the size)."""
    limit = settings.BULK_CHANGE_MAX_BYTES
    try:
        yield from upload_lines(upload, max_bytes=limit, too_large=_too_large(limit))
    except CsvInputError as exc:
        raise BulkInputError(str(exc)) from None


def _too_large(limit: int) -> str:
    return f"The file is larger than {limit // 1024:,} KB, the most one bulk edit takes; split it into several files."


def read_rows(lines: Iterable[str]) -> tuple[list[_Row], list[LineProblem]]:
    """Parse the lines into rows and the lines that cannot be read (no database). Raises BulkInputError past
    BULK_CHANGE_MAX_LINES lines of data."""
    limit = settings.BULK_CHANGE_MAX_LINES
    rows: list[_Row] = []
    problems: list[LineProblem] = []
    columns: dict[str, int] | None = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            cells = [cell.strip() for cell in next(csv.reader([stripped]))]
        except csv.Error as exc:
            problems.append(LineProblem(number, stripped, f"not readable as CSV ({exc})"))
            continue
        if columns is None:
            columns = _header(cells)
            if columns is not None:
                continue
            columns = {}
        if len(rows) + len(problems) >= limit:
            raise BulkInputError(
                f"The file has more than {limit:,} lines of edits, the most one bulk edit takes; split it into "
                "several files."
            )
        row = _row(number, cells, columns)
        (problems if isinstance(row, LineProblem) else rows).append(row)
    return rows, problems


def _header(cells: list[str]) -> dict[str, int] | None:
    names = [re.sub(r"[\s_-]", "", cell).lower() for cell in cells]
    if not {"operation", "op", "action"} & set(names):
        return None
    return {_COLUMNS[name]: index for index, name in reversed(list(enumerate(names))) if name in _COLUMNS}


def _cell(cells: list[str], index: int | None) -> str:
    return cells[index] if index is not None and index < len(cells) else ""


def _row(number: int, cells: list[str], columns: dict[str, int]) -> _Row | LineProblem:
    identity = _cell(cells, columns.get("mailbox", 0))
    word = _cell(cells, columns.get("operation", 1))
    op = OPERATION_WORDS.get(re.sub(r"[\s_-]", "", word).lower())
    if op is None:
        reason = f"unknown operation {word!r}; use {OPERATION_HELP}" if word else f"no operation; use {OPERATION_HELP}"
        return LineProblem(number, identity, reason)
    if columns:
        attribute, value = _cell(cells, columns.get("attribute")), _cell(cells, columns.get("value"))
    elif op in _ALIAS_OPS and len(cells) == 3:
        attribute, value = "", cells[2]
    else:
        attribute, value = _cell(cells, 2), _cell(cells, 3)
    entry = identity_entry(number, identity)
    if isinstance(entry, LineProblem):
        return entry
    operation: dict[str, Any] = {"op": op}
    if op in _ATTRIBUTE_OPS:
        if not attribute:
            return LineProblem(number, identity, f"{word}: name the attribute (CustomAttribute1-15 or "
                                                 "ExtensionCustomAttribute1-5)")  # fmt: skip
        operation["attribute"] = _ATTRIBUTES.get(attribute.lower(), attribute)
    if op in _VALUE_OPS:
        if not value:
            return LineProblem(number, identity, f"{word}: the value is missing")
        operation["address" if op in _ALIAS_OPS else "value"] = value
    return _Row(number, identity, (entry.prefix, entry.address), operation)


def _conflict_key(operation: dict[str, Any]) -> tuple:
    """Two lines for one mailbox with the same key touch the same thing: the same line twice is a duplicate, two
    different ones conflict (set then set again, hide and show, add and remove the same address)."""
    op = operation["op"]
    if op in (ChangeOperation.ADD_ALIAS, ChangeOperation.REMOVE_ALIAS):
        return ("address", str(operation.get("address", "")).lower())
    if op == ChangeOperation.MAKE_PRIMARY:
        return ("primary",)
    if op in (ChangeOperation.HIDE_FROM_ADDRESS_LISTS, ChangeOperation.SHOW_IN_ADDRESS_LISTS):
        return (HIDDEN,)
    if op in (ChangeOperation.ADD_EXTENSION_VALUE, ChangeOperation.REMOVE_EXTENSION_VALUE):
        return (operation.get("attribute"), str(operation.get("value", "")))
    return (operation.get("attribute"),)


def bulk_preview(*, user: User, lines: Iterable[str]) -> BulkPreview:
    """Check every line of a bulk edit for ``user`` (who needs ``bulk_edit`` on each mailbox), writing nothing.
    Raises BulkInputError when the file as a whole cannot be taken (too large, too many lines, empty)."""
    rows, problems = read_rows(lines)
    if not rows and not problems:
        raise BulkInputError("The file has no edits: give one line per edit (mailbox, operation, attribute, value).")
    matches = match_mailboxes(identity_entry(row.number, row.identity) for row in rows)
    found = {pk for ids in matches.values() for pk in ids}
    editable: set[int] = set()
    ids = sorted(found)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        in_scope = Mailbox.objects.filter(scope_filter(user, Action.BULK_EDIT, "dn_norm"), pk__in=chunk)
        editable.update(in_scope.values_list("pk", flat=True))
    per_mailbox: dict[int, list[_Row]] = {}
    for row in rows:
        mine = matches[row.key] & editable  # outside the scope reads as unknown: the file learns nothing
        if not mine:
            problems.append(LineProblem(row.number, row.identity, UNKNOWN))
        elif len(mine) > 1:
            problems.append(
                LineProblem(row.number, row.identity, f"ambiguous: {len(mine)} mailboxes have this address")
            )
        else:
            per_mailbox.setdefault(next(iter(mine)), []).append(row)
    preview = BulkPreview(problems=problems)
    taken: dict[tuple[str, str], tuple[int, int]] = {}  # addresses the file adds: the line and its mailbox
    now = timezone.now()
    domains = accepted_domains_known(now=now)
    pks = sorted(per_mailbox)
    for start in range(0, len(pks), _CHUNK):
        for mailbox in Mailbox.objects.filter(pk__in=pks[start : start + _CHUNK]).order_by("pk"):
            _check_mailbox(user, mailbox, per_mailbox[mailbox.pk], preview, taken, now, domains)
    preview.lines.sort(key=lambda line: line.number)
    preview.problems.sort(key=lambda problem: problem.line)
    return preview


def _check_mailbox(user, mailbox: Mailbox, rows: list[_Row], preview: BulkPreview, taken: dict, now, domains) -> None:
    """Validate one mailbox's lines in file order, each on the values the lines before it leave."""
    try:
        refuse_if_side_missing(mailbox)
    except SoaError as exc:
        preview.problems.extend(LineProblem(row.number, row.identity, str(exc)) for row in rows)
        return
    current = editable_values(mailbox)
    seen: dict[tuple, tuple[int, dict]] = {}
    name = mailbox_name(mailbox)
    for row in rows:
        key = _conflict_key(row.operation)
        if key in seen:
            first, operation = seen[key]
            what = "duplicate: the same edit as line" if operation == row.operation else "conflicts with line"
            preview.problems.append(LineProblem(row.number, row.identity, f"{what} {first} for this mailbox"))
            continue
        seen[key] = (row.number, row.operation)
        if requested_addresses([row.operation]):
            lookups = change_lookups(actor=user, mailbox=mailbox, operations=[row.operation], now=now)
        else:  # nothing to look up but the accepted domains, read once for the file
            lookups = Lookups(now=now, accepted_domains=domains, used_by={}, cooling_down={})
        outcome = validate_change(current, [row.operation], lookups)
        if outcome.errors:
            message = " ".join(error.message for error in outcome.errors)
            preview.problems.append(LineProblem(row.number, row.identity, f"{message}"))
            continue
        addresses = requested_addresses(outcome.operations)
        clash = [taken[a][0] for a in addresses if a in taken and taken[a][1] != mailbox.pk]
        if clash:
            preview.problems.append(
                LineProblem(row.number, row.identity, f"line {clash[0]} gives this address to another mailbox")
            )
            continue
        for address in addresses:
            taken.setdefault(address, (row.number, mailbox.pk))
        current = {**current, **outcome.desired}
        preview.lines.append(BulkLine(row.number, row.identity, mailbox.pk, name, dict(outcome.operations[0])))
