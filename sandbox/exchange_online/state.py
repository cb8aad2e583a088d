"""The tenant's mailboxes in memory: thread-safe, indexed, optionally persisted to a JSON file.

Records are plain dicts keyed by Exchange property names and are never changed in place: a write builds
a new dict and calls :meth:`TenantState.replace`. A reader may therefore keep a record it got under the
lock and serialise it after releasing the lock.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .addresses import Proxy
from .materials import write_atomic

log = logging.getLogger("sandbox.exchange_online")

DATE_FIELDS = ("WhenChangedUTC", "WhenCreatedUTC")
STATE_FORMAT = 2  # 2: the sourceAnchor is the record's _sourceAnchor, ImmutableId is msExchGenericImmutableId
# The record key of the sourceAnchor: emulator-internal, not an Exchange property, never shown by Get-Mailbox.
ANCHOR = "_sourceAnchor"
# Properties an Identity parameter resolves against (besides every proxy address).
IDENTITY_KEYS = (
    "Guid", "ExchangeGuid", "ExternalDirectoryObjectId", "UserPrincipalName", "Alias", "Name", "DistinguishedName",
    "WindowsEmailAddress", "PrimarySmtpAddress",
)  # fmt: skip


@dataclass
class Meta:
    """What the emulator knows about a record that Exchange does not show."""

    seq: int  # creation order: listing and paging order
    created: float  # epoch seconds, with sub-second precision (replication lag)
    written: float = 0.0  # when a cmdlet last changed it (replication lag after a write); not persisted


def identity_key(value: str) -> str:
    text = value.strip().lower()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    return text


class TenantState:
    """All mailboxes of the tenant. Take ``lock`` around any read-modify-write."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.version = 0  # bumped by every change; the persister writes when it moves
        self._empty()

    def _empty(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, Meta] = {}
        # Key -> the guid holding it, or a set of guids once a second mailbox holds it too: a set per key (a dozen
        # keys a mailbox) was a quarter of the emulator's memory (1.40 GB -> 1.03 GB at 100,000 mailboxes).
        self._identity: dict[str, str | set[str]] = {}
        self._proxies: dict[str, str | set[str]] = {}
        self._anchors: dict[str, str] = {}
        self._released: dict[str, tuple[str, float]] = {}
        self._seq = 0
        # Creation order for paging: sequence numbers ascending and who holds each, so a page can start at
        # its skip token with a binary search instead of walking the whole tenant.
        self._order: list[int] = []
        self._by_seq: dict[int, str] = {}
        # The tenant default (exchange-facts §1.9, Set-OrganizationConfig; sandbox/exchange_online/organization.py),
        # and the synced users that arrived while it was on, by sourceAnchor: they have no mailbox until licensed.
        self.cloud_managed_by_default = False
        self.default_users: dict[str, dict[str, Any]] = {}

    # -- reading -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def get(self, guid: str) -> dict[str, Any] | None:
        return self._records.get(guid)

    def meta(self, guid: str) -> Meta:
        return self._meta[guid]

    def records(self, after: int = 0) -> Iterator[tuple[dict[str, Any], Meta]]:
        """Records created after sequence number ``after``, in creation order (hold the lock while iterating)."""
        if len(self._order) != len(self._records):  # removals leave holes; drop them now
            self._order = [seq for seq in self._order if self._by_seq.get(seq) in self._records]
            self._by_seq = {seq: self._by_seq[seq] for seq in self._order}
        order = self._order
        for index in range(bisect.bisect_right(order, after), len(order)):
            guid = self._by_seq[order[index]]
            yield self._records[guid], self._meta[guid]

    def resolve(self, identity: str) -> list[str]:
        """Guids of the mailboxes an Identity value designates (several: ambiguous)."""
        found = _holders(self._identity.get(identity_key(identity)))
        return sorted(found, key=lambda guid: self._meta[guid].seq)

    def by_anchor(self, anchor: str) -> str | None:
        """The dir-synced mailbox joined to the AD user with this sourceAnchor."""
        return self._anchors.get(anchor)

    def proxy_holders(self, key: str) -> set[str]:
        return _holders(self._proxies.get(key))

    def released(self, key: str) -> tuple[str, float] | None:
        """(former holder, when) of an address removed from a mailbox, if it was."""
        return self._released.get(key)

    # -- writing -------------------------------------------------------------------------------------

    def add(self, record: dict[str, Any], *, created: float | None = None, seq: int | None = None) -> None:
        with self.lock:
            guid = record["Guid"]
            if guid in self._records:
                raise ValueError(f"mailbox {guid} exists")
            if seq is None:
                self._seq += 1
                seq = self._seq
            else:
                self._seq = max(self._seq, seq)
            self._records[guid] = record
            self._meta[guid] = Meta(seq=seq, created=time.time() if created is None else created)
            if self._order and seq < self._order[-1]:
                bisect.insort(self._order, seq)
            else:
                self._order.append(seq)
            self._by_seq[seq] = guid
            self._index(record)
            self.version += 1

    def replace(self, guid: str, record: dict[str, Any], *, written: bool = False) -> None:
        """Put ``record`` in place of the mailbox's; ``written``: a cmdlet changed it (the replication-lag clock)."""
        with self.lock:
            if written:
                self._meta[guid].written = time.time()
            old = self._records[guid]
            self._unindex(old, removed_at=time.time(), keep=_proxy_keys(record))
            self._records[guid] = record
            self._index(record)
            self.version += 1

    def remove(self, guid: str) -> dict[str, Any] | None:
        with self.lock:
            old = self._records.pop(guid, None)
            if old is not None:
                self._by_seq.pop(self._meta.pop(guid).seq, None)
                self._unindex(old, removed_at=time.time(), keep=set())
                self.version += 1
            return old

    def clear(self) -> None:
        with self.lock:
            self._empty()
            self.version += 1

    def _index(self, record: dict[str, Any]) -> None:
        guid = record["Guid"]
        identities, proxies = _keys(record)
        for key in identities:
            _hold(self._identity, key, guid)
        for key in proxies:
            _hold(self._proxies, key, guid)
            self._released.pop(key, None)
        if record.get("IsDirSynced") and record.get(ANCHOR):
            self._anchors[record[ANCHOR]] = guid

    def _unindex(self, record: dict[str, Any], *, removed_at: float, keep: set[str]) -> None:
        guid = record["Guid"]
        identities, proxies = _keys(record)
        for key in identities:
            _let_go(self._identity, key, guid)
        for key in proxies:
            _let_go(self._proxies, key, guid)
        for key in proxies - keep:
            self._released[key] = (guid, removed_at)
        if self._anchors.get(record.get(ANCHOR) or "") == guid:
            del self._anchors[record[ANCHOR]]

    # -- persistence ---------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        with self.lock:
            return {
                "format": STATE_FORMAT,
                "mailboxes": [
                    {**to_json(record), "_seq": meta.seq, "_created": meta.created} for record, meta in self.records()
                ],
                "released": {key: list(value) for key, value in self._released.items()},
                "organization": {"cloud_managed_by_default": self.cloud_managed_by_default},
                "default_users": dict(self.default_users),
            }

    def load(self, data: dict[str, Any]) -> None:
        with self.lock:
            old_format = data.get("format", 1) < STATE_FORMAT
            for item in data.get("mailboxes", []):
                item = dict(item)
                seq, created = item.pop("_seq", None), item.pop("_created", None)
                if old_format:
                    # Format 1 kept the sourceAnchor in ImmutableId, which Get-Mailbox showed; it moves out of sight.
                    item[ANCHOR] = item.get("ImmutableId", "") if item.get("IsDirSynced") else ""
                    item["ImmutableId"] = ""
                self.add(from_json(item), created=created, seq=seq)
            self.cloud_managed_by_default = bool(data.get("organization", {}).get("cloud_managed_by_default", False))
            self.default_users.update(data.get("default_users", {}))
            for key, (guid, when) in data.get("released", {}).items():
                self._released.setdefault(key, (guid, when))


def _hold(index: dict[str, str | set[str]], key: str, guid: str) -> None:
    held = index.get(key)
    if held is None:
        index[key] = guid
    elif isinstance(held, str):
        if held != guid:
            index[key] = {held, guid}
    else:
        held.add(guid)


def _let_go(index: dict[str, str | set[str]], key: str, guid: str) -> None:
    held = index.get(key)
    if held is None:
        return
    if isinstance(held, str):
        if held == guid:
            del index[key]
        return
    held.discard(guid)
    if len(held) == 1:
        index[key] = next(iter(held))
    elif not held:
        del index[key]


def _holders(held: str | set[str] | None) -> set[str]:
    if held is None:
        return set()
    return {held} if isinstance(held, str) else set(held)


def _proxy_keys(record: dict[str, Any]) -> set[str]:
    return {Proxy.parse(value).key for value in record.get("EmailAddresses") or []}


def _keys(record: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The Identity values that find the record (see ``resolve``), and its proxy address keys; each address parsed
    once."""
    identities = {identity_key(str(record[name])) for name in IDENTITY_KEYS if record.get(name)}
    proxies = set()
    for value in record.get("EmailAddresses") or []:
        identities.add(value.lower())
        proxy = Proxy.parse(value)
        if proxy.is_smtp:
            identities.add(proxy.address.lower())
        proxies.add(proxy.key)
    return identities, proxies


def format_date(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(record: dict[str, Any]) -> dict[str, Any]:
    """A record with its dates as ISO 8601 strings."""
    return {k: format_date(v) if isinstance(v, dt.datetime) else v for k, v in record.items()}


def from_json(item: dict[str, Any]) -> dict[str, Any]:
    record = dict(item)
    for name in DATE_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = dt.datetime.fromisoformat(record[name].replace("Z", "+00:00")).astimezone(dt.UTC)
    return record


class Persister:
    """Writes the state to a file (atomically) shortly after it changes, and once more on stop."""

    def __init__(self, state: TenantState, path: Path, *, interval: float = 0.5) -> None:
        self.state, self.path, self.interval = state, path, interval
        self._written = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exo-state-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        version = self.state.version
        if version == self._written:
            return
        data = json.dumps(self.state.dump(), ensure_ascii=False).encode("utf-8")
        try:
            write_atomic(self.path, data)
            self._written = version
        except OSError:
            log.exception("could not write the state file %s", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()
