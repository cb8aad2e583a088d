"""Exchange Online's rate-limit budget, read from its response headers, and how long to wait before spending it.

EXO (and the sandbox emulator) answer with ``Rate-Limit-Limit`` (the budget), ``Rate-Limit-Remaining`` and
``Rate-Limit-Reset`` (ISO 8601 UTC time the budget is full again; exchange-facts §4.5). From one response the
client knows how many requests it may still send and, from how far the budget is from full and how long it takes
to fill, how fast it comes back: ``(limit - remaining) / (reset - now)`` requests per second. When the remaining
budget is down to a small reserve, the client waits for enough of it to return before sending, instead of sending
and being answered 429. With real EXO's 30,000 the reserve is never reached in practice, so this costs nothing.

Pure functions over plain values: nothing here reads a clock or sleeps. Headers that are absent, garbled or
contradictory give no budget, and no budget means no pacing.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

LIMIT, REMAINING, RESET = "Rate-Limit-Limit", "Rate-Limit-Remaining", "Rate-Limit-Reset"
# The response's Date is trusted over the local clock only when they disagree by more than this: Date has whole
# seconds, far coarser than the emulator's sub-second windows, but it corrects a badly skewed local clock.
CLOCK_SKEW_TOLERANCE = 2.0


@dataclass(frozen=True)
class Budget:
    """The rate-limit budget as one response reported it.

    ``full_in`` is how many seconds after ``seen`` (a monotonic time) the budget is full again.
    """

    limit: int
    remaining: int
    full_in: float
    seen: float

    @property
    def refill_rate(self) -> float | None:
        """Requests per second the budget regains, or None when it is full (nothing to learn the rate from)."""
        missing = self.limit - self.remaining
        if missing <= 0 or self.full_in <= 0:
            return None
        return missing / self.full_in

    def wait(self, now: float, *, reserve: int, ceiling: float) -> float:
        """Seconds to wait at monotonic time ``now`` before the next request, so that it finds at least
        ``reserve + 1`` requests left (or a full budget, when the budget is smaller than that). At most
        ``ceiling``; 0 when more than ``reserve`` remain."""
        if self.remaining > reserve:
            return 0.0
        rate = self.refill_rate
        if rate is None:
            return 0.0
        needed = min(reserve + 1, self.limit) - self.remaining
        if needed <= 0:
            return 0.0
        delay = needed / rate - (now - self.seen)
        return min(max(delay, 0.0), max(ceiling, 0.0))


def _integer(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number) or number < 0 or number != int(number):
        return None
    return int(number)


def _reset_seconds(value: str, now: dt.datetime) -> float | None:
    """Seconds from ``now`` until the reset: an ISO 8601 time (naive means UTC), or a plain number of seconds."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        reset = dt.datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        return None
    if reset.tzinfo is None:
        reset = reset.replace(tzinfo=dt.UTC)
    return (reset - now).total_seconds()


def _server_now(date: str | None, local: dt.datetime) -> dt.datetime:
    """The server's idea of now: the response's Date when the local clock is off by more than the tolerance."""
    if not date:
        return local
    try:
        server = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return local
    if server.tzinfo is None:
        server = server.replace(tzinfo=dt.UTC)
    if abs((server - local).total_seconds()) > CLOCK_SKEW_TOLERANCE:
        return server
    return local


def read_budget(headers: Mapping[str, str], *, now: dt.datetime, seen: float) -> Budget | None:
    """The budget in a response's ``headers`` (a case-insensitive mapping such as requests' ``response.headers``),
    received at wall-clock ``now`` (aware, UTC) and monotonic ``seen``; None when the headers do not give one."""
    limit = _integer(headers.get(LIMIT))
    remaining = _integer(headers.get(REMAINING))
    reset = headers.get(RESET)
    if limit is None or remaining is None or reset is None or limit < 1 or remaining > limit:
        return None
    full_in = _reset_seconds(reset, _server_now(headers.get("Date"), now))
    if full_in is None:
        return None
    return Budget(limit=limit, remaining=remaining, full_in=max(full_in, 0.0), seen=seen)


__all__ = ["Budget", "read_budget"]
