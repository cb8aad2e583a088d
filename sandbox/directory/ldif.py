"""Render directory entries as LDIF (RFC 2849) for slapadd.

An entry is a mapping with a ``dn`` key and one key per attribute. A value is ``str``, ``bytes``,
``int``, ``bool`` or a list of those; ``bytes`` are binary and always go out base64-encoded.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import IO, Any

# RFC 2849: a value may go out as-is only if it is ASCII without NUL/CR/LF and does not start with
# a space, colon or "<". A trailing space would survive too, but tools disagree, so encode it.
_NEEDS_BASE64 = re.compile(r"^[ :<]|[^\x01-\x09\x0b\x0c\x0e-\x7f]| $")


def _line(name: str, value: Any) -> str:
    if isinstance(value, bytes):
        return f"{name}:: {base64.b64encode(value).decode('ascii')}\n"
    # bool before str(): True is an int and would come out as "True", which LDAP's Boolean syntax rejects.
    text = ("TRUE" if value else "FALSE") if isinstance(value, bool) else str(value)
    if _NEEDS_BASE64.search(text):
        return f"{name}:: {base64.b64encode(text.encode('utf-8')).decode('ascii')}\n"
    return f"{name}: {text}\n"


def ldif_entry(entry: Mapping[str, Any]) -> str:
    """Return one entry as an LDIF record, ending with the blank line that separates records."""
    parts = [_line("dn", entry["dn"])]
    for name, value in entry.items():
        if name == "dn" or value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        parts.extend(_line(name, item) for item in values)
    parts.append("\n")
    return "".join(parts)


def write_ldif(entries: Iterable[Mapping[str, Any]], stream: IO[bytes], *, chunk_size: int = 32 * 1024) -> int:
    """Write entries to a binary stream as LDIF and return how many were written.

    Output goes out in chunks of about ``chunk_size`` bytes. Into a pipe, chunks smaller than the
    pipe's buffer let the reader (slapadd) work while we render the next one instead of in turns.
    """
    count = 0
    pending: list[str] = []
    pending_size = 0
    for entry in entries:
        record = ldif_entry(entry)
        pending.append(record)
        pending_size += len(record)
        count += 1
        if pending_size >= chunk_size:
            stream.write("".join(pending).encode("utf-8"))
            pending.clear()
            pending_size = 0
    if pending:
        stream.write("".join(pending).encode("utf-8"))
    return count
