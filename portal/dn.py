"""Distinguished names compared the way AD compares them.

AD treats attribute types and values in a DN case-insensitively, ignores spaces around separators and
accepts the same character escaped as ``\\,`` or ``\\2C``. Servers also return DNs in different letter
case than they were written, so DNs are never compared as raw strings: they are normalised first. The
normal form is what the database stores next to the display DN, which lets a subtree scope become an
indexed suffix match.
"""

import re

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)")


class InvalidDn(ValueError):
    """The text is not a syntactically valid distinguished name."""


def _unescape(value: str) -> str:
    # Hex escapes may encode a multi-byte UTF-8 character, so collect bytes before decoding.
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(value):
        out += value[pos : match.start()].encode()
        token = match.group(1)
        out += bytes.fromhex(token) if len(token) == 2 else token.encode()
        pos = match.end()
    out += value[pos:].encode()
    return out.decode("utf-8", errors="strict")


_SPECIAL = frozenset(',+"\\<>;=\0')


def _canonical_escape(value: str) -> str:
    # Every special character becomes a hex escape, so in a normalised DN a literal "," or "+" is always a
    # separator. That is what makes a plain suffix match ("...,<base>") a safe subtree test, in Python and SQL.
    chars = [f"\\{ord(c):02x}" if c in _SPECIAL else c for c in value]
    if chars and chars[0] in (" ", "#"):
        chars[0] = f"\\{ord(chars[0]):02x}"
    if chars and chars[-1] == " ":
        chars[-1] = "\\20"
    return "".join(chars)


def normalize_dn(dn: str) -> str:
    """Return the canonical, lower-case form of ``dn``; raise InvalidDn with the reason when it is malformed."""
    if not dn or not dn.strip():
        raise InvalidDn("A distinguished name cannot be empty.")
    rdns: list[list[str]] = [[]]
    try:
        for attr_type, value, separator in parse_dn(dn, strip=True):
            rdns[-1].append(f"{attr_type.lower()}={_canonical_escape(_unescape(value).lower())}")
            if separator == ",":
                rdns.append([])
    except (LDAPInvalidDnError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidDn(f"{dn!r} is not a valid distinguished name: {exc}") from None
    # Multi-valued RDNs (cn=a+sn=b) are unordered sets in LDAP.
    return ",".join("+".join(sorted(rdn)) for rdn in rdns if rdn)


def is_within(dn: str, base: str) -> bool:
    """True when ``dn`` is ``base`` itself or lies anywhere below it. Both may be raw or normalised."""
    child, parent = normalize_dn(dn), normalize_dn(base)
    return child == parent or child.endswith("," + parent)
