"""What the audit list says about the objects its events touched: the mailbox behind each event (a help-desk edit,
a writeback task, a drift finding, a wave member all belong to one), the events of the mailboxes a search names,
and what an event changed, key by key.

The events name their object by type and id only (the hash chain covers what was written at the time); the mailbox
is looked up when the page is shown, for the events of that page, one query per object type.
"""

import json
from typing import Any

from django.db import connection
from django.db.models import Q

from portal.models import AuditEvent
from soa.models import ChangeRequest, Mailbox, PilotWave, WaveMember
from soa.selectors import mailbox_search
from soa.services.undo import undoable_event_ids
from writeback.models import DriftFinding, WritebackTask

MAILBOX = "soa.mailbox"
# Objects that belong to one mailbox: the audit object type -> its model (each has a mailbox_id).
BELONGS_TO_MAILBOX = {
    "soa.changerequest": ChangeRequest,
    "soa.wavemember": WaveMember,
    "writeback.writebacktask": WritebackTask,
    "writeback.driftfinding": DriftFinding,
}
# Events that name the mailboxes they concern in their values (soa.services.wave_members).
MEMBERSHIP_ACTIONS = ("soa.wave.members_added", "soa.wave.members_removed")
# Mailboxes a search may name before it is too broad to list their events.
MAILBOX_SEARCH_LIMIT = 200


def _ids(values) -> list[int]:
    return [int(value) for value in values if str(value).isdigit()]


def name_mailboxes(events) -> None:
    """Give each event of ``events`` a ``mailbox`` (display name, UPN and primary address), or None."""
    wanted: dict[str, set[int]] = {}
    for event in events:
        wanted.setdefault(event.object_type, set()).update(_ids([event.object_id]))
    owner: dict[tuple[str, int], int] = {(MAILBOX, pk): pk for pk in wanted.get(MAILBOX, ())}
    for object_type, model in BELONGS_TO_MAILBOX.items():
        if wanted.get(object_type):
            for pk, mailbox_id in model.objects.filter(pk__in=wanted[object_type]).values_list("pk", "mailbox_id"):
                owner[(object_type, pk)] = mailbox_id
    mailboxes = Mailbox.objects.only("pk", "display_name", "upn", "primary_smtp").in_bulk(set(owner.values()))
    for event in events:
        ids = _ids([event.object_id])
        event.mailbox = mailboxes.get(owner.get((event.object_type, ids[0]))) if ids else None


def mailbox_events(*, user, text: str) -> tuple[Q, int]:
    """The filter of the events that touched any mailbox ``text`` finds (any word of its name, its UPN or any of its
    addresses, by prefix), and how many mailboxes that is (at most MAILBOX_SEARCH_LIMIT + 1)."""
    ids = list(
        mailbox_search(user=user, query=text).order_by("pk").values_list("pk", flat=True)[: MAILBOX_SEARCH_LIMIT + 1]
    )
    return mailbox_ids_events(ids), len(ids)


def mailbox_ids_events(ids: list[int]) -> Q:
    """The filter of the events of mailboxes ``ids``: on the mailboxes, and on their edits, wave memberships,
    writeback tasks and drift findings.

    The objects' ids are read first and written into the filter as lists: a subquery there hides them from the
    planner, which then walks the whole log in time order instead of looking each object up in its index (50 ms
    against under 1 at 100,000 events on PostgreSQL, bench/bench_audit_list.py)."""
    match = _objects(MAILBOX, ids)
    for object_type, model in BELONGS_TO_MAILBOX.items():
        match |= _objects(object_type, model.objects.filter(mailbox_id__in=ids).values_list("pk", flat=True))
    return match | _membership_mentions(ids)


def _membership_mentions(ids: list[int]) -> Q:
    """The events that name a mailbox only inside their values: a wave's members added or removed, recorded on the
    wave with the mailboxes' ids in a list (a removed member has no row left to find them by)."""
    if not ids:
        return Q(pk__in=[])
    events = AuditEvent.objects.filter(object_type=PilotWave._meta.label_lower, action__in=MEMBERSHIP_ACTIONS)
    if connection.vendor == "postgresql":
        # jsonb containment, checked only on the membership events the action index finds.
        mentions = Q(pk__in=[])
        for pk in ids:
            mentions |= Q(after__added_mailbox_ids__contains=[pk]) | Q(after__removed_mailbox_ids__contains=[pk])
        return Q(action__in=MEMBERSHIP_ACTIONS, object_type=PilotWave._meta.label_lower) & mentions
    # Elsewhere (SQLite: small deployments and tests) the membership events are read and their lists checked here.
    wanted, found = set(ids), []
    for pk, after in events.values_list("pk", "after").iterator(chunk_size=500):
        listed = [*(after or {}).get("added_mailbox_ids", []), *(after or {}).get("removed_mailbox_ids", [])]
        if wanted.intersection(listed):
            found.append(pk)
    return Q(pk__in=found)


def wave_events(wave_id: int) -> Q:
    """The filter of the events of wave ``wave_id``: those recorded on the wave itself and on each of its members
    (added, flipped, retried, swept), by the member rows' ids, so a mailbox's events from other waves stay out."""
    members = WaveMember.objects.filter(wave_id=wave_id).values_list("pk", flat=True)
    return Q(object_type=PilotWave._meta.label_lower, object_id=str(wave_id)) | _objects("soa.wavemember", members)


def _objects(object_type: str, pks) -> Q:
    texts = [str(pk) for pk in pks]
    return Q(object_type=object_type, object_id__in=texts) if texts else Q(pk__in=[])


def changed_keys(before: Any, after: Any) -> list[dict[str, Any]]:
    """The keys whose values differ between an event's before and after, in order, each with both values (None for a
    key one side lacks; a side that is None, as before a creation, holds no key); [] when a side is neither a mapping
    nor None (shown whole instead)."""
    before, after = ({} if side is None else side for side in (before, after))
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    keys = list(dict.fromkeys([*before, *after]))
    return [
        {
            "key": key,
            "before": _shown(before.get(key)),
            "after": _shown(after.get(key)),
            "added": key not in before,
            "removed": key not in after,
        }
        for key in keys
        if before.get(key) != after.get(key) or (key in before) != (key in after)
    ]


def _shown(value: Any) -> str | None:
    # Text as it is; lists, numbers, booleans as JSON (what the export holds), not as Python's repr.
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def undoable(user, events) -> set[int]:
    """The ids among ``events`` of the applied edits ``user`` may undo (each row's undo link)."""
    return undoable_event_ids(user, list(events))
