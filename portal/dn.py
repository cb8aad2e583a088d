"""Distinguished names compared the way AD compares them.

AD treats attribute types and values in a DN case-insensitively, ignores spaces around separators and
accepts the same character escaped as ``\\,`` or ``\\2C``. Servers also return DNs in different letter
case than they were written, so DNs are never compared as raw strings: they are normalised first. The
normal form is what the database stores next to the display DN, which lets a subtree scope become an
indexed suffix match.
"""

import re

_HEX = re.compile(r"[0-9A-Fa-f]{2}")
_TYPE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)$")


class InvalidDn(ValueError):
    """The text is not a syntactically valid distinguished name."""


def _split(dn: str) -> list[list[tuple[str, str]]]:
    """RFC 4514 parsing: RDNs split on unescaped "," or ";", attribute values on unescaped "+" and the first
    unescaped "=". Escapes (``\\,`` or ``\\2C``) are decoded, as UTF-8 bytes for hex pairs; spaces around
    separators are dropped, escaped ones kept. A "#" or "=" inside a value needs no escape (servers send them so).
    """
    rdns: list[list[tuple[str, str]]] = [[]]
    attr_type: str | None = None
    buffer = bytearray()
    kept = 0  # length of buffer up to its last escaped byte, which trailing-space stripping must not cut
    pos = 0

    def finish_value() -> None:
        nonlocal attr_type, buffer, kept
        if attr_type is None:
            raise InvalidDn(f"{dn!r} is not a valid distinguished name: an RDN has no '=' ")
        raw = bytes(buffer)
        stripped = (raw[:kept] + raw[kept:].rstrip(b" ")).decode("utf-8")
        if not stripped:
            raise InvalidDn(f"{dn!r} is not a valid distinguished name: {attr_type} has an empty value")
        rdns[-1].append((attr_type, stripped))
        attr_type, buffer, kept = None, bytearray(), 0

    while pos < len(dn):
        char = dn[pos]
        if char == "\\":
            pair = dn[pos + 1 : pos + 3]
            if _HEX.fullmatch(pair):
                buffer += bytes.fromhex(pair)
                pos += 3
            elif pos + 1 < len(dn):
                buffer += dn[pos + 1].encode()
                pos += 2
            else:
                raise InvalidDn(f"{dn!r} is not a valid distinguished name: it ends with a lone backslash")
            kept = len(buffer)
            continue
        if attr_type is None and char == "=":
            attr_type = bytes(buffer).decode().strip()
            if not _TYPE.match(attr_type):
                raise InvalidDn(f"{dn!r} is not a valid distinguished name: bad attribute type {attr_type!r}")
            buffer, kept = bytearray(), 0
            pos += 1
            while pos < len(dn) and dn[pos] == " ":
                pos += 1
            continue
        if char in ",;+" and attr_type is not None:
            finish_value()
            if char != "+":
                rdns.append([])
            pos += 1
            while pos < len(dn) and dn[pos] == " ":
                pos += 1
            continue
        if attr_type is None and char in ",;+":
            raise InvalidDn(f"{dn!r} is not a valid distinguished name: an RDN has no '='")
        buffer += char.encode()
        pos += 1
    finish_value()
    return rdns


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
    try:
        rdns = _split(dn.strip())
    except UnicodeDecodeError as exc:
        raise InvalidDn(f"{dn!r} is not a valid distinguished name: {exc}") from None
    # Multi-valued RDNs (cn=a+sn=b) are unordered sets in LDAP.
    return ",".join(
        "+".join(sorted(f"{attr_type.lower()}={_canonical_escape(value.lower())}" for attr_type, value in rdn))
        for rdn in rdns
    )


def is_within(dn: str, base: str) -> bool:
    """True when ``dn`` is ``base`` itself or lies anywhere below it. Both may be raw or normalised."""
    child, parent = normalize_dn(dn), normalize_dn(base)
    return child == parent or child.endswith("," + parent)


def rdn_values(dn: str) -> list[str]:
    """The value of each RDN of ``dn`` as written (escapes decoded, letter case kept), leaf first; the first value
    of a multi-valued RDN. Raises InvalidDn as normalize_dn does."""
    if not dn or not dn.strip():
        raise InvalidDn("A distinguished name cannot be empty.")
    return [rdn[0][1] for rdn in _split(dn.strip())]


def container_names(dn: str) -> list[str]:
    """The names of the OUs and containers holding the object at ``dn``, from the top down, without the domain's DC
    components ("CN=Ann,OU=Sales,OU=Corp,DC=corp,DC=com" -> ["Corp", "Sales"]); [] for a malformed DN."""
    try:
        rdns = _split(dn.strip())
    except (InvalidDn, UnicodeDecodeError):
        return []
    return [rdn[0][1] for rdn in reversed(rdns[1:]) if rdn[0][0].lower() != "dc"]
