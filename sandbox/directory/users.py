"""Deterministic, AD-shaped users for the sandbox directory.

Everything lives under ``OU=Corp`` below the domain: people in one OU per department, room,
equipment and shared mailboxes in ``OU=Resources``. All of them are remote mailboxes of a hybrid
organisation (mailbox in Exchange Online, Exchange attributes in AD), which is the population
SOA Portal manages.

The same ``seed`` always yields the same users, and the first ``k`` users do not depend on ``n``,
so a test can rely on exactly what ``generate_users(3, seed=1)`` contains.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from collections.abc import Iterator
from typing import Any

from ldap3.utils.dn import escape_rdn, parse_dn

DEFAULT_BASE_DN = "DC=corp,DC=example,DC=com"

# Department OUs under OU=Corp, with their share of the people.
DEPARTMENTS: dict[str, float] = {"Engineering": 0.35, "Sales": 0.30, "Support": 0.25, "Finance": 0.10}
RESOURCES_OU = "Resources"

USER_CLASSES = ["top", "person", "organizationalPerson", "user"]
COMPUTER_CLASSES = [*USER_CLASSES, "computer"]
# sAMAccountType (MS-ADTS 2.2.16): what tells a person's account from a computer's, computer being a subclass of user.
SAM_NORMAL_USER_ACCOUNT = 805306368
SAM_MACHINE_ACCOUNT = 805306369

# msExchRecipientTypeDetails of remote mailboxes (reference/exchange-facts.md §3).
REMOTE_USER_MAILBOX = 2147483648
REMOTE_ROOM_MAILBOX = 8589934592
REMOTE_EQUIPMENT_MAILBOX = 17179869184
REMOTE_SHARED_MAILBOX = 34359738368

# kind -> (share, type details, display type, common msExchRemoteRecipientType values)
_KINDS: dict[str, tuple[float, int, int, tuple[int, ...]]] = {
    "user": (0.90, REMOTE_USER_MAILBOX, -2147483642, (4, 4, 4, 4, 1, 6)),
    "shared": (0.05, REMOTE_SHARED_MAILBOX, -2147483642, (100, 97)),
    "room": (0.03, REMOTE_ROOM_MAILBOX, -2147481850, (36, 33)),
    "equipment": (0.02, REMOTE_EQUIPMENT_MAILBOX, -2147481594, (68, 65)),
}


def _names(text: str) -> list[str]:
    return text.split()


# Kept short so that "given.surname" stays near AD's 20-character sAMAccountName habit; a few carry
# accents and apostrophes because real directories do and the product must cope with them.
_GIVEN = _names(
    "Anna Ben Chloe David Emma Felix Grace Hugo Ines Jonas Karen Liam Maria Noah Olivia Paul Quinn Rosa "
    "Sam Tara Ulrich Vera Will Xenia Yusuf Aisha Bruno Carla Dmitri Elena Farah Georg Hana Ivan Julia "
    "Kenji Lena Marco Nadia Oscar Priya Rafael Sofia Tomas Uma Victor Wen Yara Zainab Amir Beatriz Chen "
    "Dora Emil Fatima Goran Helga Ilse Jorge Katja Luca Mei Nils"
) + ["José", "Zoë", "Renée", "Åsa"]
_SURNAMES = _names(
    "Smith Jones Brown Taylor Wilson Evans Thomas Roberts Walker Wright Hall Green Wood Clarke Hughes "
    "Martin Bernard Dubois Moreau Laurent Petit Garcia Lopez Rossi Russo Bianchi Ferrari Schmidt Fischer "
    "Weber Meyer Wagner Becker Hoffmann Novak Kowalski Nowak Horvat Nagy Popescu Ivanova Larsen Hansen "
    "Nielsen Jensen Berg Lind Virtanen Korhonen Murphy Kelly Byrne Walsh Silva Santos Costa Pereira Sato "
    "Suzuki Tanaka Kim Lee Park Wang Li Zhang Patel Shah Khan Ali Okafor Mensah Cohen Levi Haddad"
) + ["Müller", "O'Brien", "Núñez", "Smith-Jones"]
_TITLES = (
    "Engineer",
    "Senior Engineer",
    "Account Manager",
    "Analyst",
    "Support Specialist",
    "Team Lead",
    "Manager",
    "Director",
    "Consultant",
    "Assistant",
)
_SHARED_NAMES = ("Team", "Orders", "Invoices", "Helpdesk", "Info", "Careers", "Escalations")
_ROOM_SITES = ("Oslo", "Lyon", "Leeds", "Porto", "Graz", "Turku", "Cork", "Gent")
_EQUIPMENT = ("Projector", "Van", "Camera", "Laptop Pool", "Car", "Speakerphone")
_LEGACY_DOMAIN = "example.org"
# Shape of the legacyExchangeDN an Exchange Online mailbox leaves behind as an X500 address.
_LEGACY_DN_PREFIX = "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients"


def dns_domain(base_dn: str) -> str:
    """Return the DNS name of a ``DC=...`` base DN: ``DC=corp,DC=example,DC=com`` -> ``corp.example.com``."""
    parts = parse_dn(base_dn)
    if not parts or any(attr.lower() != "dc" for attr, _value, _sep in parts):
        raise ValueError(f"Base DN {base_dn!r} must consist of DC= components only, as an AD domain does.")
    return ".".join(value for _attr, value, _sep in parts)


def users_dn(base_dn: str) -> str:
    """Return the OU that holds every generated object (the department and resource OUs)."""
    return f"OU=Corp,{base_dn}"


def base_entries(base_dn: str) -> list[dict[str, Any]]:
    """Return the domain entry and the OU tree, parents first, as slapadd needs them."""
    top_label = dns_domain(base_dn).split(".")[0]
    corp = users_dn(base_dn)
    entries: list[dict[str, Any]] = [
        {"dn": base_dn, "objectClass": ["top", "domain"], "dc": top_label},
        {"dn": corp, "objectClass": ["top", "organizationalUnit"], "ou": "Corp"},
    ]
    for ou in (*DEPARTMENTS, RESOURCES_OU):
        entries.append({"dn": f"OU={ou},{corp}", "objectClass": ["top", "organizationalUnit"], "ou": ou})
    return entries


def _ascii_slug(text: str) -> str:
    """Fold a name to the ASCII an alias may use: accents dropped, apostrophes and spaces removed."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch == "-")


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    point = rng.random()
    for name, share in weights.items():
        point -= share
        if point < 0:
            return name
    return name


# Stepping through the name pairs with a stride coprime to their number visits every pair once
# before any repeats, so aliases are unique without remembering the ones already handed out. A large
# prime stride gives neighbouring indexes unrelated names.
_PAIRS = len(_GIVEN) * len(_SURNAMES)
_STRIDE = 7919
if _PAIRS % _STRIDE == 0:  # pragma: no cover - guards edits to the name lists
    raise RuntimeError("name pair count must be coprime with the stride")


def _person_name(index: int) -> tuple[str, str, int]:
    """Map an index to a unique (given name, surname, repeat) triple."""
    slot = (index * _STRIDE) % _PAIRS
    return _GIVEN[slot % len(_GIVEN)], _SURNAMES[slot // len(_GIVEN)], index // _PAIRS


def generate_users(n: int, *, base_dn: str = DEFAULT_BASE_DN, seed: int = 1) -> Iterator[dict[str, Any]]:
    """Yield ``n`` AD user entries (``dn`` plus attributes) for remote mailboxes, reproducibly.

    Every entry has sn, a unique objectGUID, sAMAccountName, userPrincipalName and mailNickname, and
    proxyAddresses with exactly one ``SMTP:`` primary equal to ``mail``. Binary values are ``bytes``.
    """
    rng = random.Random(seed)
    domain = dns_domain(base_dn)
    tenant = domain.split(".")[0]
    routing_domain = f"{tenant}.mail.onmicrosoft.com"
    corp = users_dn(base_dn)
    kind_weights = {kind: spec[0] for kind, spec in _KINDS.items()}

    for index in range(n):
        # Entries draw from one stream in index order and nothing drawn depends on n, which is what
        # keeps the first k entries identical whatever n is.
        kind = _weighted(rng, kind_weights)
        department = _weighted(rng, DEPARTMENTS)
        guid = uuid.UUID(int=rng.getrandbits(128), version=4)
        draws = [rng.random() for _ in range(10)]
        number = 1000 + index

        if kind == "user":
            given, surname, repeat = _person_name(index)
            suffix = str(repeat + 1) if repeat else ""
            alias = f"{_ascii_slug(given)}.{_ascii_slug(surname)}{suffix}"
            display = f"{given} {surname}"
            cn = f"{display} {suffix}" if suffix else display
            ou = department
            names: dict[str, Any] = {"sn": surname, "givenName": given, "title": rng.choice(_TITLES)}
        else:
            # Hyphenated aliases with the index in them never collide with "given.surname" ones.
            if kind == "shared":
                label = rng.choice(_SHARED_NAMES)
                display = f"{department} {label}"
                alias = f"{_ascii_slug(department)}-{_ascii_slug(label)}-{number}"
            elif kind == "room":
                label = rng.choice(_ROOM_SITES)
                display = f"Room {label} {number}"
                alias = f"room-{_ascii_slug(label)}-{number}"
            else:
                label = rng.choice(_EQUIPMENT)
                display = f"{label} {number}"
                alias = f"equip-{_ascii_slug(label)}-{number}"
            cn = display if kind != "shared" else f"{display} {number}"
            ou = RESOURCES_OU
            names = {"sn": display}

        _share, type_details, display_type, remote_types = _KINDS[kind]
        primary = f"{alias}@{domain}"
        proxies = [f"SMTP:{primary}"]
        if draws[0] < 0.9:
            proxies.append(f"smtp:{alias}@{routing_domain}")
        if kind == "user" and draws[1] < 0.3:
            proxies.append(f"smtp:{alias.replace('.', '_')}@{domain}")
        if draws[2] < 0.2:
            proxies.append(f"smtp:{alias}@{_LEGACY_DOMAIN}")
        if kind == "user" and draws[3] < 0.1:
            proxies.append(f"SIP:{primary}")
        if draws[4] < 0.1:
            proxies.append(f"X500:{_LEGACY_DN_PREFIX}/cn={guid.hex}-{alias}")

        entry: dict[str, Any] = {
            "dn": f"CN={escape_rdn(cn)},OU={ou},{corp}",
            "objectClass": USER_CLASSES,
            "cn": cn,
            **names,
            "displayName": display,
            "department": department,
            "objectGUID": guid.bytes_le,
            "sAMAccountName": alias,
            "sAMAccountType": SAM_NORMAL_USER_ACCOUNT,
            "userPrincipalName": f"{alias}@{domain}",
            "mail": primary,
            "mailNickname": alias,
            "proxyAddresses": proxies,
            "targetAddress": f"SMTP:{alias}@{routing_domain}",
            "msExchRecipientTypeDetails": type_details,
            "msExchRecipientDisplayType": display_type,
            "msExchRemoteRecipientType": remote_types[int(draws[5] * len(remote_types))],
        }
        # Entra Connect stamps the consistency GUID with objectGUID; a few users predate that.
        if draws[6] < 0.95:
            entry["mS-DS-ConsistencyGuid"] = guid.bytes_le
        if draws[7] < 0.03:
            entry["msExchHideFromAddressLists"] = True
        elif draws[7] < 0.05:
            entry["msExchHideFromAddressLists"] = False
        if draws[8] < 0.4:
            entry["extensionAttribute1"] = f"CC-{1000 + int(draws[8] * 10000)}"
            entry["extensionAttribute2"] = "Contractor" if draws[9] < 0.15 else "Employee"
        if draws[9] < 0.1:
            entry["extensionAttribute10"] = "Retain: 7y"
            entry["msExchExtensionCustomAttribute1"] = [f"project:{_ascii_slug(department)}", "region:emea"]
        yield entry
