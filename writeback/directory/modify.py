"""The Exchange attributes as LDAP holds them, and the minimal modify that turns what AD holds into what we want.

``normalise_entry`` reads raw LDAP values into Python types by this module's own table, not by the server's
schema (OpenLDAP's ``mail`` is multi-valued where AD's is single-valued, and a server whose schema could not be
read would otherwise return strings): multi-valued attributes are lists (``[]`` when absent), single-valued
strings and integers are ``None`` when absent, booleans are ``True``/``False``/``None``.

``plan_modify`` is pure. For a multi-valued attribute it adds and deletes single values, so a concurrent edit of
another value survives and a stale plan fails loudly (attributeOrValueExists / noSuchAttribute) instead of
silently flattening someone else's change; it never replaces a whole multi-valued attribute. Single-valued
attributes are replaced, or deleted to clear them.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ldap3

from soa.attributes import EXCHANGE_ATTRIBUTES, Kind

Changes = dict[str, list[tuple[str, list[Any]]]]


class InconsistentValues(ValueError):
    """A list of values that contradicts itself (``SMTP:x`` and ``smtp:x``: x both primary and secondary).

    ``side`` is "observed" (what the directory holds: the directory client reports it as
    ``DirectoryInconsistentEntry`` naming the entry) or "desired" (the caller's mistake).
    """

    def __init__(self, message: str, *, side: str, attribute: str, values: tuple[str, ...]):
        super().__init__(message)
        self.side = side
        self.attribute = attribute
        self.values = values


@dataclass(frozen=True)
class LdapSyntax:
    """How the client reads, compares and writes one attribute."""

    name: str  # the LDAP name as AD spells it
    kind: Kind
    multi_valued: bool


# Read with the Exchange attributes but not in the attribute map (the portal shows or checks them, never edits).
_EXTRA = (
    LdapSyntax("targetAddress", Kind.STRING, False),
    LdapSyntax("msExchRemoteRecipientType", Kind.INTEGER, False),
    # Email address policies (exchange-facts 9): an edit in AD of an AD-managed recipient's primary address takes it
    # out of its policy, which would otherwise regenerate the addresses.
    LdapSyntax("msExchPoliciesExcluded", Kind.STRING, True),
    LdapSyntax("msExchPoliciesIncluded", Kind.STRING, True),
)
SYNTAXES: dict[str, LdapSyntax] = {
    s.name.lower(): s for s in (*(LdapSyntax(a.ad, a.kind, a.multi_valued) for a in EXCHANGE_ATTRIBUTES), *_EXTRA)
}
EXCHANGE_LDAP_ATTRIBUTES: tuple[str, ...] = tuple(s.name for s in SYNTAXES.values())


def syntax(name: str) -> LdapSyntax:
    """The syntax of an Exchange attribute by LDAP name (any letter case); ValueError for an unknown one."""
    try:
        return SYNTAXES[name.lower()]
    except KeyError:
        raise ValueError(f"{name!r} is not an Exchange attribute the directory client reads or writes.") from None


# -- reading ----------------------------------------------------------------------------------------------------


def _decode(raw: bytes | str) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw


def normalise_raw(spec: LdapSyntax, raw_values: Iterable[bytes | str] | None) -> Any:
    """Raw LDAP values (bytes, as on the wire) of one attribute -> the Python value the portal works with."""
    texts = [_decode(v) for v in raw_values or ()]
    if spec.multi_valued:
        return texts
    if not texts:
        return None
    if spec.kind is Kind.BOOLEAN:
        return texts[0].strip().upper() == "TRUE"
    if spec.kind is Kind.INTEGER:
        return int(texts[0])
    return texts[0]


def normalise_entry(raw_attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Every Exchange attribute of an entry (ldap3 ``raw_attributes``, any key case), normalised and always present."""
    by_lower = {name.lower(): values for name, values in raw_attributes.items()}
    return {spec.name: normalise_raw(spec, by_lower.get(key)) for key, spec in SYNTAXES.items()}


# -- comparing ----------------------------------------------------------------------------------------------------


def _proxy_key(value: str) -> tuple[str, str]:
    # The address compares case-insensitively (AD's matching rule); the SMTP prefix's case is the primary flag
    # and so part of the value; other prefixes (sip:, X500:) carry no meaning in their case.
    prefix, sep, address = value.partition(":")
    if not sep:
        return "", value.casefold()
    return (prefix if prefix.lower() == "smtp" else prefix.casefold()), address.casefold()


def _multi(spec: LdapSyntax, value: Any, *, side: str) -> dict[Any, str]:
    """Values keyed the way the server matches them, first spelling kept, empty strings dropped."""
    if value is None:
        return {}
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{side} {spec.name} is multi-valued: give a list of strings, not {type(value).__name__}.")
    keyed: dict[Any, str] = {}
    seen: dict[Any, Any] = {}
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"{side} {spec.name} values must be strings, not {type(item).__name__}.")
        if not item:
            continue
        key = _proxy_key(item) if spec.kind is Kind.PROXY else item.casefold()
        # The server holds one value per case-insensitive match: SMTP:x and smtp:x in one list is a contradiction.
        match = (key[0].lower(), key[1]) if spec.kind is Kind.PROXY else key
        if seen.setdefault(match, key) != key:
            other = keyed[seen[match]]
            raise InconsistentValues(
                f"{side} {spec.name} holds {other!r} and {item!r}: one address both as primary and as secondary.",
                side=side,
                attribute=spec.name,
                values=(other, item),
            )
        keyed.setdefault(key, item)
    return keyed


def _single(spec: LdapSyntax, value: Any, *, side: str) -> Any:
    if value is None or value == "":
        return None
    if spec.kind is Kind.BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError(f"{side} {spec.name} is a boolean, not {type(value).__name__}.")
        return value
    if spec.kind is Kind.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{side} {spec.name} is an integer, not {type(value).__name__}.")
        return value
    if not isinstance(value, str):
        raise TypeError(f"{side} {spec.name} is a string, not {type(value).__name__}.")
    return value


# -- planning -----------------------------------------------------------------------------------------------------


def plan_modify(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> Changes:
    """The minimal ldap3 ``changes`` dict that makes ``observed`` hold ``desired``; ``{}`` when nothing differs.

    Both map LDAP attribute names (any letter case) to normalised values (see the module docstring). Only the
    attributes in ``desired`` are considered; one missing from ``observed`` counts as absent. ``None``, ``""`` or
    ``[]`` in ``desired`` clears the attribute. Booleans treat absent and FALSE alike (Exchange does), so a
    desired False never writes into an absent attribute.

    - multi-valued: ``[(MODIFY_DELETE, [values gone]), (MODIFY_ADD, [values new])]``, deletes first, so a
      primary SMTP change is a delete of ``SMTP:a`` and ``smtp:b`` and an add of ``smtp:a`` and ``SMTP:b`` in
      one atomic modify. Values compare as the server matches them (case-insensitively; proxy addresses by
      address, with the SMTP prefix's case as the primary flag), so a change of letter case alone is no change.
    - single-valued: ``[(MODIFY_REPLACE, [value])]``, or ``[(MODIFY_DELETE, [])]`` to clear.

    Raises ValueError for an attribute the client does not know, TypeError for a value of the wrong type.
    """
    have_by_lower = {name.lower(): value for name, value in observed.items()}
    changes: Changes = {}
    for name, wanted in desired.items():
        spec = syntax(name)
        have = have_by_lower.get(spec.name.lower())
        if spec.multi_valued:
            want_keyed = _multi(spec, wanted, side="desired")
            have_keyed = _multi(spec, have, side="observed")
            ops: list[tuple[str, list[Any]]] = []
            gone = [value for key, value in have_keyed.items() if key not in want_keyed]
            new = [value for key, value in want_keyed.items() if key not in have_keyed]
            if gone:
                ops.append((ldap3.MODIFY_DELETE, gone))
            if new:
                ops.append((ldap3.MODIFY_ADD, new))
            if ops:
                changes[spec.name] = ops
            continue
        want_value = _single(spec, wanted, side="desired")
        have_value = _single(spec, have, side="observed")
        if spec.kind is Kind.BOOLEAN and bool(want_value) == bool(have_value):
            continue  # absent and FALSE are the same to Exchange
        if want_value == have_value:
            continue
        if want_value is None:
            changes[spec.name] = [(ldap3.MODIFY_DELETE, [])]
        else:
            changes[spec.name] = [(ldap3.MODIFY_REPLACE, [want_value])]
    return changes


def encode_changes(changes: Changes) -> Changes:
    """Values as the server wants them on the wire: booleans as TRUE/FALSE, integers as decimal text.

    ldap3 does this itself only when it has read the server's schema; doing it here keeps writes correct when the
    schema could not be read.
    """
    return {name: [(op, [_encode(value) for value in values]) for op, values in ops] for name, ops in changes.items()}


def _encode(value: Any) -> Any:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return value
