"""Encoding Set-Mailbox parameters for the wire, and deciding whether a mailbox already shows them.

The second half is what makes writes safe to retry: after an ambiguous failure (a timeout, a 5xx, Exchange's
"error after applied"), the client re-reads the mailbox and compares it with the intent before sending again.
"""

from typing import Any

HASHTABLE_TYPE = "#Exchange.GenericHashTable"
# Addresses Exchange maintains itself (the tenant's MOERA address); a full EmailAddresses list need not name them.
SYSTEM_ADDRESS_SUFFIX = ".onmicrosoft.com"


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


def state_matches(mailbox: dict[str, Any], params: dict[str, Any]) -> bool:
    """True when the mailbox as read already holds every value in ``params`` (set_mailbox's arguments)."""
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
