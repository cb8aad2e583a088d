"""Proxy addresses (EmailAddresses) the way Exchange treats them (exchange-facts §3, §5).

A proxy address is ``TYPE:address``. ``SMTP:`` in upper case marks the one primary reply address,
``smtp:`` a secondary; other types (X500, SIP, EUM, SPO...) are kept as given and not validated. An
address without a prefix is SMTP; in a full list without an ``SMTP:`` entry the first of them becomes
the primary. Only SMTP syntax is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import DATA_VALIDATION, ExchangeError

_PREFIX = re.compile(r"^([A-Za-z0-9]{1,9}):(.*)$", re.S)
# RFC 5322 dot-atom local part (ASCII), and a DNS domain of at least two labels.
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
LOCAL_MAX = 64
SMTP_MAX = 320


def is_valid_smtp(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at or not local or len(local) > LOCAL_MAX or len(address) > SMTP_MAX:
        return False
    labels = domain.split(".")
    return bool(_LOCAL.match(local)) and len(labels) >= 2 and all(_LABEL.match(label) for label in labels)


def invalid_smtp(address: str) -> ExchangeError:
    return ExchangeError(
        400,
        DATA_VALIDATION,
        f'The email address "{address}" isn\'t correct. Please use this format: user name, the @ sign, followed by '
        "the domain name. For example, tonysmith@contoso.com or tony.smith@contoso.com.",
    )


@dataclass(frozen=True)
class Proxy:
    """One parsed proxy address; ``prefix`` is None when the value had none (SMTP by default)."""

    prefix: str | None
    address: str

    @classmethod
    def parse(cls, value: object) -> Proxy:
        if not isinstance(value, str) or not value.strip():
            raise ExchangeError(400, DATA_VALIDATION, f'The proxy address "{value}" is not valid.')
        value = value.strip()
        match = _PREFIX.match(value)
        if match and "@" not in match.group(1):
            return cls(match.group(1), match.group(2))
        return cls(None, value)

    @property
    def is_smtp(self) -> bool:
        return self.prefix is None or self.prefix.lower() == "smtp"

    @property
    def is_primary(self) -> bool:
        return self.prefix == "SMTP"

    @property
    def key(self) -> str:
        """Identity of the address for uniqueness: type and address, case-insensitively."""
        kind = "smtp" if self.is_smtp else self.prefix.lower()
        return f"{kind}:{self.address.lower()}"

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    def as_primary(self) -> str:
        return f"SMTP:{self.address}"

    def as_secondary(self) -> str:
        return f"smtp:{self.address}" if self.is_smtp else f"{self.prefix}:{self.address}"

    def check(self) -> Proxy:
        if self.is_smtp and not is_valid_smtp(self.address):
            raise invalid_smtp(self.address)
        if not self.address:
            raise ExchangeError(400, DATA_VALIDATION, f'The proxy address "{self.prefix}:" is not valid.')
        return self


def key_of(value: str) -> str:
    return Proxy.parse(value).key


def primary_of(addresses: list[str]) -> str | None:
    """The address (without prefix) of the SMTP: entry, if any."""
    for value in addresses:
        proxy = Proxy.parse(value)
        if proxy.is_primary:
            return proxy.address
    return None


def _one_primary_error() -> ExchangeError:
    return ExchangeError(
        400,
        DATA_VALIDATION,
        "The EmailAddresses parameter can contain only one primary SMTP address. Use the SMTP prefix for the "
        "primary address and the smtp prefix for every other SMTP address.",
    )


def _no_primary_error() -> ExchangeError:
    return ExchangeError(
        400, DATA_VALIDATION, "The EmailAddresses collection must contain exactly one primary SMTP address."
    )


def full_list(values: list[object]) -> list[str]:
    """Normalise a full EmailAddresses list: validate, decide the primary, refuse duplicates."""
    proxies = [Proxy.parse(v).check() for v in values]
    explicit = [p for p in proxies if p.is_primary]
    if len(explicit) > 1:
        raise _one_primary_error()
    first_bare = None if explicit else next((i for i, p in enumerate(proxies) if p.prefix is None), None)
    if not explicit and first_bare is None:
        raise _no_primary_error()
    result: list[str] = []
    seen: set[str] = set()
    for index, proxy in enumerate(proxies):
        if proxy.key in seen:
            raise ExchangeError(400, DATA_VALIDATION, f'The address "{proxy.address}" is duplicated in EmailAddresses.')
        seen.add(proxy.key)
        primary = proxy.is_primary or index == first_bare
        result.append(proxy.as_primary() if primary else proxy.as_secondary())
    return result


def modify(current: list[str], *, add: list[object], remove: list[object]) -> list[str]:
    """Apply a {Add=...; Remove=...} hashtable: removals, then additions; an SMTP: addition becomes primary."""
    proxies = [Proxy.parse(v) for v in current]
    removed_keys = {Proxy.parse(v).check().key for v in remove}
    additions = [Proxy.parse(v).check() for v in add]
    if sum(1 for p in additions if p.is_primary) > 1:
        raise _one_primary_error()
    kept = [p for p in proxies if p.key not in removed_keys]
    for addition in additions:
        existing = next((i for i, p in enumerate(kept) if p.key == addition.key), None)
        if addition.is_primary:
            kept = [Proxy("smtp", p.address) if p.is_primary else p for p in kept]
            if existing is None:
                kept.append(Proxy("SMTP", addition.address))
            else:
                kept[existing] = Proxy("SMTP", kept[existing].address)
        elif existing is None:
            kept.append(Proxy("smtp", addition.address) if addition.is_smtp else addition)
    if not any(p.is_primary for p in kept):
        lost = next((p.address for p in proxies if p.is_primary and p.key in removed_keys), None)
        if lost is not None:
            raise ExchangeError(
                400,
                DATA_VALIDATION,
                f'The primary SMTP address "{lost}" can\'t be removed. Make another address the primary address first.',
            )
        raise _no_primary_error()
    return [p.as_primary() if p.is_primary else p.as_secondary() for p in kept]


def with_primary(current: list[str], address: str) -> list[str]:
    """Make ``address`` the primary (WindowsEmailAddress): the old primary stays as a secondary."""
    return modify(current, add=[f"SMTP:{address}"], remove=[])
