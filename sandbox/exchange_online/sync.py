"""Entra Connect, as far as mailboxes go: one sync tick reads AD over LDAP and updates the tenant.

For every AD user with a mailbox type (msExchRecipientTypeDetails), a tick

- creates the mailbox if Entra has not seen the user (IsDirSynced true, IsExchangeCloudManaged false);
- always writes the identity attributes (displayName, cn, userPrincipalName): AD stays their authority;
- writes the Exchange attributes (proxyAddresses, mail, mailNickname, extensionAttributeN,
  msExchExtensionCustomAttributeN, msExchHideFromAddressLists, msExchRecipientTypeDetails) only while
  IsExchangeCloudManaged is false. Once it is true they are left alone; set it back to false and the next
  tick overwrites the cloud values with AD's, which is how a careless revert loses cloud-only edits
  (exchange-facts §1.7);
- removes the mailboxes of dir-synced users that are gone from AD.

WhenChangedUTC moves only when a value actually changed. Users are joined to mailboxes by the source
anchor (ImmutableId), as Entra Connect does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ldap3

from .config import LdapSource, Settings, Tenant
from .mailboxes import RECIPIENT_TYPES, exchange_values, from_directory, identity_values, immutable_id, now_utc
from .state import TenantState

log = logging.getLogger("sandbox.exchange_online")

PAGE_SIZE = 500
_SINGLE = (
    "cn", "displayName", "userPrincipalName", "mail", "mailNickname", "msExchHideFromAddressLists",
    "msExchRecipientTypeDetails", *(f"extensionAttribute{i}" for i in range(1, 16)),
)  # fmt: skip
_MULTI = ("proxyAddresses", *(f"msExchExtensionCustomAttribute{i}" for i in range(1, 6)))
_BINARY = ("objectGUID", "mS-DS-ConsistencyGuid")
ATTRIBUTES = [*_BINARY, *_SINGLE, *_MULTI]


def parse_user(raw: dict[str, list[bytes]]) -> dict[str, Any] | None:
    """A user's attributes from an LDAP entry's raw values; None when it has no objectGUID."""
    values = {name.lower(): items for name, items in raw.items()}

    def first(name: str) -> bytes | None:
        items = values.get(name.lower()) or []
        return items[0] if items else None

    guid = first("objectGUID")
    if guid is None or len(guid) != 16:
        return None
    user: dict[str, Any] = {"objectGUID": guid, "mS-DS-ConsistencyGuid": first("mS-DS-ConsistencyGuid")}
    for name in _SINGLE:
        value = first(name)
        user[name] = value.decode("utf-8") if value is not None else None
    for name in _MULTI:
        user[name] = [item.decode("utf-8") for item in values.get(name.lower()) or []]
    hide = user["msExchHideFromAddressLists"]
    user["msExchHideFromAddressLists"] = hide is not None and hide.upper() == "TRUE"
    kind = user["msExchRecipientTypeDetails"]
    user["msExchRecipientTypeDetails"] = int(kind) if kind else None
    return user


def read_directory(source: LdapSource) -> list[dict[str, Any]]:
    """Every user under the base DN, read with a paged search on one connection."""
    server = ldap3.Server(source.url, get_info=ldap3.NONE, connect_timeout=5)
    conn = ldap3.Connection(server, source.bind_dn, source.password, auto_bind=True, receive_timeout=30)
    try:
        users = []
        for item in conn.extend.standard.paged_search(
            source.base_dn, "(objectClass=user)", attributes=ATTRIBUTES, paged_size=PAGE_SIZE, generator=True
        ):
            if item.get("type") != "searchResEntry":
                continue
            user = parse_user(item["raw_attributes"])
            if user is not None:
                users.append(user)
        return users
    finally:
        conn.unbind()


class DirectorySync:
    """Applies the directory to the tenant state, one tick at a time."""

    def __init__(self, *, state: TenantState, tenant: Tenant, settings: Settings, source: LdapSource | None) -> None:
        self.state, self.tenant, self.settings, self.source = state, tenant, settings, source
        self.ticks = 0

    def tick(self, *, initial: bool = False) -> dict[str, Any]:
        """Read AD and apply it; returns what changed. Raises if the directory cannot be read.

        ``initial``: the state is being (re)built, so the mailboxes made now count as long existing (the
        replication-lag fault is about objects created while a client is watching, not about a reset).
        """
        if self.source is None:
            return {"enabled": False}
        started = time.perf_counter()
        users = read_directory(self.source)
        stats = self.apply(users, created=0.0 if initial else None)
        stats["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return stats

    def apply(self, users: list[dict[str, Any]], *, created: float | None = None) -> dict[str, Any]:
        stats = {"enabled": True, "seen": 0, "created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
        add_moera = self.settings.add_moera
        with self.state.lock:
            anchors: set[str] = set()
            for user in users:
                if RECIPIENT_TYPES.get(user["msExchRecipientTypeDetails"] or 0) is None:
                    continue  # a user without a mailbox
                stats["seen"] += 1
                anchor = immutable_id(user["objectGUID"], user["mS-DS-ConsistencyGuid"])
                anchors.add(anchor)
                guid = self.state.by_anchor(anchor)
                if guid is None:
                    self.state.add(from_directory(user, self.tenant, add_moera=add_moera), created=created)
                    stats["created"] += 1
                    continue
                current = self.state.get(guid)
                desired = dict(current)
                desired.update(identity_values(user, self.tenant))
                if not current["IsExchangeCloudManaged"]:
                    desired.update(exchange_values(user, self.tenant, add_moera=add_moera))
                if desired == current:
                    stats["unchanged"] += 1
                    continue
                desired["WhenChangedUTC"] = now_utc()
                self.state.replace(guid, desired)
                stats["updated"] += 1
            gone = [
                record["Guid"]
                for record, _meta in self.state.records()
                if record["IsDirSynced"] and record["ImmutableId"] and record["ImmutableId"] not in anchors
            ]
            for guid in gone:
                self.state.remove(guid)
            stats["deleted"] = len(gone)
            self.ticks += 1
        return stats
