"""Validation of a help-desk edit of one mailbox: pure functions, no database and no network.

``validate_change(current, operations, lookups)`` applies a list of operations (soa.choices.ChangeOperation) to a
mailbox's current values of the authoritative side (keyed by Exchange Online property name, soa.values) and
returns either the values the mailbox should have afterwards or every error found, each naming the field a page
highlights; never both, so nothing half-checked is ever written. What needs the database (who already uses an
address, which addresses were removed recently, the tenant's accepted domains) is read by the caller beforehand
into ``Lookups``, for exactly the addresses ``requested_addresses(operations)`` names.

The rules, and where they come from (reference/exchange-facts.md):

- SMTP syntax (§5: Exchange checks it for SMTP addresses only): a dot-atom local part of at most 64 characters
  and a host name of letters, digits and hyphens (RFC 5321/5322). Quoted local parts and IP-address literals are
  refused: neither can be in an accepted domain, and help desk never needs them. Other address types (X500, SIP...)
  are not syntax-checked, as Exchange does not; they only need a type, a value and no control characters.
- The domain of an SMTP address must be one of the tenant's accepted domains (Get-AcceptedDomain).
- Exactly one primary SMTP address; the primary is removed only when the same edit names a new one.
- The MOERA (alias@<tenant>.onmicrosoft.com) and the hybrid routing address (@<tenant>.mail.onmicrosoft.com)
  are kept: Exchange Online and hybrid mail flow depend on them.
- An address used by another mailbox, or removed from another mailbox within the cool-down, is refused.
- Lengths (§3, §5): a proxyAddresses value (type, colon and address) at most 1123 characters, a CustomAttribute
  at most 1024, an ExtensionCustomAttribute at most 1300 values. The per-value length of ExtensionCustomAttribute
  is not documented (the emulator's 2048 is its own guess), so none is imposed here.
- Identity attributes (display name, UPN...) are mastered in AD and never edited here; only the attributes the
  map marks ``editable`` are.

Input is stripped of surrounding white space; an operation that changes nothing is an error, so a person never
submits an edit believing it did something.
"""

import datetime as dt
import re
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from soa.attributes import BY_EXO
from soa.choices import ChangeOperation
from soa.values import is_moera

EMAIL_ADDRESSES = "EmailAddresses"
PRIMARY_ADDRESS = "WindowsEmailAddress"
HIDDEN = "HiddenFromAddressListsEnabled"
# The field of an error about the edit as a whole rather than one attribute.
OPERATIONS = "operations"

CUSTOM_ATTRIBUTES = frozenset(f"CustomAttribute{i}" for i in range(1, 16))
EXTENSION_ATTRIBUTES = frozenset(f"ExtensionCustomAttribute{i}" for i in range(1, 6))
PROXY_MAX_LENGTH = BY_EXO[EMAIL_ADDRESSES].max_length or 1123
LOCAL_PART_MAX = 64  # RFC 5321 4.5.3.1.1
DOMAIN_MAX = 253  # the longest DNS name written without its final dot
LABEL_MAX = 63
ADDRESS_MAX = 254  # RFC 5321's 256-octet path less its angle brackets
# One edit is what one person reviews on one page; a crafted request with thousands of operations is refused
# before any work is done on it.
MAX_OPERATIONS = 100

# RFC 5322 atext: what a dot-atom local part may hold besides the dots between atoms.
_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_LABEL = frozenset(string.ascii_letters + string.digits + "-")
# An address type as proxyAddresses writes it: SMTP, X500, SIP, EUM, X400, MSMAIL...
_TYPE = re.compile(r"[A-Za-z0-9]{1,9}")
_ROUTING = re.compile(r"@[^.@]+\.mail\.onmicrosoft\.com$", re.IGNORECASE)
_ATEXT_SHOWN = "letters a–z, digits, dots and ! # $ % & ' * + - / = ? ^ _ ` { | } ~"


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with an edit: the field a page highlights (an Exchange property name, or ``operations``),
    the message for the person who made it, and the position of the operation at fault when there is one."""

    field: str
    message: str
    operation: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message, "operation": self.operation}


@dataclass(frozen=True)
class Lookups:
    """What validation needs from outside the mailbox, read by the caller for the requested addresses.

    Address keys are ``(type, address)`` in lower case. ``accepted_domains`` is None when the tenant's list is not
    known (never read, or older than its TTL): SMTP addresses then cannot be checked and are refused.
    """

    now: dt.datetime
    accepted_domains: Collection[str] | None = None
    used_by: Mapping[tuple[str, str], str] = field(default_factory=dict)  # -> how to name the mailbox using it
    cooling_down: Mapping[tuple[str, str], dt.datetime] = field(default_factory=dict)  # -> free again from then


@dataclass(frozen=True)
class Outcome:
    """The result of a validation: either ``errors``, or the changed attributes' values ``before`` and ``desired``
    after the edit, with the operations in their canonical form (``operations``)."""

    errors: tuple[FieldError, ...] = ()
    before: dict[str, Any] = field(default_factory=dict)
    desired: dict[str, Any] = field(default_factory=dict)
    operations: tuple[dict[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


# -- addresses ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """One proxy address: its type as written (``SMTP`` upper case marks the primary) and the address."""

    type: str
    address: str

    @property
    def is_smtp(self) -> bool:
        return self.type.lower() == "smtp"

    @property
    def is_primary(self) -> bool:
        return self.type == "SMTP"

    @property
    def key(self) -> tuple[str, str]:
        return self.type.lower(), self.address.lower()

    def __str__(self) -> str:
        return f"{self.type}:{self.address}"


def smtp_address_problem(address: str) -> str | None:
    """Why ``address`` is not an SMTP address Exchange would accept, or None when it is well formed."""
    if not address:
        return "Enter an email address."
    if any(ch.isspace() or not ch.isprintable() for ch in address):
        return "An email address cannot contain spaces, line breaks or other invisible characters."
    if "@" not in address:
        return "An email address needs an @ and a domain after it, like name@contoso.com."
    if address.count("@") > 1:
        return "An email address has exactly one @."
    local, _, domain = address.partition("@")
    return _local_part_problem(local) or _domain_problem(domain) or _length_problem(address)


def _local_part_problem(local: str) -> str | None:
    if not local:
        return "Enter the part of the address before the @."
    if local.startswith('"'):
        return "Quoted names (in double quotes) are not supported; use " + _ATEXT_SHOWN + "."
    if len(local) > LOCAL_PART_MAX:
        return f"The part before the @ can be at most {LOCAL_PART_MAX} characters; this one has {len(local)}."
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "In the part before the @, a dot cannot come first, last, or right after another dot."
    bad = sorted({ch for ch in local if ch != "." and ch not in _ATEXT})
    if bad:
        return f"The part before the @ cannot contain {_quoted(bad)}; use {_ATEXT_SHOWN}."
    return None


def _domain_problem(domain: str) -> str | None:
    if not domain:
        return "Enter the domain after the @."
    if domain.startswith("["):
        return "An IP address cannot stand for the domain; use one of the tenant's domains."
    if len(domain) > DOMAIN_MAX:
        return f"The domain can be at most {DOMAIN_MAX} characters; this one has {len(domain)}."
    labels = domain.split(".")
    if any(not label for label in labels):
        return "In the domain, a dot cannot come first, last, or right after another dot."
    if len(labels) < 2:
        return f"“{domain}” is not a full domain name, like contoso.com."
    for label in labels:
        bad = sorted({ch for ch in label if ch not in _LABEL})
        if bad:
            return f"The domain cannot contain {_quoted(bad)}; use letters a–z, digits, hyphens and dots."
        if len(label) > LABEL_MAX:
            return f"Each part of the domain between dots can be at most {LABEL_MAX} characters."
        if label.startswith("-") or label.endswith("-"):
            return "A part of the domain cannot begin or end with a hyphen."
    if labels[-1].isdigit():
        return f"“{domain}” is not a domain name."
    return None


def _length_problem(address: str) -> str | None:
    if len(address) > ADDRESS_MAX:
        return f"An email address can be at most {ADDRESS_MAX} characters; this one has {len(address)}."
    return None


def _quoted(chars: list[str]) -> str:
    shown = [f"“{ch}”" if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}" for ch in chars[:5]]
    return ", ".join(shown) + (" and others" if len(chars) > 5 else "")


def is_routing_address(address: str) -> bool:
    """Whether an SMTP address (without its type) is the hybrid routing address @<tenant>.mail.onmicrosoft.com."""
    return bool(_ROUTING.search(address))


def parse_address(text: str) -> tuple[Proxy | None, str | None]:
    """(Proxy, None) from what a person typed, or (None, why not).

    ``name@contoso.com`` and ``smtp:name@contoso.com`` are SMTP (secondary: the primary is chosen with its own
    operation); ``X500:/o=...`` keeps its type as written. Only the SMTP syntax is checked here.
    """
    text = text.strip()
    if not text:
        return None, "Enter an address."
    prefix, sep, rest = text.partition(":")
    if not sep:
        prefix, rest = "smtp", text
    elif not _TYPE.fullmatch(prefix):
        return None, f"“{prefix}” is not an address type; write an email address, or a type such as X500: before it."
    rest = rest.strip()
    if prefix.lower() == "smtp":
        problem = smtp_address_problem(rest)
        if problem:
            return None, problem
        proxy = Proxy("smtp", rest)
    else:
        if not rest:
            return None, f"Enter the {prefix} address after “{prefix}:”."
        if any(not ch.isprintable() for ch in rest):
            return None, "An address cannot contain line breaks or other invisible characters."
        proxy = Proxy(prefix, rest)
    if len(str(proxy)) > PROXY_MAX_LENGTH:
        return None, f"An address (with its type) can be at most {PROXY_MAX_LENGTH} characters."
    return proxy, None


def _current_proxy(raw: str) -> Proxy:
    prefix, sep, address = raw.partition(":")
    return Proxy(prefix, address) if sep else Proxy("smtp", raw)


def _loose_key(text: str) -> tuple[str, str]:
    """The lookup key of an address as typed, without judging its syntax: removing an address that is already on
    the mailbox must work even when it is malformed."""
    text = text.strip()
    prefix, sep, rest = text.partition(":")
    if not sep or not _TYPE.fullmatch(prefix):
        return "smtp", text.lower()
    return prefix.lower(), rest.strip().lower()


def requested_addresses(operations: Any) -> set[tuple[str, str]]:
    """Keys of the well-formed addresses the operations would add or make primary: what the caller looks up for
    ``Lookups`` (used elsewhere, cooling down). Never raises, whatever it is given."""
    keys: set[tuple[str, str]] = set()
    if not isinstance(operations, list | tuple):
        return keys
    for operation in operations[:MAX_OPERATIONS]:
        if not isinstance(operation, Mapping):
            continue
        if operation.get("op") not in (ChangeOperation.ADD_ALIAS, ChangeOperation.MAKE_PRIMARY):
            continue
        text = operation.get("address")
        if isinstance(text, str):
            proxy, _ = parse_address(text)
            if proxy is not None:
                keys.add(proxy.key)
    return keys


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


# -- applying operations ----------------------------------------------------------------------------------------


class _Edit:
    """The working copy of the mailbox's editable values while operations are applied in order."""

    def __init__(self, current: Mapping[str, Any], lookups: Lookups):
        self.lookups = lookups
        self.errors: list[FieldError] = []
        self.proxies = [_current_proxy(str(raw)) for raw in _as_list(current.get(EMAIL_ADDRESSES))]
        self.start_keys = {proxy.key for proxy in self.proxies}
        self.values: dict[str, Any] = {}
        for name in CUSTOM_ATTRIBUTES:
            value = current.get(name)
            self.values[name] = None if value in (None, "") else str(value)
        for name in EXTENSION_ATTRIBUTES:
            self.values[name] = [str(v) for v in _as_list(current.get(name))]
        self.values[HIDDEN] = bool(current.get(HIDDEN))
        self.touched: set[str] = set()
        self.new_primary_named = False
        self.removed_primary_at: int | None = None
        self.canonical: list[dict[str, Any]] = []

    def error(self, field_name: str, message: str, index: int | None) -> None:
        self.errors.append(FieldError(field_name, message, index))

    def find(self, key: tuple[str, str]) -> Proxy | None:
        return next((proxy for proxy in self.proxies if proxy.key == key), None)

    # addresses

    def _domain_accepted(self, proxy: Proxy, index: int) -> bool:
        if not proxy.is_smtp:
            return True
        domains = self.lookups.accepted_domains
        if domains is None:
            self.error(EMAIL_ADDRESSES, "The tenant's list of accepted domains is not known or out of date, so the "
                       "domain cannot be checked; try again in a few minutes.", index)  # fmt: skip
            return False
        accepted = sorted({d.lower() for d in domains})
        if domain_of(proxy.address) not in accepted:
            self.error(EMAIL_ADDRESSES, f"{domain_of(proxy.address)} is not one of the tenant's accepted domains "
                       f"({', '.join(accepted) or 'none known'}).", index)  # fmt: skip
            return False
        return True

    def _may_take(self, proxy: Proxy, index: int) -> bool:
        """The checks an address passes before it joins this mailbox: domain, not used elsewhere, not cooling."""
        ok = self._domain_accepted(proxy, index)
        owner = self.lookups.used_by.get(proxy.key)
        if owner is not None:
            self.error(EMAIL_ADDRESSES, f"{proxy.address} is already used by {owner}.", index)
            ok = False
        free_from = self.lookups.cooling_down.get(proxy.key)
        if free_from is not None and free_from > self.lookups.now:
            self.error(EMAIL_ADDRESSES, f"{proxy.address} was removed from another mailbox recently; it can be used "
                       f"again in {_duration(free_from - self.lookups.now)} "
                       f"(from {free_from:%Y-%m-%d %H:%M} UTC).", index)  # fmt: skip
            ok = False
        return ok

    def add_alias(self, index: int, text: str) -> None:
        proxy, problem = parse_address(text)
        if proxy is None:
            self.error(EMAIL_ADDRESSES, problem or "", index)
            return
        if self.find(proxy.key) is not None:
            self.error(EMAIL_ADDRESSES, f"{proxy.address} is already an address of this mailbox.", index)
            return
        if proxy.key not in self.start_keys and not self._may_take(proxy, index):
            return
        self.proxies.append(proxy)
        self.touched.add(EMAIL_ADDRESSES)
        self.canonical.append({"op": ChangeOperation.ADD_ALIAS.value, "address": str(proxy)})

    def remove_alias(self, index: int, text: str) -> None:
        key = _loose_key(text)
        proxy = self.find(key)
        if proxy is None:
            self.error(EMAIL_ADDRESSES, f"“{text.strip()}” is not an address of this mailbox.", index)
            return
        if proxy.is_smtp and is_moera(proxy.address):
            self.error(EMAIL_ADDRESSES, f"{proxy.address} is the mailbox's Microsoft Online address, which Exchange "
                       "Online needs; it cannot be removed.", index)  # fmt: skip
            return
        if proxy.is_smtp and is_routing_address(proxy.address):
            self.error(EMAIL_ADDRESSES, f"{proxy.address} is the routing address hybrid mail flow delivers to; it "
                       "cannot be removed.", index)  # fmt: skip
            return
        if proxy.is_primary:
            self.removed_primary_at = index
        self.proxies.remove(proxy)
        self.touched.add(EMAIL_ADDRESSES)
        self.canonical.append({"op": ChangeOperation.REMOVE_ALIAS.value, "address": str(proxy)})

    def make_primary(self, index: int, text: str) -> None:
        proxy, problem = parse_address(text)
        if proxy is None:
            self.error(EMAIL_ADDRESSES, problem or "", index)
            return
        if not proxy.is_smtp:
            self.error(EMAIL_ADDRESSES, "Only an email (SMTP) address can be the primary address.", index)
            return
        if self.new_primary_named:
            self.error(EMAIL_ADDRESSES, "Choose only one new primary address per change.", index)
            return
        existing = self.find(proxy.key)
        # With two primaries (data made outside the portal), naming one of them is how the other is demoted.
        if existing is not None and existing.is_primary and sum(p.is_primary for p in self.proxies) == 1:
            self.error(EMAIL_ADDRESSES, f"{existing.address} is already the primary address.", index)
            return
        # An address already on the mailbox is its own; the domain is checked again, since Exchange refuses a
        # primary outside the accepted domains. A new one passes every check an added alias does.
        if existing is None and proxy.key not in self.start_keys:
            if not self._may_take(proxy, index):
                return
        elif not self._domain_accepted(proxy, index):
            return
        address = existing.address if existing is not None else proxy.address
        self.proxies = [Proxy("smtp", p.address) if p.is_primary else p for p in self.proxies if p.key != proxy.key]
        self.proxies.insert(0, Proxy("SMTP", address))
        self.new_primary_named = True
        self.touched.add(EMAIL_ADDRESSES)
        self.canonical.append({"op": ChangeOperation.MAKE_PRIMARY.value, "address": f"SMTP:{address}"})

    # single- and multi-valued attributes

    def set_custom(self, index: int, name: str, value: str) -> None:
        value = value.strip()
        label = _label(name)
        if not value:
            self.error(name, f"Enter a value for {label}, or clear it instead.", index)
            return
        problem = _value_problem(value)
        if problem:
            self.error(name, problem, index)
            return
        limit = BY_EXO[name].max_length or 1024
        if len(value) > limit:
            self.error(name, f"{label} can be at most {limit:,} characters; this value has {len(value):,}.", index)
            return
        if self.values[name] == value:
            self.error(name, f"{label} already holds this value.", index)
            return
        self._touch_once(name, index)
        self.values[name] = value
        self.canonical.append({"op": ChangeOperation.SET_CUSTOM_ATTRIBUTE.value, "attribute": name, "value": value})

    def clear_custom(self, index: int, name: str) -> None:
        if self.values[name] is None:
            self.error(name, f"{_label(name)} is already empty.", index)
            return
        self._touch_once(name, index)
        self.values[name] = None
        self.canonical.append({"op": ChangeOperation.CLEAR_CUSTOM_ATTRIBUTE.value, "attribute": name})

    def _touch_once(self, name: str, index: int) -> None:
        if name in self.touched:
            self.error(name, f"{_label(name)} is changed twice in this edit; keep one of the two.", index)
        self.touched.add(name)

    def add_extension(self, index: int, name: str, value: str) -> None:
        value = value.strip()
        label = _label(name)
        if not value:
            self.error(name, f"Enter the value to add to {label}.", index)
            return
        problem = _value_problem(value)
        if problem:
            self.error(name, problem, index)
            return
        values = self.values[name]
        if value.casefold() in {v.casefold() for v in values}:
            self.error(name, f"{label} already holds “{_short(value)}”.", index)
            return
        limit = BY_EXO[name].max_values or 1300
        if len(values) >= limit:
            self.error(name, f"{label} can hold at most {limit:,} values.", index)
            return
        values.append(value)
        self.touched.add(name)
        self.canonical.append({"op": ChangeOperation.ADD_EXTENSION_VALUE.value, "attribute": name, "value": value})

    def remove_extension(self, index: int, name: str, value: str) -> None:
        value = value.strip()
        values = self.values[name]
        match = next((v for v in values if v.casefold() == value.casefold()), None)
        if match is None:
            self.error(name, f"{_label(name)} does not hold “{_short(value)}”.", index)
            return
        values.remove(match)
        self.touched.add(name)
        self.canonical.append({"op": ChangeOperation.REMOVE_EXTENSION_VALUE.value, "attribute": name, "value": match})

    def set_hidden(self, index: int, hidden: bool) -> None:
        if self.values[HIDDEN] == hidden:
            state = "already hidden from" if hidden else "already shown in"
            self.error(HIDDEN, f"The mailbox is {state} address lists.", index)
            return
        self._touch_once(HIDDEN, index)
        self.values[HIDDEN] = hidden
        op = ChangeOperation.HIDE_FROM_ADDRESS_LISTS if hidden else ChangeOperation.SHOW_IN_ADDRESS_LISTS
        self.canonical.append({"op": op.value})

    # the end state

    def finish(self, current: Mapping[str, Any]) -> Outcome:
        if EMAIL_ADDRESSES in self.touched:
            primaries = [p for p in self.proxies if p.is_primary]
            if len(primaries) != 1:
                at = self.removed_primary_at
                message = (
                    "This removes the primary address; make another address primary in the same change."
                    if at is not None and not primaries
                    else "The mailbox must keep exactly one primary address; choose one with “Make primary”."
                )
                self.error(EMAIL_ADDRESSES, message, at)
        if self.errors:
            return Outcome(errors=tuple(self.errors))
        before: dict[str, Any] = {}
        desired: dict[str, Any] = {}
        if EMAIL_ADDRESSES in self.touched:
            after = [str(p) for p in self.proxies]
            original = [str(raw) for raw in _as_list(current.get(EMAIL_ADDRESSES))]
            if set(after) != set(original):  # the same addresses in another order are no change
                before[EMAIL_ADDRESSES], desired[EMAIL_ADDRESSES] = original, after
            old_primary = current.get(PRIMARY_ADDRESS) or next(
                (p.address for p in map(_current_proxy, original) if p.is_primary), None
            )
            new_primary = next(p.address for p in self.proxies if p.is_primary)
            if (old_primary or "").lower() != new_primary.lower():
                before[PRIMARY_ADDRESS], desired[PRIMARY_ADDRESS] = old_primary, new_primary
        for name in sorted(self.touched - {EMAIL_ADDRESSES}):
            old = current.get(name)
            old = bool(old) if name == HIDDEN else ([str(v) for v in _as_list(old)] if name in EXTENSION_ATTRIBUTES
                                                     else (None if old in (None, "") else str(old)))  # fmt: skip
            if old != self.values[name]:
                before[name], desired[name] = old, self.values[name]
        if not desired:
            return Outcome(errors=(FieldError(OPERATIONS, "These changes leave the mailbox as it was."),))
        return Outcome(before=before, desired=desired, operations=tuple(self.canonical))


def validate_change(current: Mapping[str, Any], operations: Any, lookups: Lookups) -> Outcome:
    """Apply ``operations`` to ``current`` (the authoritative side's values) and return the outcome: every error,
    or the changed attributes before and after. Never raises on any input, never returns a partial result."""
    if not isinstance(operations, list | tuple) or not operations:
        return Outcome(errors=(FieldError(OPERATIONS, "Choose at least one change to make."),))
    if len(operations) > MAX_OPERATIONS:
        return Outcome(errors=(FieldError(OPERATIONS, f"One edit can make at most {MAX_OPERATIONS} changes; split "
                                          "it into several."),))  # fmt: skip
    edit = _Edit(current, lookups)
    for index, operation in enumerate(operations):
        _apply(edit, index, operation)
    return edit.finish(current)


def _apply(edit: _Edit, index: int, operation: Any) -> None:
    if not isinstance(operation, Mapping):
        edit.error(OPERATIONS, "This change is not in a form the portal understands.", index)
        return
    kind = operation.get("op")
    if kind not in ChangeOperation.values:
        edit.error(OPERATIONS, f"“{_short(str(kind))}” is not a change the portal can make.", index)
        return
    if kind in (ChangeOperation.ADD_ALIAS, ChangeOperation.REMOVE_ALIAS, ChangeOperation.MAKE_PRIMARY):
        text = operation.get("address")
        if not isinstance(text, str):
            edit.error(EMAIL_ADDRESSES, "Enter an address.", index)
        elif kind == ChangeOperation.ADD_ALIAS:
            edit.add_alias(index, text)
        elif kind == ChangeOperation.REMOVE_ALIAS:
            edit.remove_alias(index, text)
        else:
            edit.make_primary(index, text)
        return
    if kind in (ChangeOperation.HIDE_FROM_ADDRESS_LISTS, ChangeOperation.SHOW_IN_ADDRESS_LISTS):
        edit.set_hidden(index, kind == ChangeOperation.HIDE_FROM_ADDRESS_LISTS)
        return
    custom = kind in (ChangeOperation.SET_CUSTOM_ATTRIBUTE, ChangeOperation.CLEAR_CUSTOM_ATTRIBUTE)
    name = _attribute(edit, index, operation.get("attribute"), CUSTOM_ATTRIBUTES if custom else EXTENSION_ATTRIBUTES)
    if name is None:
        return
    if kind == ChangeOperation.CLEAR_CUSTOM_ATTRIBUTE:
        edit.clear_custom(index, name)
        return
    value = operation.get("value")
    if not isinstance(value, str):
        edit.error(name, f"Enter a value for {_label(name)}.", index)
    elif kind == ChangeOperation.SET_CUSTOM_ATTRIBUTE:
        edit.set_custom(index, name, value)
    elif kind == ChangeOperation.ADD_EXTENSION_VALUE:
        edit.add_extension(index, name, value)
    else:
        edit.remove_extension(index, name, value)


def _attribute(edit: _Edit, index: int, name: Any, allowed: frozenset[str]) -> str | None:
    """The attribute an operation names, when that operation may change it; else an error and None."""
    if isinstance(name, str) and name in allowed:
        return name
    attribute = BY_EXO.get(name) if isinstance(name, str) else None
    if attribute is not None and attribute.identity:
        edit.error(name, f"{attribute.label} is mastered in Active Directory; the portal never changes it.", index)
    elif attribute is not None:
        edit.error(name, f"{attribute.label} cannot be changed with this kind of edit.", index)
    else:
        edit.error(OPERATIONS, f"“{_short(str(name))}” is not an attribute the portal can change.", index)
    return None


def _value_problem(value: str) -> str | None:
    if any(not ch.isprintable() for ch in value):
        return "A value cannot contain line breaks or other invisible characters."
    return None


def _label(name: str) -> str:
    return BY_EXO[name].label


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _duration(left: dt.timedelta) -> str:
    minutes = max(1, int(left.total_seconds() // 60) + (1 if left.total_seconds() % 60 else 0))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(part for part in parts if part)
