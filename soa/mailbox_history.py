"""A mailbox's history read back from the audit log: its timeline of events, grouped by correlation id into chains
(request → Exchange → AD), and its Exchange attributes and authority on both sides as they were at a past moment.

Pure functions over what the caller hands in (audit events, the mailbox's wave snapshots, its current row), so the
rules can be tested without a database and the pages decide which rows to read.

A value at a moment is the last *observation* of it at or before that moment: an event that wrote or read it (a
change request's request, its apply and read-back, a writeback's LDAP operations, a drift finding, a flip's copy into
AD), a wave's snapshot of both sides at submission, or the portal's current record. Where no observation reaches
back to the moment the value is *unknown*, and the page says from when the history knows it; it never guesses. The
inventory import keeps no copy of the values it read (only authority and presence changes are audited), so a change
made outside the portal is known only from the next observation after it.
"""

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from soa.attributes import BY_AD, BY_EXO, EXCHANGE_ATTRIBUTES, MappedAttribute
from soa.choices import TARGET_AUTHORITY, Authority, ChangeOperation, ChangeRoute
from soa.values import ad_values

EXO, AD, AUTHORITY = "exo", "ad", "authority"
SIDES = {EXO: "Exchange Online", AD: "Active Directory"}
AUTHORITY_LABELS = dict(Authority.choices)

# Which portal action lets a user see an event family on a mailbox's timeline (by the action's prefix). Help desk
# sees the edits, writebacks and drift of mailboxes in its scope; flips need wave_view; imports and refusals, which
# name other people's attempts and the tenant's import runs, need audit_view.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("soa.change.denied", "other", "audit_view"),
    ("writeback.drift.denied", "other", "audit_view"),
    ("soa.change.", "edit", "mailbox_view"),
    ("writeback.task.", "writeback", "mailbox_view"),
    ("writeback.drift", "drift", "mailbox_view"),
    ("soa.wave.", "wave", "wave_view"),
    ("writeback.inventory.", "inventory", "audit_view"),
)
DEFAULT_FAMILY = ("other", "audit_view")
FAMILY_LABELS = {
    "edit": "help-desk edits", "writeback": "writebacks to AD", "drift": "drift findings and repairs",
    "wave": "wave flips and reverts", "inventory": "inventory changes", "other": "refusals and other events",
}  # fmt: skip


def family(action: str) -> tuple[str, str]:
    """An action's family and the portal action needed to see it on a timeline."""
    for prefix, name, needs in FAMILIES:
        if action.startswith(prefix):
            return name, needs
    return DEFAULT_FAMILY


# -- observations -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One value of one attribute on one side (or the authority), as one event or snapshot showed it at ``at``.
    ``known`` False: the event shows that the value changed but not what it became (an LDAP add or delete to a
    value the history does not hold)."""

    at: dt.datetime
    side: str
    attribute: str
    value: Any
    source: str
    event_id: int | None = None
    known: bool = True


@dataclass
class Event:
    """The parts of an audit event the history reads (an AuditEvent row fits)."""

    id: int
    occurred_at: dt.datetime
    action: str
    object_type: str
    object_id: str
    before: Any = None
    after: Any = None
    correlation_id: str = ""
    actor_name: str = ""
    reason: str = ""


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _exchange_named(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values keyed by Exchange name or by LDAP name, as Exchange-named values of the Exchange attributes."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        attribute = BY_EXO.get(name) or BY_AD.get(str(name).lower())
        if attribute is None or attribute not in EXCHANGE_ATTRIBUTES:
            continue
        out[attribute.exo] = value if name == attribute.exo else ad_values({attribute.ad: value})[attribute.exo]
    return out


def _from_values(event, side: str, values: Mapping[str, Any], source: str) -> list[Observation]:
    return [
        Observation(event.occurred_at, side, name, value, source, event.id)
        for name, value in _exchange_named(values).items()
    ]


def _ldap_ops(event, applied: Mapping[str, Any], source: str) -> list[Observation]:
    """AD's values after a writeback's LDAP operations. A replace says the whole value; an add or a delete only says
    what moved, so it is recorded as a delta resolved against the value known just before (see ``values_at``)."""
    found = []
    for ldap_name, ops in applied.items():
        attribute = BY_AD.get(str(ldap_name).lower())
        if attribute is None or attribute not in EXCHANGE_ATTRIBUTES or not isinstance(ops, list):
            continue
        delta = [(str(op), list(values or [])) for op, values in ops]
        found.append(Observation(event.occurred_at, AD, attribute.exo, {"delta": delta}, source, event.id, False))
    return found


def observations(event: Event, *, mailbox_id: int, wave_directions: Mapping[int, str]) -> list[Observation]:
    """What ``event`` shows of mailbox ``mailbox_id``'s values and authority ([] when it shows none)."""
    after = _mapping(event.after)
    action = event.action
    if action == "soa.change.requested":
        # The request's "before" is the authoritative side's values the edit was checked against.
        side = AD if after.get("route") == ChangeRoute.AD_ONLY else EXO
        known = f"as the portal knew it when change #{event.object_id} was requested"
        return _from_values(event, side, _mapping(after.get("before")), known)
    if action == "soa.change.applied":
        results = _mapping(after.get("results"))
        found = []
        exchange, directory = _mapping(results.get("exchange")), _mapping(results.get("directory"))
        if exchange.get("read_back"):
            found += _from_values(
                event, EXO, exchange["read_back"], f"change #{event.object_id} read back from Exchange"
            )
        if directory.get("read_back"):
            found += _from_values(event, AD, directory["read_back"], f"change #{event.object_id} read back from AD")
        if not found and isinstance(after.get("desired"), dict):
            # No read-back recorded: the request's desired values, on the side its route wrote.
            side = AD if after.get("route") == ChangeRoute.AD_ONLY else EXO
            found += _from_values(event, side, after["desired"], f"change #{event.object_id} applied as asked")
        return found
    if action == "writeback.task.completed":
        return _ldap_ops(event, _mapping(after.get("applied")), f"writeback #{event.object_id} wrote AD")
    if action == "writeback.drift.found" and event.object_type == "writeback.driftfinding":
        return _drift_found(event, after)
    if action == "writeback.drift.found":  # a scan's page of findings
        return [
            obs
            for finding in after.get("findings") or []
            if isinstance(finding, dict) and finding.get("mailbox_id") == mailbox_id
            for obs in _drift_found(event, finding)
        ]
    if action == "writeback.drift.resolved" and after.get("resolution") == "OVERWRITTEN":
        value = {after.get("attribute"): after.get("cloud_value")}
        return _from_values(event, AD, value, "drift repaired: the cloud value written over AD's")
    if action == "soa.wave.member_done":
        wave = after.get("wave")
        found = []
        if wave in wave_directions:
            authority = TARGET_AUTHORITY[wave_directions[wave]]
            found.append(Observation(event.occurred_at, AUTHORITY, AUTHORITY, authority, f"flipped by wave #{wave}",
                                     event.id))  # fmt: skip
        written = _mapping(_mapping(after.get("ad_written")).get("after"))
        found += _from_values(event, AD, written, f"copied into AD by wave #{wave} before its flip back")
        return found
    if action == "writeback.inventory.changed":
        changed = _mapping(_mapping(after.get("changed")).get(str(mailbox_id)))
        authority = changed.get("authority")
        if isinstance(authority, list) and len(authority) == 2:
            return [Observation(event.occurred_at, AUTHORITY, AUTHORITY, authority[1], "seen by an inventory import",
                                event.id)]  # fmt: skip
    return []


def _drift_found(event, finding: Mapping[str, Any]) -> list[Observation]:
    name = finding.get("attribute")
    return [
        *_from_values(event, AD, {name: finding.get("ad_value")}, "drift found: AD's value"),
        *_from_values(event, EXO, {name: finding.get("cloud_value")}, "drift found: the cloud's value"),
    ]


def snapshot_observations(snapshot: Mapping[str, Any], at: dt.datetime, source: str, event_id: int | None = None):
    """Both sides and the authority from a snapshot (a wave member's at submission, or the current record)."""
    found = [Observation(at, AUTHORITY, AUTHORITY, snapshot["authority"], source, event_id)]
    for side in (EXO, AD):
        values = _mapping(snapshot.get(side))
        if values:  # a side's picture is whole: an attribute it lacks was empty then
            found += [Observation(at, side, a.exo, values.get(a.exo), source, event_id) for a in EXCHANGE_ATTRIBUTES]
    return found


# -- values at a moment -----------------------------------------------------------------------------------------


@dataclass
class Value:
    """One attribute on one side at a moment: its value and the observation that set it, or why it is unknown."""

    attribute: MappedAttribute | None
    side: str
    value: Any = None
    known: bool = False
    source: Observation | None = None
    unknown_reason: str = ""


@dataclass
class Moment:
    """A mailbox at a moment: its authority and every Exchange attribute on both sides."""

    at: dt.datetime
    authority: Value
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"attribute", "exo": Value, "ad": Value}
    before_history: bool = False  # the moment is before anything the history knows of the mailbox
    history_starts: dt.datetime | None = None


def _apply_delta(value: Any, delta: list[tuple[str, list]]) -> Any:
    # AD matches values case-insensitively, so a delete of "smtp:x" removes "SMTP:x" too.
    current = list(value or []) if isinstance(value, list) else ([] if value in (None, "") else [value])
    for op, values in delta:
        if op == "MODIFY_REPLACE":
            current = list(values)
        elif op == "MODIFY_ADD":
            present = {str(v).casefold() for v in current}
            current += [v for v in values if str(v).casefold() not in present]
        elif op == "MODIFY_DELETE":
            gone = {str(v).casefold() for v in values}
            current = [v for v in current if str(v).casefold() not in gone] if values else []
    return current


def _resolve(attribute: MappedAttribute, found: list[Observation]) -> tuple[Any, bool, Observation | None]:
    """The value after ``found`` (oldest first): the last whole value with every later LDAP delta applied."""
    value, known, source = None, False, None
    for obs in found:
        if obs.known:
            value, known, source = obs.value, True, obs
            continue
        delta = obs.value["delta"]
        replaced = any(op == "MODIFY_REPLACE" for op, _ in delta)
        if known or replaced:
            merged = _apply_delta(value, delta)
            value = ad_values({attribute.ad: merged})[attribute.exo]
            known, source = True, obs
        else:
            source = obs
    return value, known, source


def values_at(at: dt.datetime, found: Iterable[Observation], *, attributes=EXCHANGE_ATTRIBUTES) -> Moment:
    """Every Exchange attribute of both sides, and the authority, as the observations show them at ``at``."""
    ordered = sorted(found, key=lambda o: (o.at, o.event_id or 0))
    first: dict[tuple[str, str], dt.datetime] = {}
    for obs in ordered:
        first.setdefault((obs.side, obs.attribute), obs.at)
    upto = [obs for obs in ordered if obs.at <= at]
    starts = ordered[0].at if ordered else None
    moment = Moment(at=at, authority=Value(None, AUTHORITY), history_starts=starts,
                    before_history=starts is None or at < starts)  # fmt: skip
    by_key: dict[tuple[str, str], list[Observation]] = {}
    for obs in upto:
        by_key.setdefault((obs.side, obs.attribute), []).append(obs)
    moment.authority = _value(None, AUTHORITY, AUTHORITY, by_key, first)
    for attribute in attributes:
        moment.rows.append(
            {"attribute": attribute, **{side: _value(attribute, side, attribute.exo, by_key, first) for side in SIDES}}
        )
    return moment


def _value(attribute, side: str, name: str, by_key, first) -> Value:
    found = by_key.get((side, name), [])
    if attribute is None:
        value, known, source = (found[-1].value, True, found[-1]) if found else (None, False, None)
    else:
        value, known, source = _resolve(attribute, found)
    result = Value(attribute, side, value, known, source)
    if not known:
        since = first.get((side, name))
        what = "the authority" if attribute is None else attribute.label
        where = "" if attribute is None else f" in {SIDES[side]}"
        if since is None:
            result.unknown_reason = f"The history does not show {what}{where} at all."
        elif found:
            result.unknown_reason = (
                f"The history shows only what was added or removed here, not {what}{where} as a whole."
            )
        else:
            result.unknown_reason = f"The history does not show {what}{where} before {since:%Y-%m-%d %H:%M:%S} UTC."
    return result


def compare(earlier: Moment, later: Moment) -> list[dict[str, Any]]:
    """What differs between two moments: the authority and each attribute on each side, with both values."""
    changed = []
    if (earlier.authority.known, earlier.authority.value) != (later.authority.known, later.authority.value):
        changed.append({"label": "Authority", "side": "", "earlier": earlier.authority, "later": later.authority})
    for old, new in zip(earlier.rows, later.rows, strict=True):
        for side, side_label in SIDES.items():
            a, b = old[side], new[side]
            if (a.known, _comparable(a.value)) != (b.known, _comparable(b.value)):
                item = {"label": old["attribute"].label, "side": side_label, "earlier": a, "later": b}
                if a.known and b.known and isinstance(a.value, list) and isinstance(b.value, list):
                    # Exact text: a primary address that became secondary shows as SMTP: removed, smtp: added.
                    item["added"] = [value for value in b.value if value not in a.value]
                    item["removed"] = [value for value in a.value if value not in b.value]
                changed.append(item)
    return changed


def _comparable(value: Any) -> Any:
    # Address lists are sets to Exchange and AD: an order change is no change.
    return sorted(value, key=str) if isinstance(value, list) else value


# -- the timeline -----------------------------------------------------------------------------------------------


@dataclass
class Chain:
    """Events sharing one correlation id (one request followed through Exchange and AD), oldest first; an event
    without a correlation id is a chain of one."""

    correlation_id: str
    events: list = field(default_factory=list)

    @property
    def newest(self):
        return self.events[-1]

    @property
    def oldest(self):
        return self.events[0]

    @property
    def summary(self) -> str:
        """What the chain's request asked for, when it began with a change request ("" otherwise)."""
        first = self.oldest
        after = first.after if isinstance(first.after, dict) else {}
        if first.action != "soa.change.requested" or not isinstance(after.get("operations"), list):
            return ""
        labels = dict(ChangeOperation.choices)
        asked = []
        for operation in after["operations"]:
            if isinstance(operation, dict):
                detail = " ".join(str(operation[k]) for k in ("attribute", "address", "value") if operation.get(k))
                asked.append(f"{labels.get(operation.get('op'), operation.get('op'))} {detail}".strip())
        return f"Change request #{first.object_id}: {'; '.join(asked)}"


def chains(events_newest_first: Iterable) -> list[Chain]:
    """Group events (newest first) into chains, newest chain first; each chain sits where its newest event is."""
    result: list[Chain] = []
    by_id: dict[str, Chain] = {}
    for event in events_newest_first:
        key = event.correlation_id
        if key and key in by_id:
            by_id[key].events.insert(0, event)
            continue
        chain = Chain(correlation_id=key, events=[event])
        result.append(chain)
        if key:
            by_id[key] = chain
    return result
