"""Keyset-pagination cursors: the opaque ``after=``/``before=`` values a listing puts in its links.

A cursor comes back from the browser, so it is read as untrusted input: bounded in length before it is decoded,
JSON without NaN or Infinity, a flat list of exactly the kinds the listing wrote, strings of bounded length and ids
in the range of a database key. Anything else is a BadCursor, which a page answers with 400 and the message.
"""

import base64
import binascii
import datetime as dt
import json
from typing import Any

MAX_CURSOR_LENGTH = 1024  # characters of the encoded cursor: far more than any the listings write
MAX_TEXT = 400  # characters of a text key (a display name, a UPN, a time)
MAX_ID = 2**63 - 1  # the largest value of a 64-bit key column


class BadCursor(ValueError):
    """A cursor the portal did not write (edited, truncated, or crafted)."""

    def __init__(self, why: str):
        super().__init__(f"The page link is not valid ({why}); start again from the first page.")


def encode_cursor(*parts: Any) -> str:
    """The cursor of ``parts`` (texts, ids, times), as a listing writes it into its links."""
    plain = [part.isoformat() if isinstance(part, dt.datetime) else part for part in parts]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode()


def _refuse_constant(literal: str) -> None:
    raise BadCursor("not a value a page link holds")


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> tuple:
    """The parts of ``cursor``, each of the kind at its place in ``kinds`` (``str``, ``int`` for a positive id,
    ``dt.datetime`` for a time written in ISO 8601). Raises BadCursor for anything a listing would not write."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise BadCursor("too long")
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
        # Floats are never written; refusing them (and NaN, Infinity) spares every later check an inf or 1e400.
        parts = json.loads(raw, parse_constant=_refuse_constant, parse_float=_refuse_constant)
    except BadCursor:
        raise
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        raise BadCursor("not readable") from None
    if not isinstance(parts, list) or len(parts) != len(kinds):
        raise BadCursor("wrong shape")
    return tuple(_part(part, kind) for part, kind in zip(parts, kinds, strict=True))


def _part(part: Any, kind: type) -> Any:
    if kind is int:
        if isinstance(part, bool) or not isinstance(part, int) or not 0 < part <= MAX_ID:
            raise BadCursor("not an id")
        return part
    if not isinstance(part, str) or len(part) > MAX_TEXT:
        raise BadCursor("not a text key")
    if kind is dt.datetime:
        try:
            return dt.datetime.fromisoformat(part)
        except ValueError:
            raise BadCursor("not a time") from None
    return part
