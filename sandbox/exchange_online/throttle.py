"""Per-client token buckets, answering like EXO's REST endpoint (exchange-facts §4.5).

Every request of a client (the ``appid`` of its token) takes one token; a bucket holds at most ``burst``
tokens and refills at ``rate`` per second. Responses carry ``Rate-Limit-Limit`` (the burst),
``Rate-Limit-Remaining`` and ``Rate-Limit-Reset`` (when the bucket is full again, ISO 8601 UTC); a request
that finds the bucket empty gets 429 with ``Retry-After`` in whole seconds. What EXO's real budget counts
and over which window is UNCONFIRMED; these are the emulator's choices.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from dataclasses import dataclass


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str]
    retry_after: int = 0


class Throttle:
    """Token buckets per client id; ``rate`` None turns throttling (and its headers) off."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self.configure(rate, burst)

    def configure(self, rate: float | None, burst: int) -> None:
        """Change the limits; every bucket starts full again."""
        if rate is not None and rate <= 0:
            rate = None
        if burst < 1:
            raise ValueError("burst must be at least 1")
        with self._lock:
            self.rate, self.burst = rate, int(burst)
            self._buckets.clear()

    def describe(self) -> dict[str, float | int | None]:
        return {"rate": self.rate, "burst": self.burst}

    def take(self, client_id: str) -> Decision:
        if self.rate is None:
            return Decision(True, {})
        now = time.monotonic()
        with self._lock:
            tokens, updated = self._buckets.get(client_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client_id] = (tokens, now)
            rate, burst = self.rate, self.burst
        full_in = (burst - tokens) / rate
        reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=full_in)
        headers = {
            "Rate-Limit-Limit": str(burst),
            "Rate-Limit-Remaining": str(int(tokens)),
            "Rate-Limit-Reset": reset.strftime("%Y-%m-%dT%H:%M:%S.") + f"{reset.microsecond // 1000:03d}Z",
        }
        if allowed:
            return Decision(True, headers)
        retry_after = max(1, math.ceil((1.0 - tokens) / rate))
        return Decision(False, {**headers, "Retry-After": str(retry_after)}, retry_after)
