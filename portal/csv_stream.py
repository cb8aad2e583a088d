"""Streaming CSV downloads (the audit log's and the mailbox list's exports): rows go out as they are read, so an
export of a million rows holds one chunk in memory, and a cell a spreadsheet would run as a formula is defused."""

import csv
from collections.abc import Iterable, Iterator, Sequence
from typing import Any


def csv_cell(value: Any) -> str:
    # A cell starting with = + - @ is run as a formula by spreadsheet programs; the people who open these files
    # (auditors, administrators) are the ones a planted formula would target.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    """A file whose write returns the line, so csv.writer produces strings to stream."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The header, then each row, as CSV lines with every cell defused."""
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([csv_cell(value) for value in row])
