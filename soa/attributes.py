"""The attribute map: every attribute the portal handles, on both sides, and what may happen to it.

One table, read by validation, writeback, drift detection, revert and the pages' labels, so the rules are
stated once. Facts from reference/exchange-facts.md: §2.2 (the 24 attributes Microsoft's Cloud Sync writes
back at GA), §3 (LDAP names, syntaxes and limits), §5 (Exchange's validation limits), §1.6 (identity
attributes stay mastered in AD).
"""

from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings


class Kind(StrEnum):
    STRING = "string"
    PROXY = "proxy"  # "type:address" values of proxyAddresses / EmailAddresses
    BOOLEAN = "boolean"
    INTEGER = "integer"


@dataclass(frozen=True)
class MappedAttribute:
    """One attribute as Exchange Online and Active Directory name it, with its limits and policy."""

    exo: str  # Exchange Online property (Get-Mailbox / Set-Mailbox)
    ad: str  # LDAP attribute name in AD
    label: str
    kind: Kind = Kind.STRING
    multi_valued: bool = False
    max_length: int | None = None  # per value, in characters
    max_values: int | None = None
    microsoft_writeback: bool = False  # one of the 24 that Entra Cloud Sync writes back (GA)
    editable: bool = False  # help desk may edit it in the portal (once Exchange Online holds authority)
    identity: bool = False  # mastered in AD whatever the authority flag; the portal never writes it

    @property
    def written_back(self) -> bool:
        """Whether this installation writes the attribute back into AD after a cloud edit."""
        if self.identity:
            return False
        if self.ad == "msExchHideFromAddressLists":
            return settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS
        return self.microsoft_writeback


_EXCHANGE: tuple[MappedAttribute, ...] = (
    MappedAttribute(
        "EmailAddresses", "proxyAddresses", "Email addresses", Kind.PROXY, multi_valued=True, max_length=1123,
        microsoft_writeback=True, editable=True,
    ),
    MappedAttribute(
        "WindowsEmailAddress", "mail", "Primary email (mail)", max_length=256, microsoft_writeback=True, editable=True
    ),
    *(
        MappedAttribute(
            f"CustomAttribute{i}", f"extensionAttribute{i}", f"Custom attribute {i}", max_length=1024,
            microsoft_writeback=True, editable=True,
        )
        for i in range(1, 16)
    ),
    *(
        MappedAttribute(
            f"ExtensionCustomAttribute{i}", f"msExchExtensionCustomAttribute{i}", f"Extension custom attribute {i}",
            multi_valued=True, max_values=1300, microsoft_writeback=True, editable=True,
        )
        for i in range(1, 6)
    ),
    MappedAttribute(
        "HiddenFromAddressListsEnabled", "msExchHideFromAddressLists", "Hidden from address lists", Kind.BOOLEAN,
        editable=True,
    ),
    MappedAttribute(
        "RecipientTypeDetails", "msExchRecipientTypeDetails", "Recipient type", Kind.INTEGER, microsoft_writeback=True
    ),
    MappedAttribute(
        "RecipientDisplayType", "msExchRecipientDisplayType", "Recipient display type", Kind.INTEGER,
        microsoft_writeback=True,
    ),
    MappedAttribute("Alias", "mailNickname", "Alias", max_length=64),
)  # fmt: skip

_IDENTITY: tuple[MappedAttribute, ...] = (
    MappedAttribute("UserPrincipalName", "userPrincipalName", "User principal name", identity=True),
    MappedAttribute("DisplayName", "displayName", "Display name", identity=True),
    MappedAttribute("FirstName", "givenName", "First name", identity=True),
    MappedAttribute("LastName", "sn", "Last name", identity=True),
    MappedAttribute("Department", "department", "Department", identity=True),
)

ATTRIBUTES: tuple[MappedAttribute, ...] = _EXCHANGE + _IDENTITY
BY_EXO: dict[str, MappedAttribute] = {a.exo: a for a in ATTRIBUTES}
BY_AD: dict[str, MappedAttribute] = {a.ad.lower(): a for a in ATTRIBUTES}

# What a revert to AD authority copies into AD first: every Exchange attribute, not only the written-back ones,
# because the next sync overwrites the cloud with whatever AD holds.
EXCHANGE_ATTRIBUTES: tuple[MappedAttribute, ...] = _EXCHANGE
EDITABLE_ATTRIBUTES: tuple[MappedAttribute, ...] = tuple(a for a in _EXCHANGE if a.editable)
IDENTITY_ATTRIBUTES: tuple[MappedAttribute, ...] = _IDENTITY


def writeback_attributes() -> tuple[MappedAttribute, ...]:
    """The attributes this installation writes back into AD after an edit in Exchange Online."""
    return tuple(a for a in _EXCHANGE if a.written_back)


def by_ad_name(name: str) -> MappedAttribute:
    """Look up by LDAP name, which AD matches case-insensitively."""
    return BY_AD[name.lower()]
