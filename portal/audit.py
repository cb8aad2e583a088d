"""The audit log's only writer.

Every privileged change records an AuditEvent inside the same transaction as the change, so a change that
rolls back leaves no history and no history exists without its change. Events form a chain keyed with a secret held
outside the database (portal.audit_chain): each event's hash covers its id, its content and the previous event's hash,
so an edit, a deletion or a renumbering made behind the database triggers' back is found by ``verify_chain()``
(``manage.py audit_verify``), and so is a rewrite that recomputes every later hash, which needs the key. Removal of the
newest events is found against the heads published outside the database (portal.audit_head).
"""

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.utils import timezone

from portal.audit_chain import GENESIS_HASH, BrokenLink, ChainKeyMissing, compute_hash, require_chain_key, verify_chain
from portal.correlation import get_correlation_id
from portal.models import AuditEvent

__all__ = ["GENESIS_HASH", "MASK", "AuditError", "BrokenLink", "audit_record", "audit_record_many", "compute_hash",
           "mask_secrets", "verify_chain"]  # fmt: skip

MASK = "********"
# Keys whose values must never reach the history: whatever their nesting, they are replaced by MASK.
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|private[-_]?key|credential|authorization|cookie|session[-_]?id",
    re.IGNORECASE,
)
# A word each alternative of _SECRET_KEY contains: text holding none of them holds no secret-looking key. (Searching a
# serialised event with _SECRET_KEY itself took five times as long as masking it.)
_SECRET_STEMS = ("pass", "secret", "token", "key", "credential", "authorization", "cookie", "session")
# Serialised lock for appends on PostgreSQL (two concurrent appenders would otherwise fork the chain).
# SQLite needs none: the portal opens its transactions IMMEDIATE, which already serialises writers.
_PG_CHAIN_LOCK_KEY = 0x50A_A0D17


class AuditError(RuntimeError):
    """The audit log cannot record this event as asked."""


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


def _stored_json(value: Any) -> Any:
    """``value`` as the event stores it: secrets masked, then as plain JSON. Masking walks every key in Python, so it is
    skipped when the serialised value holds none of _SECRET_STEMS anywhere (no key can then be secret-looking: the
    stems are ASCII letters, which JSON never escapes)."""
    if value is None:
        return None
    text = json.dumps(value, cls=DjangoJSONEncoder)
    lowered = text.lower()
    if not any(stem in lowered for stem in _SECRET_STEMS):
        return json.loads(text)
    return _plain_json(mask_secrets(value))


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
    event = _build(actor=actor, action=action, obj=obj, object_type=object_type, object_id=object_id,
                   object_repr=object_repr, before=before, after=after, reason=reason,
                   correlation_id=correlation_id)  # fmt: skip
    _append([event])
    event.save(force_insert=True)
    return event


def audit_record_many(events: list[dict[str, Any]]) -> list[AuditEvent]:
    """Append several events at once, in the order given: one chain lock and one INSERT for all of them. Each dict
    holds audit_record's arguments for one event. Must be called inside the transaction that makes the changes;
    nothing is recorded when any event is refused."""
    built = [_build(**arguments) for arguments in events]
    if not built:
        return []
    _append(built)
    if connection.vendor == "postgresql":
        _copy_in(built)
    else:
        AuditEvent.objects.bulk_create(built)
    return built


def _copy_in(events: list[AuditEvent]) -> None:
    """Insert ``events`` with one COPY. Django's bulk_create sends PostgreSQL one array per column, which the driver
    quotes element by element in Python: for the writeback batches' events that was 134 us an event against 45 us
    for COPY (measured on 200 completion events). COPY fires the same INSERT triggers as an INSERT."""
    fields = AuditEvent._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    rows = [[field.get_db_prep_save(getattr(event, field.attname), connection) for field in fields] for event in events]
    # The driver's own cursor sends COPY; wrap_database_errors raises its errors as Django's (IntegrityError,
    # OperationalError), which callers catch, as for any other statement.
    statement = f"COPY {table} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _build(
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
    return AuditEvent(
        occurred_at=timezone.now(),
        actor=actor if actor is not None and actor.pk else None,
        actor_name=_actor_name(actor),
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        object_repr=str(object_repr)[:500],
        before=_stored_json(before),
        after=_stored_json(after),
        reason=reason,
        correlation_id=correlation_id if correlation_id is not None else get_correlation_id(),
    )


def _append(events: list[AuditEvent]) -> None:
    """Give ``events`` the ids and hashes that continue the chain; the caller inserts them."""
    try:
        key = require_chain_key()
    except ChainKeyMissing as exc:
        raise AuditError(str(exc)) from exc
    _lock_chain_head()
    last_id, last_hash = AuditEvent.objects.order_by("-id").values_list("id", "hash").first() or (0, GENESIS_HASH)
    for event in events:
        # The id is set here, not drawn from the database's sequence: the keyed hash covers it, and a sequence
        # leaves gaps where transactions rolled back. The chain lock makes last_id + 1 free.
        event.id = last_id + 1
        event.prev_hash = last_hash
        event.hash = compute_hash(event, key)
        last_id, last_hash = event.id, event.hash


def _actor_name(actor: Any) -> str:
    if actor is None or not getattr(actor, "pk", None):
        return "system"
    full_name = actor.get_full_name() if hasattr(actor, "get_full_name") else ""
    return f"{actor.get_username()} ({full_name})" if full_name else actor.get_username()
