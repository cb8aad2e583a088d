"""The Entra ID users Entra Connect made from AD users: what Microsoft Graph's ``/v1.0/users`` lists.

Every AD person in sync scope becomes an Entra user, with or without a mailbox. Its ``id`` is the object id that
Exchange shows as ``ExternalDirectoryObjectId`` (exchange-facts §8), and its ``onPremises*`` properties say where
it came from: ``onPremisesImmutableId`` is the sourceAnchor, ``onPremisesDistinguishedName`` and
``onPremisesSamAccountName`` the AD object's. The sync tick rebuilds the set from AD each time, so it is not
persisted; cloud-only users (the tenant's mailboxes that are not dir-synced) are listed from the mailbox state.

Users are plain dicts with Graph's property names, never changed in place (a change replaces the dict).
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

# What the tick compares to decide whether a user changed (onPremisesLastSyncDateTime moves only then).
_VOLATILE = ("onPremisesLastSyncDateTime", "createdDateTime")


class EntraUsers:
    """The synced Entra users, in the order Connect first created them (Graph's listing and paging order)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self._users: dict[str, dict[str, Any]] = {}
            self._seq: dict[str, int] = {}
            self._order: list[int] = []
            self._by_seq: dict[int, str] = {}
            self._next = 0

    def __len__(self) -> int:
        return len(self._users)

    def get(self, object_id: str) -> dict[str, Any] | None:
        return self._users.get(object_id)

    def apply(self, users: list[dict[str, Any]], *, stamp: str) -> dict[str, int]:
        """Make the set exactly ``users`` (Graph-shaped dicts without the two dates, handed over: a new or changed
        user is kept as given, its dates added, rather than copied: the copies were 44 MB of the emulator's 975 MB
        peak at 100,000 users); returns the counts."""
        stats = {"created": 0, "updated": 0, "deleted": 0}
        with self.lock:
            seen: set[str] = set()
            for user in users:
                object_id = user["id"]
                seen.add(object_id)
                current = self._users.get(object_id)
                if current is None:
                    self._next += 1
                    self._seq[object_id] = self._next
                    self._order.append(self._next)
                    self._by_seq[self._next] = object_id
                    user.update(createdDateTime=stamp, onPremisesLastSyncDateTime=stamp)
                    self._users[object_id] = user
                    stats["created"] += 1
                elif {k: v for k, v in current.items() if k not in _VOLATILE} != user:
                    user.update(createdDateTime=current["createdDateTime"], onPremisesLastSyncDateTime=stamp)
                    self._users[object_id] = user
                    stats["updated"] += 1
            for object_id in [i for i in self._users if i not in seen]:
                del self._users[object_id]
                self._by_seq.pop(self._seq.pop(object_id), None)
                stats["deleted"] += 1
            if stats["deleted"]:
                self._order = [seq for seq in self._order if seq in self._by_seq]
        return stats

    def page(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int, bool]:
        """Up to ``limit`` users created after sequence number ``after``: (users, last seq served, more left)."""
        with self.lock:
            start = bisect.bisect_right(self._order, after)
            chosen = self._order[start : start + limit]
            users = [self._users[self._by_seq[seq]] for seq in chosen]
            last = chosen[-1] if chosen else after
            return users, last, start + limit < len(self._order)
