"""Encoding Set-Mailbox parameters for the wire, and deciding whether a mailbox already shows them.

The second half is what makes writes safe to retry: after an ambiguous failure (a timeout, a 5xx, Exchange's
"error after applied"), the client re-reads the mailbox and compares it with the intent before sending again.

Addresses are only ever changed by Add/Remove. A full ``EmailAddresses`` list replaces the collection, and what
it leaves out is gone, including the two addresses Exchange and hybrid mail flow depend on: the MOERA
(``alias@<tenant>.onmicrosoft.com``, which Entra gives every mailbox) and the ``@<tenant>.mail.onmicrosoft.com``
address that on-premises mail is routed to (its targetAddress, exchange-facts §9). Those two are never removed,
and a write is verified to have kept them.
"""

from collections.abc import Iterable
from typing import Any

HASHTABLE_TYPE = "#Exchange.GenericHashTable"
# Addresses Exchange maintains itself (the tenant's MOERA address); a full EmailAddresses list need not name them.
SYSTEM_ADDRESS_SUFFIX = ".onmicrosoft.com"
ROUTING_ADDRESS_SUFFIX = ".mail.onmicrosoft.com"
# AD's rangeUpper for one proxyAddresses value, type prefix included (exchange-facts §3, MS-ADA3 2.169). Exchange
# would take a longer one, and AD would later refuse it, so the lossless revert could not copy it back.
PROXY_ADDRESS_MAX_LENGTH = 1123


class AddressChangeRefused(ValueError):
    """An EmailAddresses change the client will not send: a full list, removing a tenant address, or a value too
    long for AD."""


def _with_type(raw: str) -> str:
    return raw if ":" in raw else f"smtp:{raw}"


def is_tenant_address(raw: str) -> bool:
    """Whether a proxy address is one of the tenant's own SMTP addresses: the MOERA or the mail routing address."""
    kind, _, address = _with_type(raw).partition(":")
    return kind.lower() == "smtp" and address.lower().endswith(SYSTEM_ADDRESS_SUFFIX)


def tenant_addresses(addresses: Iterable[str]) -> set[tuple[str, str]]:
    """The MOERA and routing addresses among ``addresses``, as comparison keys (a primary stays a primary)."""
    return {_proxy_key(raw) for raw in addresses if is_tenant_address(raw)}


def check_address_change(name: str, value: Any) -> None:
    """Refuse, before anything is sent, an address change that would lose an address or that AD cannot hold."""
    if name == "EmailAddresses":
        if not isinstance(value, dict):
            raise AddressChangeRefused(
                'EmailAddresses is changed only by {"Add": [...], "Remove": [...]}: a full list replaces the '
                "mailbox's addresses, and would drop the ones it leaves out, the tenant's own among them."
            )
        tenant = [raw for raw in value.get("Remove", []) if is_tenant_address(raw)]
        if tenant:
            raise AddressChangeRefused(
                f"Refusing to remove {', '.join(tenant)}: the MOERA (@<tenant>.onmicrosoft.com) and the routing "
                f"address (@<tenant>{ROUTING_ADDRESS_SUFFIX}) are Exchange's own and must stay on the mailbox."
            )
        added = list(value.get("Add", []))
    elif name == "WindowsEmailAddress":
        added = [f"SMTP:{value}"] if value else []
    else:
        return
    for raw in added:
        stored = _with_type(raw)
        if len(stored) > PROXY_ADDRESS_MAX_LENGTH:
            raise AddressChangeRefused(
                f"The address {stored[:60]}... is {len(stored)} characters long; Active Directory holds at most "
                f"{PROXY_ADDRESS_MAX_LENGTH} per proxyAddresses value, so it could never be written back."
            )


def missing_tenant_addresses(mailbox: dict[str, Any], keep: set[tuple[str, str]]) -> list[str]:
    """Which of the tenant addresses in ``keep`` the mailbox no longer holds (any type: primary or not)."""
    current = {address for _, address in (_proxy_key(a) for a in mailbox.get("EmailAddresses") or [])}
    return sorted(address for _, address in keep if address not in current)


def encode_parameter(name: str, value: Any) -> Any:
    """A {"Add", "Remove"} dict becomes Exchange's annotated hashtable; anything else is sent as it is."""
    if isinstance(value, dict):
        unknown = set(value) - {"Add", "Remove"}
        if unknown:
            raise ValueError(f"{name} as a change takes only Add and Remove, not {', '.join(sorted(unknown))}.")
        return {"@odata.type": HASHTABLE_TYPE} | {key: list(items) for key, items in value.items()}
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return value


def _proxy_key(address: str) -> tuple[str, str]:
    """(type as Exchange distinguishes it, address lower-cased): "SMTP" primary differs from "smtp" secondary."""
    prefix, sep, rest = address.partition(":")
    if not sep:
        return "smtp", address.lower()
    return (prefix if prefix.lower() == "smtp" else prefix.lower()), rest.lower()


def _proxies_match(actual: list[str], intended: Any) -> bool:
    current = {_proxy_key(a) for a in actual}
    if isinstance(intended, dict):
        added = {_proxy_key(a) for a in intended.get("Add", [])}
        removed = {_proxy_key(a)[1] for a in intended.get("Remove", [])}
        return added <= current and not any(address in removed for _, address in current)
    wanted = {_proxy_key(a) for a in intended}
    extra = {key for key in current - wanted if not key[1].endswith(SYSTEM_ADDRESS_SUFFIX)}
    return wanted <= current and not extra


def _values_match(actual: list[str] | None, intended: Any) -> bool:
    current = {value.casefold() for value in actual or []}
    if isinstance(intended, dict):
        added = {value.casefold() for value in intended.get("Add", [])}
        removed = {value.casefold() for value in intended.get("Remove", [])}
        return added <= current and not (removed & current)
    return current == {value.casefold() for value in intended}


def state_matches(mailbox: dict[str, Any], params: dict[str, Any], *, keep: set[tuple[str, str]] = frozenset()) -> bool:
    """True when the mailbox as read already holds every value in ``params`` (set_mailbox's arguments) and still
    every tenant address in ``keep`` (those it held before an EmailAddresses change)."""
    if keep and missing_tenant_addresses(mailbox, keep):
        return False
    for name, intended in params.items():
        actual = mailbox.get(name)
        if name == "EmailAddresses":
            ok = _proxies_match(list(actual or []), intended)
        elif name.startswith("ExtensionCustomAttribute"):
            ok = _values_match(actual, intended)
        elif name == "WindowsEmailAddress":
            current = actual or mailbox.get("PrimarySmtpAddress") or ""
            ok = current.lower() == str(intended).lower()
        elif name.startswith("CustomAttribute"):
            ok = (actual or "") == (intended or "")
        else:
            ok = actual == intended
        if not ok:
            return False
    return True
