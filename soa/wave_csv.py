"""Reading a list of mailboxes for a wave from CSV text: one UPN or address per line.

Accepted: a plain list (one value per line), or a CSV whose header names the identity column (``UserPrincipalName``,
``Identity``, ``PrimarySmtpAddress``, ``EmailAddress``, ``Mail``...; community bulk tools export ``Identity,Mode``).
Blank lines and lines starting with ``#`` are ignored. A value may carry a proxy type (``smtp:ann@x``,
``X500:/o=...``); without one it matches a UPN or any SMTP address. Line numbers are the file's own, so the
person can find every line the report names.

The input is bounded twice: by its size in bytes, checked while an upload is read (``upload_lines``), and by its
count of lines to read, checked while they are parsed (``read_entries``). Both limits come from the caller
(settings WAVE_CSV_MAX_BYTES / WAVE_CSV_MAX_LINES for waves, BULK_CHANGE_* for bulk edits).
"""

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from soa.models import Mailbox, MailboxAddress

IDENTITY_HEADERS = (
    "userprincipalname", "upn", "identity", "primarysmtpaddress", "windowsemailaddress", "emailaddress",
    "emailaddresses", "email", "mail", "address", "smtp",
)  # fmt: skip
PROXY_TYPES = frozenset({"smtp", "sip", "x500", "x400", "eum", "spo"})
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CHUNK = 500
HEADER_HINT = (
    "no UPN or address in the first column; if this is a header, name the identity column UserPrincipalName, "
    "Identity, PrimarySmtpAddress, EmailAddress or Mail"
)


class CsvInputError(ValueError):
    """The input as a whole cannot be read (too large, too many lines, not UTF-8); the message says what to do."""


def upload_lines(upload: Any, *, max_bytes: int, too_large: str) -> Iterator[str]:
    """The lines of an uploaded file, decoded as they are read, refusing (``too_large``) a file larger than
    ``max_bytes``: by its declared size before reading anything, then by what was read (a client may lie)."""
    if getattr(upload, "size", 0) and upload.size > max_bytes:
        raise CsvInputError(too_large)
    read = 0
    first = True
    pending = b""
    for chunk in upload.chunks():
        read += len(chunk)
        if read > max_bytes:
            raise CsvInputError(too_large)
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield _decode(raw, first)
            first = False
    if pending:
        yield _decode(pending, first)


def _decode(raw: bytes, first: bool) -> str:
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError:
        raise CsvInputError("The file is not UTF-8 text; save it as UTF-8 CSV and upload it again.") from None
    return text.rstrip("\r")


@dataclass(frozen=True)
class Entry:
    """One value to look up: its line, what was written, and the normalised (type, address) key."""

    line: int
    raw: str
    prefix: str  # "" when the value had no proxy type
    address: str


@dataclass(frozen=True)
class LineProblem:
    line: int
    value: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.value!r}: {self.reason}" if self.value else f"line {self.line}: {self.reason}"


def read_entries(text: str | Iterable[str], *, max_lines: int | None = None) -> tuple[list[Entry], list[LineProblem]]:
    """Parse the text (or its lines) into entries, and the lines that cannot be read (pure; no database).

    Raises CsvInputError as soon as more than ``max_lines`` lines hold a value (blank and ``#`` lines and the header
    do not count), so a huge list costs no more than the limit to refuse.
    """
    entries: list[Entry] = []
    problems: list[LineProblem] = []
    column: int | None = None
    first = 0
    lines = text.lstrip("\ufeff").splitlines() if isinstance(text, str) else text
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if max_lines is not None and len(entries) + len(problems) >= max_lines:
            raise CsvInputError(
                f"The list has more than {max_lines:,} lines, the most one upload takes; split it into several lists."
            )
        try:
            cells = [cell.strip() for cell in next(csv.reader([stripped]))]
        except csv.Error as exc:
            problems.append(LineProblem(number, stripped, f"not readable as CSV ({exc})"))
            continue
        if column is None:
            column = _header_column(cells)
            if column is not None:
                continue  # that was the header
            column, first = 0, number
        value = cells[column] if column < len(cells) else ""
        entry = identity_entry(number, value)
        if isinstance(entry, LineProblem) and number == first and "@" not in stripped:
            entry = LineProblem(number, stripped, HEADER_HINT)
        if isinstance(entry, LineProblem):
            problems.append(entry)
        else:
            entries.append(entry)
    return entries, problems


def _header_column(cells: list[str]) -> int | None:
    """The identity column's index when ``cells`` is a header naming one, else None (the line is data)."""
    names = [re.sub(r"[\s_-]", "", cell).lower() for cell in cells]
    for known in IDENTITY_HEADERS:
        if known in names:
            return names.index(known)
    return None


def identity_entry(number: int, value: str) -> Entry | LineProblem:
    """The mailbox a line names (a UPN or address, with or without a proxy type), or why it names none."""
    if not value:
        return LineProblem(number, value, "empty value (no UPN or address in the identity column)")
    prefix, sep, rest = value.partition(":")
    if sep and prefix.lower() in PROXY_TYPES:
        prefix, address = prefix.lower(), rest.strip().lower()
    else:
        prefix, address = "", value.lower()
    if prefix in ("", "smtp", "sip") and not _ADDRESS.match(address):
        return LineProblem(number, value, "not a UPN or email address")
    if not address:
        return LineProblem(number, value, "address missing after its type")
    return Entry(number, value, prefix, address)


def match_mailboxes(entries: Iterable[Entry]) -> dict[tuple[str, str], set[int]]:
    """Mailbox ids per (type, address) key: a bare value matches a UPN or an SMTP address, a typed one that type."""
    keys = {(entry.prefix, entry.address) for entry in entries}
    found: dict[tuple[str, str], set[int]] = {key: set() for key in keys}
    bare = sorted(address for prefix, address in keys if not prefix)
    for chunk in _chunks(bare):
        for pk, upn in Mailbox.objects.filter(upn__in=chunk).values_list("pk", "upn"):
            found[("", upn)].add(pk)
        for pk, address in MailboxAddress.objects.filter(prefix="smtp", address__in=chunk).values_list(
            "mailbox_id", "address"
        ):
            found[("", address)].add(pk)
    typed: dict[str, list[str]] = {}
    for prefix, address in keys:
        if prefix:
            typed.setdefault(prefix, []).append(address)
    for prefix, addresses in typed.items():
        for chunk in _chunks(sorted(addresses)):
            for pk, address in MailboxAddress.objects.filter(prefix=prefix, address__in=chunk).values_list(
                "mailbox_id", "address"
            ):
                found[(prefix, address)].add(pk)
    return found


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
