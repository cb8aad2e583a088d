"""The audit log's only writer and its verifier.

Every privileged change records an AuditEvent inside the same transaction as the change, so a change that
rolls back leaves no history and no history exists without its change. Events form a hash chain: each
event's hash covers its content and the previous event's hash, so an edit or deletion made behind the
database triggers' back is found by ``verify_chain()`` (``manage.py audit_verify``).
"""

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from portal.correlation import get_correlation_id
from portal.models import AuditEvent

GENESIS_HASH = "0" * 64
MASK = "********"
# Keys whose values must never reach the history: whatever their nesting, they are replaced by MASK.
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|private[-_]?key|credential|authorization|cookie|session[-_]?id",
    re.IGNORECASE,
)
# Serialised lock for appends on PostgreSQL (two concurrent appenders would otherwise fork the chain).
# SQLite needs none: the portal opens its transactions IMMEDIATE, which already serialises writers.
_PG_CHAIN_LOCK_KEY = 0x50A_A0D17


class AuditError(RuntimeError):
    """The audit log cannot record this event as asked."""


@dataclass(frozen=True)
class BrokenLink:
    """The first event whose stored hash or back-link does not match what its content implies."""

    event_id: int
    reason: str


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    # Events repeat the same few hundred keys; a regex search per key and event was most of an append's CPU.
    return bool(_SECRET_KEY.search(key))


def mask_secrets(value: Any) -> Any:
    """Return a copy of ``value`` in which every secret-looking key's value is replaced by MASK."""
    if isinstance(value, Mapping):
        return {
            key: MASK if isinstance(key, str) and _secret_key(key) else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    return value


def _plain_json(value: Any) -> Any:
    # Round-trip through JSON so the hash covers exactly what the database will hand back later
    # (tuples become lists, dates become strings, keys become strings).
    return None if value is None else json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def compute_hash(event: AuditEvent) -> str:
    """The SHA-256 of the event's content and its predecessor's hash, in a canonical JSON form."""
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
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _lock_chain_head() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_CHAIN_LOCK_KEY])


def audit_record(
    *,
    actor: Any,
    action: str,
    obj: Any = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    reason: str = "",
    correlation_id: str | None = None,
) -> AuditEvent:
    """Append one event to the audit log. Must be called inside the transaction that makes the change.

    ``actor`` is a user or None for the system (a job acting on its own). ``obj`` may be a model instance, from
    which type, id and text are taken; explicit ``object_*`` arguments win. Secret-looking keys in ``before``
    and ``after`` are masked before anything is stored or hashed.
    """
    if not connection.in_atomic_block:
        raise AuditError(
            f"audit_record({action!r}) was called outside a transaction; wrap the change and its audit "
            "event in transaction.atomic() so both commit or neither does."
        )
    if not action:
        raise AuditError("An audit event needs an action code such as 'soa.wave.approved'.")
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)
    _lock_chain_head()
    last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
    event = AuditEvent(
        occurred_at=timezone.now(),
        actor=actor if actor is not None and actor.pk else None,
        actor_name=_actor_name(actor),
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        object_repr=str(object_repr)[:500],
        before=_plain_json(mask_secrets(before)),
        after=_plain_json(mask_secrets(after)),
        reason=reason,
        correlation_id=correlation_id if correlation_id is not None else get_correlation_id(),
        prev_hash=last or GENESIS_HASH,
    )
    event.hash = compute_hash(event)
    event.save(force_insert=True)
    return event


def _actor_name(actor: Any) -> str:
    if actor is None or not getattr(actor, "pk", None):
        return "system"
    full_name = actor.get_full_name() if hasattr(actor, "get_full_name") else ""
    return f"{actor.get_username()} ({full_name})" if full_name else actor.get_username()


def verify_chain(*, chunk_size: int = 2000) -> tuple[int, BrokenLink | None]:
    """Recompute the whole chain in id order; return (events checked, first broken link or None).

    Streams the table, so memory stays flat however long the history is.
    """
    expected_prev = GENESIS_HASH
    checked = 0
    with transaction.atomic():
        for event in AuditEvent.objects.order_by("id").iterator(chunk_size=chunk_size):
            if event.prev_hash != expected_prev:
                return checked, BrokenLink(
                    event.pk, "its link to the previous event does not match (an event was removed or inserted)"
                )
            if compute_hash(event) != event.hash:
                return checked, BrokenLink(event.pk, "its content no longer matches its hash (it was modified)")
            expected_prev = event.hash
            checked += 1
    return checked, None


def audit_record_many(events: Sequence[Mapping[str, Any]]) -> list[AuditEvent]:
    """Append several events (each given as ``audit_record``'s keyword arguments), in order, with one lock, one read
    of the chain's head and one INSERT: for jobs that end a batch of rows in one transaction. Same rules as
    ``audit_record``: inside the transaction of the change, secrets masked before anything is stored or hashed."""
    if not events:
        return []
    if not connection.in_atomic_block:
        raise AuditError("audit_record_many() was called outside a transaction; wrap the changes and their events.")
    _lock_chain_head()
    last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH
    rows = []
    now = timezone.now()
    for spec in events:
        actor, obj = spec.get("actor"), spec.get("obj")
        if not spec.get("action"):
            raise AuditError("An audit event needs an action code such as 'soa.wave.approved'.")
        correlation_id = spec.get("correlation_id")
        event = AuditEvent(
            occurred_at=now,
            actor=actor if actor is not None and actor.pk else None,
            actor_name=_actor_name(actor),
            action=spec["action"],
            object_type=spec.get("object_type") or (obj._meta.label_lower if obj is not None else ""),
            object_id=str(spec.get("object_id") or (obj.pk if obj is not None else "")),
            object_repr=str(spec.get("object_repr") or (obj if obj is not None else ""))[:500],
            before=_plain_json(mask_secrets(spec.get("before"))),
            after=_plain_json(mask_secrets(spec.get("after"))),
            reason=spec.get("reason", ""),
            correlation_id=correlation_id if correlation_id is not None else get_correlation_id(),
            prev_hash=last,
        )
        event.hash = last = compute_hash(event)
        rows.append(event)
    return AuditEvent.objects.bulk_create(rows)
