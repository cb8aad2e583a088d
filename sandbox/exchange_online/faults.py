"""Faults a test can switch on at run time, for the Exchange API (and one for Entra's ID tokens).

- ``latency_ms``: added before every InvokeCommand request is carried out (and so answered); with
  ``latency_cmdlet`` set, only before that cmdlet's. A client that dies during the wait leaves the request to
  be carried out anyway, as a server does with a request it has already received.
- ``error_rate`` (0..1) with ``error_status`` (500 or 503) and ``seed``: that share of requests fail, drawn
  from a seeded generator so a run is repeatable.
- ``fail_next`` with ``fail_status``: the next N requests fail.
- ``error_after_apply``: the next N successful Set-Mailbox calls are applied and then answered with a 500
  whose message is empty: the silent-success trap of exchange-facts §4.3.
- ``replication_lag``: for this many seconds after a mailbox is created it is not found (404), as when
  reading an object right after creating it (exchange-facts §4.3: 404 six seconds after New-MailContact, found
  minutes later). With ``replication_lag_after_write`` (on by default) the same holds for Identity lookups of a
  mailbox a cmdlet changed within that time: the guidance of §4.3 is to retry a 404 that follows a write, which
  the reference measured only for creation; that a write hides the object too is a guess. Listings still show a
  written mailbox (a lagging replica would hold its older version, not nothing).
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class FaultConfig:
    latency_ms: float = 0.0
    latency_cmdlet: str = ""
    error_rate: float = 0.0
    error_status: int = 503
    seed: int | None = None
    fail_next: int = 0
    fail_status: int = 503
    error_after_apply: int = 0
    replication_lag: float = 0.0
    replication_lag_after_write: bool = True
    id_token: str = ""


ID_TOKEN_FAULTS = ("", "signature", "expired", "audience", "issuer")


class Faults:
    """The current fault settings, changed and consumed under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.config = FaultConfig()
        self._random = random.Random()  # noqa: S311 - fault injection, not security
        self.injected = 0

    def update(self, changes: dict[str, Any]) -> FaultConfig:
        known = {f.name: f for f in fields(FaultConfig)}
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}; known: {', '.join(known)}")
        with self._lock:
            merged = {**asdict(self.config), **changes}
            config = FaultConfig(
                latency_ms=float(merged["latency_ms"]),
                latency_cmdlet=str(merged["latency_cmdlet"] or ""),
                error_rate=float(merged["error_rate"]),
                error_status=int(merged["error_status"]),
                seed=None if merged["seed"] is None else int(merged["seed"]),
                fail_next=int(merged["fail_next"]),
                fail_status=int(merged["fail_status"]),
                error_after_apply=int(merged["error_after_apply"]),
                replication_lag=float(merged["replication_lag"]),
                replication_lag_after_write=bool(merged["replication_lag_after_write"]),
                id_token=str(merged["id_token"] or ""),
            )
            if config.id_token not in ID_TOKEN_FAULTS:
                raise ValueError(f"id_token must be one of {', '.join(repr(f) for f in ID_TOKEN_FAULTS)}")
            if not 0.0 <= config.error_rate <= 1.0:
                raise ValueError("error_rate must be between 0 and 1")
            for status in (config.error_status, config.fail_status):
                if status not in (500, 502, 503, 504):
                    raise ValueError("error statuses must be 500, 502, 503 or 504")
            if "seed" in changes or "error_rate" in changes:
                self._random = random.Random(config.seed)  # noqa: S311
            self.config = config
            return config

    def clear(self) -> None:
        with self._lock:
            self.config = FaultConfig()
            self._random = random.Random()  # noqa: S311

    def reset(self) -> None:
        """Faults off and the injected count back to zero: the emulator as it started."""
        with self._lock:
            self.config = FaultConfig()
            self._random = random.Random()  # noqa: S311
            self.injected = 0

    def describe(self) -> dict[str, Any]:
        return asdict(self.config)

    def latency_for(self, cmdlet: str) -> float:
        """Seconds to wait before carrying out ``cmdlet``."""
        config = self.config
        if config.latency_ms <= 0 or (config.latency_cmdlet and config.latency_cmdlet.lower() != cmdlet.lower()):
            return 0.0
        return config.latency_ms / 1000

    def server_error(self) -> int | None:
        """The status to fail this request with, or None."""
        with self._lock:
            if self.config.fail_next > 0:
                self.config.fail_next -= 1
                self.injected += 1
                return self.config.fail_status
            if self.config.error_rate and self._random.random() < self.config.error_rate:
                self.injected += 1
                return self.config.error_status
        return None

    def take_error_after_apply(self) -> bool:
        with self._lock:
            if self.config.error_after_apply > 0:
                self.config.error_after_apply -= 1
                self.injected += 1
                return True
        return False
