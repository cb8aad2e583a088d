"""Writing the Exchange attributes of many users with few round trips: what a writeback batch sends.

``DirectoryClient.write`` costs three requests a user (search, modify, search), each waiting for its answer.
``write_many`` reads every user of a batch in one search (an OR of their objectGUIDs), sends one modify for each user
whose values differ, all without waiting for each answer (``DirectoryClient.modify_many``), and reads the modified
users' written attributes back in one search: n + 2 requests for n users, and about two round trips. A user whose
modify conflicts with the entry as it now is (edited since the read), or whose read-back still differs, is handed to
``DirectoryClient.write``, which re-reads and re-plans as it always has. Each user's outcome is its own: a refused
modify fails that user only; a retryable error (the directory unreachable or busy) is the outcome of every user it
left unfinished, and the next attempt reads first, so nothing is written twice.

AD accepts an OR of equality terms on objectGUID (an indexed attribute) and answers an unpaged search with up to
MaxPageSize (1,000) entries; a search here asks for at most GUIDS_PER_SEARCH.
"""

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from writeback.directory.client import DirectoryClient, Written, _plan
from writeback.directory.errors import DirectoryConflict, DirectoryError, DirectoryNotFound, DirectoryRetryable
from writeback.directory.modify import EXCHANGE_LDAP_ATTRIBUTES, Changes, normalise_entry, syntax
from writeback.directory.pipeline import or_of_equalities

GUIDS_PER_SEARCH = 100

Desired = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class Item:
    """One user to write: its objectGUID and its desired values as a function of the entry as read (called once
    per read, before any modify is planned; an exception it raises is that user's outcome and stops its write)."""

    guid: uuid.UUID
    desired: Desired


@dataclass
class Outcome:
    """What became of one item: ``written`` (as ``DirectoryClient.write`` returns it) or ``error``."""

    written: Written | None = None
    error: BaseException | None = None


def read_many(
    client: DirectoryClient, guids: Sequence[uuid.UUID], attributes: Iterable[str] = EXCHANGE_LDAP_ATTRIBUTES
) -> dict[uuid.UUID, tuple[str, dict[str, Any]]]:
    """The DN and normalised Exchange attributes of each user found, by objectGUID; a GUID no entry holds is absent.
    Only ``attributes`` are asked for (every Exchange attribute by default); the others read as absent."""
    found: dict[uuid.UUID, tuple[str, dict[str, Any]]] = {}
    wanted = [*attributes, "objectGUID"]
    for start in range(0, len(guids), GUIDS_PER_SEARCH):
        chunk = [guid.bytes_le for guid in guids[start : start + GUIDS_PER_SEARCH]]
        for dn, raw in client.search_raw(client.config.base_dn, or_of_equalities("objectGUID", chunk), wanted):
            by_lower = {name.lower(): values for name, values in raw.items()}
            guid = by_lower.get("objectguid")
            if guid:
                found[uuid.UUID(bytes_le=guid[0])] = (dn, normalise_entry(by_lower))
    return found


def _not_found(client: DirectoryClient, guid: uuid.UUID) -> DirectoryNotFound:
    return DirectoryNotFound(
        f"No directory entry under {client.config.base_dn} has objectGUID {guid}.",
        operation="search",
        target=client.config.base_dn,
    )


def write_many(client: DirectoryClient, items: Sequence[Item]) -> list[Outcome]:
    """Bring every item's user to its desired values; one Outcome per item, in order. Safe to re-run: it reads first
    and writes only what differs."""
    outcomes = [Outcome() for _ in items]
    try:
        first = read_many(client, [item.guid for item in items])
    except DirectoryError as error:  # the directory's answer for the whole batch: each item ends with it
        for outcome in outcomes:
            outcome.error = error
        return outcomes
    planned: list[tuple[int, str, dict[str, Any], Changes]] = []  # index, DN, values as read, changes to send
    for index, item in enumerate(items):
        if item.guid not in first:
            outcomes[index].error = _not_found(client, item.guid)
            continue
        dn, observed = first[item.guid]
        try:
            changes = _plan(dn, observed, item.desired(observed))
        except Exception as error:  # noqa: BLE001 - the item's own outcome; the caller decides what it means
            outcomes[index].error = error
            continue
        if changes:
            planned.append((index, dn, observed, changes))
        else:
            outcomes[index].written = Written(dn, observed, {}, observed)
    modified = _modify_all(client, items, outcomes, planned)
    _read_back(client, items, outcomes, modified)
    return outcomes


def _modify_all(
    client: DirectoryClient,
    items: Sequence[Item],
    outcomes: list[Outcome],
    planned: list[tuple[int, str, dict[str, Any], Changes]],
) -> list[tuple[int, str, dict[str, Any], Changes]]:
    """Send every planned modify at once (``DirectoryClient.modify_many``); the ones applied, for the read-back. A
    modify that conflicts with the entry as it now is (edited since the read, or a resent modify had landed) goes
    to the single-user path, which re-reads and re-plans; a retryable error there stops the others' turn, since
    the next request would meet the same directory."""
    modified, conflicts = [], []
    errors = client.modify_many([(dn, changes) for _index, dn, _observed, changes in planned])
    for write, error in zip(planned, errors, strict=True):
        if error is None:
            modified.append(write)
        elif isinstance(error, DirectoryConflict):
            conflicts.append(write)
        else:
            outcomes[write[0]].error = error
    for position, (index, dn, observed, _changes) in enumerate(conflicts):
        try:
            outcomes[index].written = _again(client, items[index], dn, observed)
        except DirectoryRetryable as error:
            for later, *_ in conflicts[position:]:
                outcomes[later].error = error
            break
        except Exception as error:  # noqa: BLE001 - as above
            outcomes[index].error = error
    return modified


def _read_back(
    client: DirectoryClient,
    items: Sequence[Item],
    outcomes: list[Outcome],
    modified: list[tuple[int, str, dict[str, Any], Changes]],
) -> None:
    if not modified:
        return
    # Only what was written is read back (parsing every Exchange attribute of every entry again would cost as much
    # as the first read); the others are as first read, and the check below compares the whole desired state.
    names = sorted({syntax(name).name for *_, changes in modified for name in changes})
    try:
        back = read_many(client, [items[index].guid for index, *_ in modified], names)
    except DirectoryError as error:
        # The modifies were sent; the next attempt reads first and finds them applied, so nothing is sent twice.
        for index, *_ in modified:
            outcomes[index].error = error
        return
    for index, dn, observed, changes in modified:
        item = items[index]
        try:
            if item.guid not in back:
                raise _not_found(client, item.guid)
            read_dn, partial = back[item.guid]
            read_back = {**observed, **{name: partial[name] for name in names}}
            if _plan(read_dn, read_back, item.desired(read_back)):
                # Changed again between the modify and the read-back: re-plan on the single-user path.
                outcomes[index].written = _again(client, item, dn, observed)
            else:
                outcomes[index].written = Written(read_dn, observed, changes, read_back)
        except Exception as error:  # noqa: BLE001 - as above
            outcomes[index].error = error


def _again(client: DirectoryClient, item: Item, dn: str, observed: dict[str, Any]) -> Written:
    """The single-user write, reported as ``DirectoryClient.write`` reports it: against the entry as first read."""
    written = client.write(item.guid, item.desired)
    return Written(written.dn, observed, _plan(dn, observed, item.desired(observed)), written.read_back)
