"""An AD-shaped LDAP directory for tests, benchmarks and the demo: a private OpenLDAP slapd.

    with SandboxDirectory.start(users=1000) as directory:
        conn = ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)

The schema (``ad.schema``) gives ``user`` objects the AD and Exchange attributes SOA Portal reads
and writes, under their AD names. ldap3 behaves as against a domain controller:

- ``objectGUID`` comes back as ``"{uuid}"`` (ask for ``get_info=SCHEMA``); binary filters use
  escaped bytes (``ldap3.utils.conv.escape_bytes``).
- ``proxyAddresses`` compare case-insensitively: adding a value that is already there in any letter
  case fails with ``attributeOrValueExists``; deleting an absent one fails with ``noSuchAttribute``.
- Values longer than AD's limits (extensionAttributeN 1024, proxyAddresses 1123, mail 256) and a
  second value of a single-valued attribute fail with ``constraintViolation``.
- Booleans must go out as ``TRUE``/``FALSE``: ldap3 converts Python's ``True`` only when it has read
  the schema, and the server refuses ``True``.
- DNs come back with lower-case attribute types (``cn=...,ou=...``) where AD answers
  ``CN=...,OU=...``: compare DNs parsed, never as strings.

Change tracking (AD's ``uSNChanged``)
-------------------------------------
OpenLDAP has no integer update sequence number; its equivalent is ``entryCSN``, an operational
attribute stamped on every add and modify, e.g. ``20261123091500.123456Z#000000#000#000000``.
Within one server it increases strictly with every write (microseconds plus a counter), sorts as
text in the order the changes were made, and has an ordering matching rule and an index, so:

- the server's current high-water mark (AD: ``highestCommittedUSN`` on the root DSE) is the
  ``contextCSN`` operational attribute of the base entry: search ``base_dn`` with scope BASE and
  ``attributes=["contextCSN"]``;
- everything changed since a mark (AD: ``(uSNChanged>=N+1)``) is ``(entryCSN>=MARK)``, ask for the
  ``entryCSN`` attribute and skip entries whose entryCSN equals MARK, as those were already seen;
- the next mark is the greatest entryCSN returned (or the contextCSN read before the search).

Treat the mark as an opaque string and only the attribute names as configuration
(``uSNChanged``/``highestCommittedUSN`` on AD, ``entryCSN``/``contextCSN`` here), and the same code
works against both. ``modifyTimestamp`` is indexed for ``>=`` too (AD: ``whenChanged``) but has
one-second resolution, so it cannot separate changes made within the same second.

Which server answers (AD's ``dsServiceName``)
---------------------------------------------
USNs are per domain controller, so a mark is only meaningful on the DC that issued it. The root DSE
carries ``dsServiceName`` (the DN of the DC's NTDS Settings object), ``dnsHostName`` and
``defaultNamingContext``, served from the file slapd.conf's ``rootDSE`` directive names.
``SandboxDirectory.start(server_name="DC2", workdir=..., keep=True)`` reopens a kept database as
another DC: same data and change stamps, another ``dsServiceName``. There is no NTDS Settings object
and so no ``invocationId``. Renaming or moving an OU (modrdn) stamps the OU's entryCSN and not its
children's, as AD leaves the children's uSNChanged alone.

Deletions are not visible this way on either side (AD keeps them as tombstones under
``CN=Deleted Objects``; this sandbox simply removes them): find them by comparing full listings.
"""

from .launcher import SandboxDirectory, SandboxDirectoryError, find_tool
from .ldif import ldif_entry, write_ldif
from .users import DEFAULT_BASE_DN, base_entries, generate_users

__all__ = [
    "DEFAULT_BASE_DN",
    "SandboxDirectory",
    "SandboxDirectoryError",
    "base_entries",
    "find_tool",
    "generate_users",
    "ldif_entry",
    "write_ldif",
]
