"""Entra Connect, as far as mailboxes and pairing go: one sync tick reads AD over LDAP and updates the tenant.

It reads people only: ``(&(objectClass=user)(sAMAccountType=805306368))``. In AD the computer class derives
from user, so ``objectClass=user`` alone also matches computers; sAMAccountType 805306368 is a normal user
account, 805306369 a machine (MS-ADTS 2.2.16, SAM_NORMAL_USER_ACCOUNT / SAM_MACHINE_ACCOUNT).

Every person becomes an Entra user (entra_users.py, listed by Graph), joined to AD on the sourceAnchor (setting
``source_anchor``: mS-DS-ConsistencyGuid falling back to objectGUID, or objectGUID; exchange-facts §8). For every
person with a mailbox type (msExchRecipientTypeDetails), a tick also

- creates the mailbox if Entra has not seen the user (IsDirSynced true, IsExchangeCloudManaged false);
- always writes the identity attributes (displayName, cn, userPrincipalName) and ImmutableId (a copy of
  msExchGenericImmutableId, exchange-facts §3 table, §8): AD stays their authority;
- writes the Exchange attributes (proxyAddresses, mail, mailNickname, extensionAttributeN,
  msExchExtensionCustomAttributeN, msExchHideFromAddressLists, msExchRecipientTypeDetails) only while
  IsExchangeCloudManaged is false. Once it is true they are left alone; set it back to false and the next
  tick overwrites the cloud values with AD's, which is how a careless revert loses cloud-only edits
  (exchange-facts §1.7);
- removes the mailboxes of dir-synced users that are gone from AD.

With Exchange hybrid writeback on (setting ``hybrid_writeback``), the tick then writes ``User_<object id>`` into
each person's msDS-ExternalDirectoryObjectID when it differs, as Connect does "derived from cloudAnchor"
(exchange-facts §6, §8). WhenChangedUTC moves only when a value actually changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from . import ldap_wire, organization
from .config import LdapSource, Settings, Tenant
from .entra_users import EntraUsers
from .mailboxes import (
    ANCHOR,
    RECIPIENT_TYPES,
    directory_ids,
    exchange_values,
    from_directory,
    identity_values,
    now_utc,
    source_anchor,
    with_moera,
)
from .state import TenantState, format_date

log = logging.getLogger("sandbox.exchange_online")

PAGE_SIZE = 500
SAM_NORMAL_USER_ACCOUNT = 805306368
PEOPLE_FILTER = f"(&(objectClass=user)(sAMAccountType={SAM_NORMAL_USER_ACCOUNT}))"
EDOID_ATTRIBUTE = "msDS-ExternalDirectoryObjectID"
_SINGLE = (
    "cn", "displayName", "userPrincipalName", "mail", "mailNickname", "msExchHideFromAddressLists",
    "msExchRecipientTypeDetails", "sAMAccountName", "givenName", "sn", "title", "department",
    "msExchGenericImmutableId", EDOID_ATTRIBUTE, *(f"extensionAttribute{i}" for i in range(1, 16)),
)  # fmt: skip
_MULTI = ("proxyAddresses", *(f"msExchExtensionCustomAttribute{i}" for i in range(1, 6)))
_BINARY = ("objectGUID", "mS-DS-ConsistencyGuid")
ATTRIBUTES = [*_BINARY, *_SINGLE, *_MULTI]
_SINGLE_LOWER = tuple((name, name.lower()) for name in _SINGLE)
_MULTI_LOWER = tuple((name, name.lower()) for name in _MULTI)


def parse_user(raw: dict[str, list[bytes]], dn: str = "") -> dict[str, Any] | None:
    """A user's attributes from an LDAP entry's raw values; None when it has no objectGUID."""
    values = {name.lower(): items for name, items in raw.items() if items}
    guid = values.get("objectguid", [None])[0]
    if guid is None or len(guid) != 16:
        return None
    user: dict[str, Any] = {
        "dn": dn, "objectGUID": guid, "mS-DS-ConsistencyGuid": values.get("ms-ds-consistencyguid", [None])[0]
    }  # fmt: skip
    for name, lower in _SINGLE_LOWER:
        items = values.get(lower)
        user[name] = items[0].decode("utf-8") if items else None
    for name, lower in _MULTI_LOWER:
        items = values.get(lower)
        user[name] = [item.decode("utf-8") for item in items] if items else []
    hide = user["msExchHideFromAddressLists"]
    user["msExchHideFromAddressLists"] = hide is not None and hide.upper() == "TRUE"
    kind = user["msExchRecipientTypeDetails"]
    user["msExchRecipientTypeDetails"] = int(kind) if kind else None
    return user


def connect(source: LdapSource) -> ldap3.Connection:
    server = ldap3.Server(source.url, get_info=ldap3.NONE, connect_timeout=5)
    return ldap3.Connection(server, source.bind_dn, source.password, auto_bind=True, receive_timeout=30)


def read_directory(source: LdapSource, conn: ldap3.Connection | None = None) -> list[dict[str, Any]]:
    """Every person under the base DN, read with a paged search (on ``conn``, else on a connection of its own)."""
    own = conn is None
    conn = conn or connect(source)
    try:
        users = []
        for dn, raw in ldap_wire.paged_search(conn, source.base_dn, PEOPLE_FILTER, ATTRIBUTES, page_size=PAGE_SIZE):
            user = parse_user(raw, dn)
            if user is not None:
                users.append(user)
        return users
    finally:
        if own:
            conn.unbind()


def _shown(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != ANCHOR}


def dns_domain_of(dn: str) -> str:
    """contoso.com for CN=x,OU=y,DC=contoso,DC=com: what Graph shows as onPremisesDomainName."""
    labels = [part.split("=", 1)[1] for part in dn.split(",") if part.strip().lower().startswith("dc=")]
    return ".".join(labels)


def entra_user(
    user: dict[str, Any], anchor: str, tenant: Tenant, *, add_moera: bool, ids: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Entra user Connect makes of one AD person, in Graph's property names (without the two dates). ``ids``: the
    user's ``directory_ids``, when the caller has them already."""
    upn = user.get("userPrincipalName") or ""
    addresses = list(user.get("proxyAddresses") or [])
    alias = user.get("mailNickname") or ""
    if add_moera and alias:
        addresses = with_moera(addresses, alias, tenant)
    return {
        "id": (ids or directory_ids(user["objectGUID"]))["ExternalDirectoryObjectId"],
        "userPrincipalName": upn,
        "displayName": user.get("displayName") or user.get("cn"),
        "givenName": user.get("givenName"),
        "surname": user.get("sn"),
        "jobTitle": user.get("title"),
        "department": user.get("department"),
        "mail": user.get("mail"),
        "mailNickname": alias or None,
        "proxyAddresses": addresses,
        "accountEnabled": True,
        "userType": "Member",
        "onPremisesImmutableId": anchor,
        "onPremisesDistinguishedName": user.get("dn") or None,
        "onPremisesSamAccountName": user.get("sAMAccountName"),
        "onPremisesUserPrincipalName": upn or None,
        "onPremisesDomainName": dns_domain_of(user.get("dn") or "") or None,
        "onPremisesSyncEnabled": True,
    }


@contextlib.contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """A tick makes millions of small dicts, lists and strings, none in a cycle; the collector's passes over them (and
    over the tenant already in memory) were a third of a first tick at 100,000 users, growing with the tenant."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class DirectorySync:
    """Applies the directory to the tenant state, one tick at a time."""

    def __init__(
        self,
        *,
        state: TenantState,
        tenant: Tenant,
        settings: Settings,
        source: LdapSource | None,
        entra_users: EntraUsers | None = None,
    ) -> None:
        self.state, self.tenant, self.settings, self.source = state, tenant, settings, source
        self.entra_users = entra_users if entra_users is not None else EntraUsers()
        self.ticks = 0
        self.last_tick_at: dt.datetime | None = None  # the end of the last completed tick (UTC)

    def tick(self, *, initial: bool = False) -> dict[str, Any]:
        """Read AD and apply it; returns what changed. Raises if the directory cannot be read.

        ``initial``: the state is being (re)built, so the mailboxes made now count as long existing (the
        replication-lag fault is about objects created while a client is watching, not about a reset).
        """
        if self.source is None:
            return {"enabled": False}
        started = time.perf_counter()
        conn = connect(self.source)
        try:
            with _cycle_collector_paused():
                users = read_directory(self.source, conn)
                stats = self.apply(users, created=0.0 if initial else None, initial=initial)
                if self.settings.hybrid_writeback:
                    stats.update(self.write_back(conn, users))
        finally:
            conn.unbind()
        stats["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        self.last_tick_at = dt.datetime.now(dt.UTC)  # Graph's organization shows it as onPremisesLastSyncDateTime
        return stats

    def apply(
        self, users: list[dict[str, Any]], *, created: float | None = None, initial: bool = False
    ) -> dict[str, Any]:
        """Apply one read of AD. ``initial``: the state is being rebuilt (every Entra user looks new), so the tenant
        default marks nobody as newly arrived."""
        stats: dict[str, Any] = {"enabled": True, "seen": 0, "created": 0, "updated": 0, "unchanged": 0, "deleted": 0,
                                 "arrived_without_exchange": 0}  # fmt: skip
        add_moera = self.settings.add_moera
        attribute = self.settings.source_anchor
        people = []
        with self.state.lock:
            anchors: set[str] = set()
            everyone: set[str] = set()
            for user in users:
                anchor = source_anchor(user["objectGUID"], user["mS-DS-ConsistencyGuid"], attribute=attribute)
                everyone.add(anchor)
                ids = directory_ids(user["objectGUID"])  # once: three uses below, a tenth of a tick each
                guid = self._joined(anchor, ids)
                if self._arrives_under_default(user, anchor, ids, joined=guid is not None, initial=initial):
                    # exchange-facts §1.9: synced without Exchange attributes, no mailbox until it is licensed; then
                    # its mailbox (made cloud-managed by organization.license_user) is joined like any other.
                    shape = organization.entra_shape(self.state.default_users[anchor])
                    people.append(entra_user(shape, anchor, self.tenant, add_moera=False))
                    if guid is None:
                        stats["arrived_without_exchange"] += 1
                        continue
                else:
                    people.append(entra_user(user, anchor, self.tenant, add_moera=add_moera, ids=ids))
                    if RECIPIENT_TYPES.get(user["msExchRecipientTypeDetails"] or 0) is None:
                        continue  # a user without a mailbox
                stats["seen"] += 1
                anchors.add(anchor)
                if guid is None:
                    record = from_directory(user, self.tenant, add_moera=add_moera, anchor=anchor, ids=ids)
                    self.state.add(record, created=created)
                    stats["created"] += 1
                    continue
                current = self.state.get(guid)
                desired = dict(current)
                desired[ANCHOR] = anchor
                desired.update(identity_values(user, self.tenant))
                if not current["IsExchangeCloudManaged"]:
                    desired.update(exchange_values(user, self.tenant, add_moera=add_moera))
                if desired == current:
                    stats["unchanged"] += 1
                    continue
                if _shown(desired) != _shown(current):
                    desired["WhenChangedUTC"] = now_utc()  # re-anchoring alone is not a change Exchange shows
                self.state.replace(guid, desired)
                stats["updated"] += 1
            gone = [
                record["Guid"]
                for record, _meta in self.state.records()
                if record["IsDirSynced"] and record[ANCHOR] and record[ANCHOR] not in anchors
            ]
            for guid in gone:
                self.state.remove(guid)
            stats["deleted"] = len(gone)
            for anchor in [a for a in self.state.default_users if a not in everyone]:
                del self.state.default_users[anchor]
                self.state.version += 1
            self.ticks += 1
        stamp = format_date(dt.datetime.now(dt.UTC))
        stats["entra_users"] = self.entra_users.apply(people, stamp=stamp)
        return stats

    def _arrives_under_default(
        self, user: dict[str, Any], anchor: str, ids: dict[str, str], *, joined: bool, initial: bool
    ) -> bool:
        """Whether this AD user is (or was) synced while the tenant default was on: remembered from such a tick, or
        seen for the first time now (no mailbox, no Entra user yet) with the default on."""
        if anchor in self.state.default_users:
            return True
        if joined or initial or not self.state.cloud_managed_by_default:
            return False
        if self.entra_users.get(ids["ExternalDirectoryObjectId"]) is not None:
            return False  # synced before: the default changes nothing for it
        self.state.default_users[anchor] = organization.stripped(user)
        self.state.version += 1
        return True

    def _joined(self, anchor: str, ids: dict[str, str]) -> str | None:
        """The mailbox this AD user is joined to: by sourceAnchor, else (the anchor setting changed) by the ids
        derived from its objectGUID, so a changed anchor re-anchors the mailbox instead of making a second one."""
        guid = self.state.by_anchor(anchor)
        if guid is not None:
            return guid
        derived = ids["Guid"]
        record = self.state.get(derived)
        return derived if record is not None and record["IsDirSynced"] else None

    def write_back(self, conn: ldap3.Connection, users: list[dict[str, Any]]) -> dict[str, int]:
        """Exchange hybrid writeback of msDS-ExternalDirectoryObjectID: User_<object id>, where it differs."""
        changes = []
        for user in users:
            desired = "User_" + directory_ids(user["objectGUID"])["ExternalDirectoryObjectId"]
            if user.get(EDOID_ATTRIBUTE) != desired and user.get("dn"):
                changes.append((user["dn"], EDOID_ATTRIBUTE, desired))
        answers: list[dict[str, Any] | None] = [None] * len(changes)
        try:
            ldap_wire.replace_many(conn, changes, answers)
        except LDAPException as exc:
            log.warning("hybrid writeback stopped, the directory connection failed: %s", exc)
        written = 0
        for (dn, _attribute, _value), answer in zip(changes, answers, strict=True):
            if answer is not None and answer["result"] == 0:
                written += 1
            elif answer is not None:
                log.warning("hybrid writeback to %s refused: %s", dn, answer)
        return {"written_back": written, "writeback_failed": len(changes) - written}
