"""Both sides' values in one shape, keyed by Exchange Online property name, and the differences between them.

Exchange Online answers Get-Mailbox with its property names and types; AD answers with LDAP names, integers
for recipient types and case-preserving strings. Everything the portal stores, shows or compares goes
through here first, so "differs" means the same thing in the inventory, the drift scan and the writeback.
"""

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from soa.attributes import EXCHANGE_ATTRIBUTES, IDENTITY_ATTRIBUTES, Kind, MappedAttribute

if TYPE_CHECKING:
    from soa.models import Mailbox

# msExchRecipientTypeDetails of a remote mailbox in AD -> RecipientTypeDetails in Exchange Online.
RECIPIENT_TYPES = {
    2147483648: "UserMailbox",
    34359738368: "SharedMailbox",
    8589934592: "RoomMailbox",
    17179869184: "EquipmentMailbox",
}
# Get-Mailbox has no property for these; they are shown from AD and never compared.
AD_ONLY = frozenset({"RecipientDisplayType"})
# Exchange Online adds alias@<tenant>.onmicrosoft.com (the MOERA) to every synced mailbox; AD never holds it.
_MOERA = re.compile(r"@[^.@]+\.onmicrosoft\.com$", re.IGNORECASE)


def guid_from_bytes(guid_bytes: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=guid_bytes)


def _first(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return [str(value)]


def _as_bool(value: Any) -> bool:
    value = _first(value)
    if isinstance(value, str):
        return value.strip().upper() == "TRUE"
    return bool(value)


def _normalise(attribute: MappedAttribute, value: Any) -> Any:
    if value is None:  # most mapped attributes are absent from most entries: the answer without the calls below
        return [] if attribute.multi_valued else False if attribute.kind is Kind.BOOLEAN else None
    if attribute.multi_valued:
        return _as_list(value)
    if attribute.kind is Kind.BOOLEAN:
        return _as_bool(value)
    value = _first(value)
    if value is None or value == "":
        return None
    if attribute.exo == "RecipientTypeDetails" and not isinstance(value, str):
        return RECIPIENT_TYPES.get(int(value), str(value))
    if attribute.kind is Kind.INTEGER and not isinstance(value, str):
        return int(value)
    return str(value)


def exo_values(mailbox: Mapping[str, Any]) -> dict[str, Any]:
    """The mapped attributes of a Get-Mailbox object (Exchange and identity), normalised."""
    values = {}
    for attribute in (*EXCHANGE_ATTRIBUTES, *IDENTITY_ATTRIBUTES):
        if attribute.exo in AD_ONLY or attribute.exo not in mailbox:
            continue
        values[attribute.exo] = _normalise(attribute, mailbox[attribute.exo])
    return values


def ad_values(entry: Mapping[str, Any], attributes: Iterable[MappedAttribute] | None = None) -> dict[str, Any]:
    """The mapped attributes of an AD user entry (LDAP names, any letter case), keyed by EXO name; only
    ``attributes`` when given (a writeback compares the few it wrote, not all forty)."""
    by_lower = {name.lower(): value for name, value in entry.items()}
    chosen = (*EXCHANGE_ATTRIBUTES, *IDENTITY_ATTRIBUTES) if attributes is None else attributes
    return {attribute.exo: _normalise(attribute, by_lower.get(attribute.ad.lower())) for attribute in chosen}


def _proxy_set(addresses: list[str]) -> set[tuple[str, str]]:
    keys = set()
    for raw in addresses:
        prefix, sep, address = raw.partition(":")
        if not sep:
            prefix, address = "smtp", raw
        if prefix.lower() == "smtp" and is_moera(address):
            continue
        keys.add((prefix if prefix.lower() == "smtp" else prefix.lower(), address.lower()))
    return keys


def same_value(attribute: MappedAttribute, cloud: Any, ad: Any) -> bool:
    """Whether the two sides hold the same value, by Exchange's rules for that attribute."""
    if attribute.kind is Kind.PROXY:
        return _proxy_set(_as_list(cloud)) == _proxy_set(_as_list(ad))
    if attribute.multi_valued:
        return {v.casefold() for v in _as_list(cloud)} == {v.casefold() for v in _as_list(ad)}
    if attribute.kind is Kind.BOOLEAN:
        return _as_bool(cloud) == _as_bool(ad)
    if attribute.exo in ("WindowsEmailAddress", "Alias"):
        return (cloud or "").lower() == (ad or "").lower()
    return (cloud if cloud != "" else None) == (ad if ad != "" else None)


def drifted_attributes(cloud: Mapping[str, Any], ad: Mapping[str, Any]) -> list[str]:
    """EXO names of the Exchange attributes whose values differ between the two sides (both must be known)."""
    # Equal values are the same by every rule same_value applies; most of a mailbox's are, so they are not asked.
    return [
        attribute.exo
        for attribute in EXCHANGE_ATTRIBUTES
        if attribute.exo not in AD_ONLY
        and attribute.exo in cloud
        and cloud[attribute.exo] != ad.get(attribute.exo)
        and not same_value(attribute, cloud[attribute.exo], ad.get(attribute.exo))
    ]


def refresh_drift(mailbox: "Mailbox") -> None:
    """Recompute the mailbox's drift from the two sides' stored values (none unless both sides are known)."""
    mailbox.drift = (
        drifted_attributes(mailbox.exo_values, mailbox.ad_values) if mailbox.in_exo and mailbox.in_ad else []
    )
    mailbox.has_drift = bool(mailbox.drift)


def is_moera(address: str) -> bool:
    """Whether an SMTP address (without its type) is a tenant's alias@<tenant>.onmicrosoft.com."""
    return bool(_MOERA.search(address))


def split_proxy(raw: str) -> tuple[str, str, bool]:
    """("smtp", "a@b.c", is_primary) from "SMTP:a@b.c"; an address without a type is SMTP."""
    prefix, sep, address = raw.partition(":")
    if not sep:
        return "smtp", raw.lower(), False
    return prefix.lower(), address.lower(), prefix == "SMTP"
