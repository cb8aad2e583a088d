"""Mailbox records: building them (from a directory user, or from given properties) and showing them.

Keys of a directory-synced mailbox are derived from the AD user, so they are the same after a restart
or a reset: ExternalDirectoryObjectId (the Entra user's object id), Guid and ExchangeGuid are UUIDv5 of the
objectGUID in three namespaces. The Entra sourceAnchor (base64 of ``mS-DS-ConsistencyGuid`` when set, else of
``objectGUID``, both in the byte order AD stores them, exchange-facts §3, §8) is kept in the record as
``_sourceAnchor``: the emulator's join key between AD users and cloud objects, never shown by Get-Mailbox.
Get-Mailbox's ``ImmutableId`` is Exchange's msExchGenericImmutableId (exchange-facts §3 table, §8): empty
unless the AD user carries that attribute.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import uuid
from typing import Any

from .addresses import full_list, primary_of
from .config import Tenant
from .payload import extra_properties
from .state import ANCHOR, format_date

CUSTOM_ATTRIBUTES = tuple(f"CustomAttribute{i}" for i in range(1, 16))
EXTENSION_ATTRIBUTES = tuple(f"ExtensionCustomAttribute{i}" for i in range(1, 6))
# What Entra Connect stops overwriting once IsExchangeCloudManaged is true (the Exchange attributes).
EXCHANGE_ATTRIBUTES = (
    "EmailAddresses", "PrimarySmtpAddress", "WindowsEmailAddress", "Alias", "HiddenFromAddressListsEnabled",
    "RecipientTypeDetails", *CUSTOM_ATTRIBUTES, *EXTENSION_ATTRIBUTES,
)  # fmt: skip
# What Entra Connect always writes: AD stays the authority for identity.
IDENTITY_ATTRIBUTES = ("DisplayName", "Name", "UserPrincipalName", "DistinguishedName")

# msExchRecipientTypeDetails (remote mailboxes of a hybrid organisation, and their on-prem forms).
RECIPIENT_TYPES = {
    2147483648: "UserMailbox",
    34359738368: "SharedMailbox",
    8589934592: "RoomMailbox",
    17179869184: "EquipmentMailbox",
    1: "UserMailbox",
    4: "SharedMailbox",
    16: "RoomMailbox",
    32: "EquipmentMailbox",
}
MAILBOX_TYPES = ("UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox")

_EDOID_NS = uuid.UUID("0f3c9d1e-2a4b-4c6d-8e0f-1a2b3c4d5e6f")
_GUID_NS = uuid.UUID("7d1e5f20-9a3b-4c8d-b1e2-f3a4b5c6d7e8")
_EXCHANGE_GUID_NS = uuid.UUID("c2a7e8f1-4b6d-4e9a-8c3f-5d7e9f1a2b3c")
SERVER = "SANDBOXPR01A001DC001.SANDBOXPR01A001.PROD.OUTLOOK.COM"


def now_utc() -> dt.datetime:
    """Exchange's WhenChangedUTC has one-second resolution, like AD's whenChanged."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def source_anchor(object_guid: bytes, consistency_guid: bytes | None = None, *, attribute: str = "") -> str:
    """Entra Connect's sourceAnchor, base64 of the anchor attribute's bytes as AD stores them (exchange-facts §3, §8).

    ``attribute`` "objectGUID" anchors on objectGUID; otherwise on mS-DS-ConsistencyGuid, falling back to
    objectGUID while it is empty, as Connect does (it fills the attribute from objectGUID; same bytes).
    """
    if attribute == "objectGUID":
        return base64.b64encode(object_guid).decode("ascii")
    return base64.b64encode(consistency_guid or object_guid).decode("ascii")


def directory_ids(object_guid: bytes) -> dict[str, str]:
    """Stable ids of the Entra user and its mailbox for an AD objectGUID (AD's little-endian bytes)."""
    name = str(uuid.UUID(bytes_le=object_guid)).encode("ascii")
    return {
        "ExternalDirectoryObjectId": _uuid5(_EDOID_NS.bytes, name),
        "Guid": _uuid5(_GUID_NS.bytes, name),
        "ExchangeGuid": _uuid5(_EXCHANGE_GUID_NS.bytes, name),
    }


def _uuid5(namespace: bytes, name: bytes) -> str:
    """``str(uuid.uuid5(namespace, name))`` (RFC 4122 §4.3) without the UUID objects, which cost a sync tick of a
    million users half a minute."""
    digest = bytearray(hashlib.sha1(namespace + name).digest()[:16])  # noqa: S324 - RFC 4122 names SHA-1
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def exchange_dn(name: str, tenant: Tenant) -> str:
    escaped = re.sub(r'([,+"\\<>;=#])', r"\\\1", name)
    return (
        f"CN={escaped},OU={tenant.initial_domain},OU=Microsoft Exchange Hosted Organizations,"
        "DC=SANDBOXPR01A001,DC=PROD,DC=OUTLOOK,DC=COM"
    )


def moera(alias: str, tenant: Tenant) -> str:
    """The Microsoft Online Email Routing Address Entra gives every mailbox: alias@<tenant>.onmicrosoft.com."""
    return f"smtp:{alias}@{tenant.initial_domain}"


def with_moera(addresses: list[str], alias: str, tenant: Tenant) -> list[str]:
    suffix = "@" + tenant.initial_domain.lower()
    if not alias or any(a.lower().endswith(suffix) for a in addresses):
        return addresses
    return [*addresses, moera(alias, tenant)]


def blank_record() -> dict[str, Any]:
    record: dict[str, Any] = {name: "" for name in CUSTOM_ATTRIBUTES}
    record.update({name: [] for name in EXTENSION_ATTRIBUTES})
    record.update(
        HiddenFromAddressListsEnabled=False,
        IsDirSynced=False,
        IsExchangeCloudManaged=False,
        RecipientType="UserMailbox",
        RecipientTypeDetails="UserMailbox",
        ImmutableId="",
    )
    record[ANCHOR] = ""
    return record


def from_directory(
    user: dict[str, Any], tenant: Tenant, *, add_moera: bool, anchor: str, ids: dict[str, str] | None = None
) -> dict[str, Any]:
    """A mailbox record as Entra Connect provisions it from one parsed AD user (see sync.parse_user); ``ids``: its
    ``directory_ids``, when the caller has them already."""
    record = blank_record()
    record.update(ids or directory_ids(user["objectGUID"]))
    record[ANCHOR] = anchor
    record["IsDirSynced"] = True
    record.update(identity_values(user, tenant))
    record.update(exchange_values(user, tenant, add_moera=add_moera))
    stamp = now_utc()
    record["WhenCreatedUTC"] = record["WhenChangedUTC"] = stamp
    return record


def identity_values(user: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    """What the sync writes whatever IsExchangeCloudManaged says: the identity attributes, and ImmutableId.

    ImmutableId is a copy of msExchGenericImmutableId; that it keeps flowing after the flip is a guess (it is
    not among the attributes cloud management takes over).
    """
    name = user.get("cn") or user.get("displayName") or user.get("mailNickname") or ""
    return {
        "Name": name,
        "DisplayName": user.get("displayName") or name,
        "UserPrincipalName": user.get("userPrincipalName") or "",
        "DistinguishedName": exchange_dn(name, tenant),
        "ImmutableId": user.get("msExchGenericImmutableId") or "",
    }


def exchange_values(user: dict[str, Any], tenant: Tenant, *, add_moera: bool) -> dict[str, Any]:
    """AD's Exchange attributes in Exchange terms: what sync writes while AD is the authority."""
    alias = user.get("mailNickname") or (user.get("userPrincipalName") or "").partition("@")[0]
    addresses = list(user.get("proxyAddresses") or [])
    mail = user.get("mail") or ""
    if not addresses and mail:
        addresses = [f"SMTP:{mail}"]
    if add_moera:
        addresses = with_moera(addresses, alias, tenant)
    primary = primary_of(addresses) or mail
    values: dict[str, Any] = {
        "Alias": alias,
        "EmailAddresses": addresses,
        "PrimarySmtpAddress": primary,
        "WindowsEmailAddress": mail or primary,
        "HiddenFromAddressListsEnabled": bool(user.get("msExchHideFromAddressLists")),
        "RecipientTypeDetails": RECIPIENT_TYPES.get(user.get("msExchRecipientTypeDetails") or 0, "UserMailbox"),
    }
    for name, source in _CUSTOM_SOURCES:
        values[name] = user.get(source) or ""
    for name, source in _EXTENSION_SOURCES:
        values[name] = list(user.get(source) or [])
    return values


# (Exchange name, AD name), made once: a sync tick of a million users would format them twenty million times.
_CUSTOM_SOURCES = tuple((name, f"extensionAttribute{i}") for i, name in enumerate(CUSTOM_ATTRIBUTES, 1))
_EXTENSION_SOURCES = tuple(
    (name, f"msExchExtensionCustomAttribute{i}") for i, name in enumerate(EXTENSION_ATTRIBUTES, 1)
)


ADMIN_FIELDS = {
    "Alias", "DisplayName", "Name", "UserPrincipalName", "EmailAddresses", "WindowsEmailAddress", "PrimarySmtpAddress",
    "HiddenFromAddressListsEnabled", "IsDirSynced", "IsExchangeCloudManaged", "RecipientTypeDetails",
    "ExternalDirectoryObjectId", "Guid", "ExchangeGuid", "ImmutableId", "WhenChangedUTC", "WhenCreatedUTC",
    ANCHOR, *CUSTOM_ATTRIBUTES, *EXTENSION_ATTRIBUTES,
}  # fmt: skip


def from_properties(props: dict[str, Any], tenant: Tenant, *, add_moera: bool) -> dict[str, Any]:
    """A mailbox made directly (admin endpoint or seed file): cloud-only unless IsDirSynced is given."""
    unknown = set(props) - ADMIN_FIELDS
    if unknown:
        raise ValueError(f"unknown mailbox properties: {', '.join(sorted(unknown))}")
    record = blank_record()
    upn = props.get("UserPrincipalName")
    alias = props.get("Alias") or (upn.partition("@")[0] if upn else f"mbx{uuid.uuid4().hex[:8]}")
    upn = upn or f"{alias}@{tenant.mail_domain}"
    addresses = full_list(props.get("EmailAddresses") or [f"SMTP:{props.get('PrimarySmtpAddress') or upn}"])
    if add_moera and "EmailAddresses" not in props:
        addresses = with_moera(addresses, alias, tenant)
    name = props.get("Name") or alias
    stamp = now_utc()
    record.update(
        Guid=str(uuid.uuid4()),
        ExchangeGuid=str(uuid.uuid4()),
        ExternalDirectoryObjectId=str(uuid.uuid4()),
        Alias=alias,
        Name=name,
        DisplayName=props.get("DisplayName") or name,
        UserPrincipalName=upn,
        DistinguishedName=exchange_dn(name, tenant),
        EmailAddresses=addresses,
        WhenCreatedUTC=stamp,
        WhenChangedUTC=stamp,
    )
    record.update({k: v for k, v in props.items() if k not in ("EmailAddresses",)})
    record["PrimarySmtpAddress"] = primary_of(addresses)
    record["WindowsEmailAddress"] = props.get("WindowsEmailAddress") or record["PrimarySmtpAddress"]
    return coerce_dates(record)


def coerce_dates(record: dict[str, Any]) -> dict[str, Any]:
    for name in ("WhenChangedUTC", "WhenCreatedUTC"):
        if isinstance(record.get(name), str):
            record[name] = dt.datetime.fromisoformat(record[name].replace("Z", "+00:00")).astimezone(dt.UTC)
    return record


_GUID_FIELDS = ("Guid", "ExchangeGuid", "ExchangeObjectId")
_COLLECTIONS = ("EmailAddresses", *EXTENSION_ATTRIBUTES)


def to_api(record: dict[str, Any], select: set[str] | None = None, *, tenant_domain: str = "") -> dict[str, Any]:
    """A record as Get-Mailbox returns it, with the OData type annotations of collections, GUIDs and dates.

    With ``tenant_domain`` (the tenant's initial domain) the object also carries the 200-odd properties real
    Exchange returns and the emulator does not model (payload.py), so it weighs what a real one does.
    """
    shown: dict[str, Any] = {
        "ExternalDirectoryObjectId": record["ExternalDirectoryObjectId"],
        "Identity": record["Name"],
        "Id": record["Name"],
        "Name": record["Name"],
        "Alias": record["Alias"],
        "DisplayName": record["DisplayName"],
        "UserPrincipalName": record["UserPrincipalName"],
        "PrimarySmtpAddress": record["PrimarySmtpAddress"],
        "WindowsEmailAddress": record["WindowsEmailAddress"],
        "EmailAddresses": list(record["EmailAddresses"]),
        "RecipientType": record["RecipientType"],
        "RecipientTypeDetails": record["RecipientTypeDetails"],
        "IsDirSynced": record["IsDirSynced"],
        "IsExchangeCloudManaged": record["IsExchangeCloudManaged"],
        "HiddenFromAddressListsEnabled": record["HiddenFromAddressListsEnabled"],
        **{name: record[name] for name in CUSTOM_ATTRIBUTES},
        **{name: list(record[name]) for name in EXTENSION_ATTRIBUTES},
        "ImmutableId": record["ImmutableId"],
        "DistinguishedName": record["DistinguishedName"],
        "Guid": record["Guid"],
        "ExchangeGuid": record["ExchangeGuid"],
        "ExchangeObjectId": record["Guid"],
        "WhenChangedUTC": format_date(record["WhenChangedUTC"]),
        "WhenCreatedUTC": format_date(record["WhenCreatedUTC"]),
    }
    annotated: dict[str, Any] = {}
    if tenant_domain:
        extra = extra_properties(
            record, tenant_domain, created=shown["WhenCreatedUTC"], changed=shown["WhenChangedUTC"]
        )
        annotated.update(extra)
    if select:
        wanted = {name.lower() for name in select}
        shown = {k: v for k, v in shown.items() if k.lower() in wanted}
        annotated = {k: v for k, v in annotated.items() if k.partition("@")[0].lower() in wanted}
    for key, value in shown.items():
        if key in _COLLECTIONS:
            annotated[f"{key}@odata.type"] = "#Collection(String)"
        elif key in _GUID_FIELDS:
            annotated[f"{key}@odata.type"] = "#Guid"
        elif key in ("WhenChangedUTC", "WhenCreatedUTC"):
            annotated[f"{key}@odata.type"] = "#DateTimeOffset"
        annotated[key] = value
    return annotated
