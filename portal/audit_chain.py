"""The audit chain: its key, how an event's hash is computed, and how the whole chain is verified.

Each event's hash covers its content and its predecessor's hash. Since the chain key was introduced the hash is an
HMAC-SHA256 under AUDIT_CHAIN_KEY, a secret held outside the database, and it covers the event's id too: someone who
can write the table but does not hold the key can neither rewrite an event and recompute the hashes after it, nor
renumber events. Events written before the key existed keep their plain SHA-256 hashes (which cannot be recomputed
without rewriting them, so nothing is migrated); verification says how many there are. Once one event is keyed, every
later one must be: an unkeyed event after a keyed one is a rewrite by someone without the key.

What a chain alone cannot show is that its newest events were removed (truncation, or the whole table emptied):
the heads published outside the database (portal.audit_head) are what verification checks that against.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from django.conf import settings
from django.core import checks

if TYPE_CHECKING:
    from portal.audit_head import PublishedHead
    from portal.models import AuditEvent

GENESIS_HASH = "0" * 64
MIN_KEY_LENGTH = 32
_KEY_ID_LABEL = b"soa-portal audit chain key id"
_dev_keys: dict[str, bytes] = {}


class ChainKeyMissing(RuntimeError):
    """No chain key is configured, and this is not a debug run that may generate one."""


def chain_key() -> bytes | None:
    """The key events are hashed with: AUDIT_CHAIN_KEY (or the file AUDIT_CHAIN_KEY_FILE names), else in debug runs a
    key generated once into AUDIT_CHAIN_DEV_KEY_FILE; None when neither is set."""
    configured = (settings.AUDIT_CHAIN_KEY or "").strip()
    if configured:
        return configured.encode()
    path = settings.AUDIT_CHAIN_DEV_KEY_FILE
    if not path:
        return None
    if path not in _dev_keys:
        _dev_keys[path] = _read_or_create_key(Path(path))
    return _dev_keys[path]


def require_chain_key() -> bytes:
    key = chain_key()
    if key is None:
        raise ChainKeyMissing(
            "AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) is not set, so no audit event can be recorded. Set it to a "
            f"random secret of at least {MIN_KEY_LENGTH} characters kept outside the database (docs/operations.md, "
            "Audit log)."
        )
    return key


def _read_or_create_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once must not each write their own key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip().encode()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def key_id(key: bytes | None) -> str | None:
    """A short public name for a key (published with each head), so a verifier can tell that the key changed."""
    return None if key is None else hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def compute_hash(event: AuditEvent, key: bytes | None = None) -> str:
    """The event's hash: HMAC-SHA256 under ``key`` of its id, content and predecessor's hash; without a key, the plain
    SHA-256 of its content and predecessor's hash (the form of events written before the key was introduced)."""
    content = {
        "occurred_at": event.occurred_at.isoformat(),
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object_repr": event.object_repr,
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "correlation_id": event.correlation_id,
        "prev_hash": event.prev_hash,
    }
    if key is None:
        return hashlib.sha256(_canonical(content)).hexdigest()
    content["id"] = event.id
    return hmac.digest(key, _canonical(content), "sha256").hex()


def _canonical(content: dict) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- verification ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokenLink:
    """The first event where the chain does not hold (or, for a truncation, the event a published head names)."""

    event_id: int
    reason: str


class ChainReport(NamedTuple):
    """What a verification found. ``checked`` and ``broken`` come first, so ``checked, broken = report[:2]``."""

    checked: int
    broken: BrokenLink | None
    unkeyed: int = 0  # events before the key was introduced, verified by plain SHA-256 only
    keyed_from: int | None = None  # id of the first keyed event
    last_id: int | None = None
    last_hash: str | None = None
    heads_checked: int = 0

    def summary(self) -> str:
        """One paragraph for a person: what was verified and how."""
        if self.checked == 0:
            return "The audit log holds no events."
        parts = [f"{self.checked} event{'s' if self.checked != 1 else ''} verified"]
        if self.unkeyed and self.keyed_from is None:
            parts.append("all predate the chain key and are verified by plain SHA-256 only")
        elif self.unkeyed:
            parts.append(
                f"the first {self.unkeyed} (up to #{self.keyed_from - 1}) predate the chain key and are verified by "
                f"plain SHA-256 only; from #{self.keyed_from} on each is keyed (HMAC-SHA256)"
            )
        else:
            parts.append("each keyed (HMAC-SHA256)")
        parts.append(
            f"checked against {self.heads_checked} published head{'s' if self.heads_checked != 1 else ''}"
            if self.heads_checked
            else "no published head to check against, so removal of the newest events cannot be ruled out"
        )
        return "; ".join(parts) + "."


def verify_chain(
    *,
    chunk_size: int = 2000,
    heads: list[PublishedHead] | None = None,
    since: PublishedHead | None = None,
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Recompute the chain in id order and check it against ``heads`` (published heads, oldest first).

    With ``since`` (a head an earlier verification published), only the events after it are recomputed, once its
    event and the count up to it are found unchanged: what the periodic publication does before it publishes.
    ``progress`` is called with the number of events verified so far after each chunk, between its queries.

    Reads in short chunks by id (each its own query, outside any transaction), so it holds no lock between them and
    appends go on meanwhile; events appended after the verification started are left for the next one. Memory stays
    flat however long the history is.
    """
    from portal.models import AuditEvent

    verifier = _Verifier(chain_key(), heads or [])
    if since is not None:
        reason = verifier.start_at(AuditEvent, since)
        if reason:
            return verifier.report(BrokenLink(since.head_id, reason + " (deleted, rewritten or renumbered)"))
    return verifier.run(AuditEvent, chunk_size, progress)


class _Verifier:
    def __init__(self, key: bytes | None, heads: list[PublishedHead]) -> None:
        self.key = key
        self.heads = heads
        self.heads_at: dict[int, list[PublishedHead]] = {}
        for head in heads:
            self.heads_at.setdefault(head.head_id, []).append(head)
        self.checked = self.unkeyed = 0
        self.keyed_from: int | None = None
        self.last_id = 0
        self.last_hash = GENESIS_HASH
        self._seen: set[int] = set()

    def start_at(self, model: type[AuditEvent], head: PublishedHead) -> str | None:
        """Take ``head`` as verified (an earlier verification published it) and go on from it; the reason it cannot
        be taken (its event is gone or changed, or the events up to it are not as many) otherwise."""
        if head.count == 0:
            return None
        event = model.objects.filter(pk=head.head_id).values_list("hash", flat=True).first()
        if event is None:
            return f"event #{head.head_id}, named by the head published at {head.published_at}, is missing"
        if event != head.head_hash:
            return f"event #{head.head_id} differs from the head published at {head.published_at}"
        count = model.objects.filter(pk__lte=head.head_id).count()
        if count != head.count:
            return (
                f"the head published at {head.published_at} counted {head.count} events up to #{head.head_id}, there "
                f"are now {count}"
            )
        self.checked, self.last_id, self.last_hash = head.count, head.head_id, head.head_hash
        self.keyed_from = head.keyed_from
        self._seen.add(head.head_id)
        return None

    def report(self, broken: BrokenLink | None = None) -> ChainReport:
        return ChainReport(
            self.checked, broken, self.unkeyed, self.keyed_from, self.last_id or None,
            None if self.last_id == 0 else self.last_hash, len(self.heads) if broken is None else 0,
        )  # fmt: skip

    def run(self, model: type[AuditEvent], chunk_size: int, progress: Callable[[int], None] | None) -> ChainReport:
        newest = model.objects.order_by("-id").values_list("id", flat=True).first() or 0
        while True:
            chunk = list(model.objects.filter(id__gt=self.last_id, id__lte=newest).order_by("id")[:chunk_size])
            for event in chunk:
                reason = self.check(event)
                if reason:
                    return self.report(BrokenLink(event.pk, reason))
            if progress is not None:
                progress(self.checked)
            if len(chunk) < chunk_size:
                break
        broken = self.check_heads_reached()
        return self.report(broken)

    def check(self, event: AuditEvent) -> str | None:
        if event.prev_hash != self.last_hash:
            return "its link to the previous event does not match (an event before it was removed or inserted)"
        keyed = self.key is not None and hmac.compare_digest(compute_hash(event, self.key), event.hash)
        if keyed:
            if self.keyed_from is None:
                self.keyed_from = event.pk
            elif event.pk != self.last_id + 1:
                return f"ids jump from #{self.last_id} to #{event.pk}: events were removed or renumbered"
        elif compute_hash(event) == event.hash:
            if self.keyed_from is not None:
                return (
                    f"it is hashed without the chain key although #{self.keyed_from} and later events are keyed: it "
                    "was rewritten by someone who does not hold the key"
                )
            self.unkeyed += 1
        elif self.key is None:
            return "its content no longer matches its hash, or it is keyed and this process has no AUDIT_CHAIN_KEY"
        else:
            return (
                "its content no longer matches its hash (it was modified or renumbered, or it was keyed with another "
                "key than this process's AUDIT_CHAIN_KEY)"
            )
        for head in self.heads_at.get(event.pk, ()):
            if head.head_hash != event.hash:
                return f"it differs from the head published at {head.published_at} (rewritten or renumbered)"
            if head.count != self.checked + 1:
                return (
                    f"the head published at {head.published_at} counted {head.count} events up to it, there are now "
                    f"{self.checked + 1} (events before it were removed or inserted)"
                )
            self._seen.add(event.pk)
        self.checked += 1
        self.last_id, self.last_hash = event.pk, event.hash
        return None

    def check_heads_reached(self) -> BrokenLink | None:
        """Every published head must name an event the chain still holds: the newest one finds truncation."""
        missing = [head for head in self.heads if head.head_id > self.last_id]
        missing_inside = [
            head for head in self.heads
            if head.count and head.head_id <= self.last_id and head.head_id not in self._seen
        ]  # fmt: skip
        if missing:
            head = max(missing, key=lambda h: h.head_id)
            if self.checked == 0:
                return BrokenLink(head.head_id, (
                    f"the audit log is empty, but the head published at {head.published_at} names event "
                    f"#{head.head_id} and counted {head.count} events: every event was deleted"
                ))  # fmt: skip
            return BrokenLink(head.head_id, (
                f"the newest event is #{self.last_id}, but the head published at {head.published_at} names event "
                f"#{head.head_id} ({head.count} events): the events after #{self.last_id} were deleted (truncation)"
            ))  # fmt: skip
        if missing_inside:
            head = missing_inside[-1]
            return BrokenLink(head.head_id, (
                f"event #{head.head_id}, named by the head published at {head.published_at}, is missing (deleted or "
                "renumbered)"
            ))  # fmt: skip
        for head in self.heads:
            if head.keyed_from is not None and head.keyed_from != self.keyed_from:
                return BrokenLink(head.keyed_from, (
                    f"the head published at {head.published_at} had events keyed from #{head.keyed_from} on; now "
                    f"{'none is' if self.keyed_from is None else f'the first keyed event is #{self.keyed_from}'} "
                    "(rewritten without the key)"
                ))  # fmt: skip
        return None


# -- deployment check -------------------------------------------------------------------------------------------------


def check_audit_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Deploy checks: a production portal needs its chain key (it records nothing without one), a long enough one,
    and a place to publish the chain's head."""
    problems: list[checks.CheckMessage] = []
    configured = (settings.AUDIT_CHAIN_KEY or "").strip()
    if not configured and not settings.DEBUG:
        problems.append(checks.Error(
            "AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) is not set: no audit event can be recorded without it.",
            hint=f"Set it to a random secret of at least {MIN_KEY_LENGTH} characters kept outside the database, e.g. "
            "the output of `python -c 'import secrets; print(secrets.token_hex(32))'` in a file only the portal reads.",
            id="portal.E001",
        ))  # fmt: skip
    elif configured and len(configured) < MIN_KEY_LENGTH:
        problems.append(checks.Error(
            f"AUDIT_CHAIN_KEY is {len(configured)} characters long; it must be at least {MIN_KEY_LENGTH}.",
            id="portal.E002",
        ))  # fmt: skip
    if not settings.AUDIT_HEAD_FILE and not settings.AUDIT_HEAD_SYSLOG:
        problems.append(checks.Warning(
            "Neither AUDIT_HEAD_FILE nor AUDIT_HEAD_SYSLOG is set: the audit chain's head is published nowhere, so "
            "deleting the newest audit events (or all of them) cannot be detected.",
            id="portal.W001",
        ))  # fmt: skip
    return problems
