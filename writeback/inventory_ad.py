"""The AD side of an inventory run: what to read, and whether a change mark can be trusted.

An incremental run reads only what changed since the previous completed run's mark (AD's highestCommittedUSN, the
sandbox's contextCSN). Three things make that incomplete on a real domain, and this module handles each:

- **Another domain controller.** USNs are counted per DC. A DNS name that round-robins between DCs (the usual
  ``ldaps://corp.example.com``) can hand the next run a DC whose USNs have nothing to do with the mark, and a DC
  restored from backup reuses USNs it had already issued (its invocationId changes). The server's identity (AD's
  dsServiceName and invocationId, ``DirectoryClient.server_identity``) is recorded with every mark; when it differs
  from the previous run's, the run reads the whole AD side instead. The identity is read again after the read: a
  reconnect to another DC in the middle fails the run rather than mixing two DCs' views.
- **OU renames and moves.** Renaming or moving an OU changes the OU's own uSNChanged but not its users' (AD keeps
  a child's parent by reference; OpenLDAP's back-mdb renames a subtree without touching the children's entryCSN).
  Their DN, and the OU that decides who may see and edit them, would stay stale until a full run. So an incremental
  run also looks for OUs changed since the mark and re-reads the users of each one's subtree.
- **Deletions** are invisible to a change filter on either server; only a full run (scheduled weekly by default,
  ``writeback.inventory_schedule``) finds them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from soa.attributes import ATTRIBUTES, Kind
from writeback.directory import DirectoryClient, DirectoryRetryable
from writeback.directory.client import BINARY_GUID_ATTRIBUTES
from writeback.models import DriftScan, InventoryRun

OU_FILTER = "(objectClass=organizationalUnit)"
_GUIDS = frozenset(name.lower() for name in BINARY_GUID_ATTRIBUTES)
_INTEGERS = frozenset(attribute.ad.lower() for attribute in ATTRIBUTES if attribute.kind is Kind.INTEGER)


@dataclass
class AdRead:
    """What one run reads from AD: ``entries`` streams the users, ``mark`` and ``server`` are recorded with the run."""

    mark: str | None
    server: str
    full: bool
    reason: str = ""
    entries: Iterator[dict[str, Any]] = field(default_factory=lambda: iter(()))


def _full_read_reason(previous: InventoryRun | DriftScan | None, server: str) -> str:
    """Why the AD side must be read in full; "" when the previous mark can be trusted."""
    if previous is None:
        return "full import"
    if not previous.ad_high_water:
        return "the previous import recorded no directory change mark"
    if not server:
        return "the directory does not name the server answering (no dsServiceName), so a change mark cannot be trusted"
    if not previous.ad_server:
        return "the previous import did not record which directory server its change mark came from"
    if previous.ad_server != server:
        return (
            f"the directory is now answered by {server}, the previous import's change mark is from "
            f"{previous.ad_server}; change numbers are per server"
        )
    return ""


def ad_read(
    run: InventoryRun | DriftScan,
    directory: DirectoryClient,
    *,
    previous: InventoryRun | DriftScan | None,
    base_dn: str,
    user_filter: str,
    attributes: Sequence[str],
) -> AdRead:
    """Decide how this run reads AD, record the server and the reason for a full read on the run, and return the read.

    ``previous`` is the completed run an incremental run continues from (None for a full run). ``run`` and
    ``previous`` are an InventoryRun, or a DriftScan (writeback.jobs.drift), which keeps the same AD fields.
    """
    server = directory.server_identity()
    mark = directory.change_mark()
    reason = _full_read_reason(previous, server)
    full = bool(reason)
    type(run).objects.filter(pk=run.pk).update(ad_server=server, ad_full_reason=reason if previous is not None else "")
    if full:
        entries = _formatted(directory.paged_search(base_dn, user_filter, attributes, raw=True))
    else:
        entries = _changes(run, directory, previous.ad_high_water, base_dn, user_filter, attributes)
    return AdRead(mark=mark, server=server, full=full, reason=reason, entries=_same_server(directory, server, entries))


def _changes(
    run: InventoryRun | DriftScan,
    directory: DirectoryClient,
    mark: str,
    base_dn: str,
    user_filter: str,
    attributes: Sequence[str],
) -> Iterator[dict[str, Any]]:
    """Users changed since ``mark``, then every user below an OU changed since it (renamed, moved, or edited)."""
    seen: set[bytes] = set()  # objectGUIDs of the changed users: only as many as changed since the mark
    changed = directory.paged_search(base_dn, directory.changed_since_filter(user_filter, mark), attributes, raw=True)
    for entry in _formatted(changed):
        seen.add(entry["attributes"].get("objectGUID") or b"")
        yield entry
    # The OU list is read whole before its subtrees: a paged search left open while others run on the same
    # connection is what the client's generation check refuses.
    ous = [ou["dn"] for ou in directory.paged_search(base_dn, directory.changed_since_filter(OU_FILTER, mark))]
    type(run).objects.filter(pk=run.pk).update(ad_ous_changed=len(ous))
    for ou in _outermost(ous):
        for entry in _formatted(directory.paged_search(ou, user_filter, attributes, raw=True)):
            guid = entry["attributes"].get("objectGUID") or b""
            if guid not in seen:
                seen.add(guid)
                yield entry


def formatted(entry: dict[str, Any]) -> dict[str, Any]:
    """A raw entry (``DirectoryClient.paged_search(raw=True)``) as the import reads one: ``{"dn", "attributes"}``,
    GUIDs as their 16 bytes, integer attributes as int, other values as lists of text (bytes when not UTF-8), which
    writeback.inventory_pairing and soa.values take as they take ldap3's formatted values."""
    attributes: dict[str, Any] = {}
    for name, values in entry["raw_attributes"].items():
        lower = name.lower()
        if lower in _GUIDS:
            attributes[name] = values[0] if values else None
            continue
        texts: list[Any] = []
        for value in values:
            try:
                texts.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(value)
        if lower in _INTEGERS:
            texts = [int(text) if isinstance(text, str) and text.lstrip("-").isdigit() else text for text in texts]
        attributes[name] = texts
    return {"dn": entry["dn"], "attributes": attributes}


def _formatted(entries: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for entry in entries:
        yield formatted(entry)


def _outermost(dns: list[str]) -> list[str]:
    """The DNs not below another one in the list: a subtree read covers the OUs inside it."""
    from portal.dn import InvalidDn, normalize_dn

    parsed = []
    for dn in dns:
        try:
            parsed.append((normalize_dn(dn), dn))
        except InvalidDn:
            parsed.append((dn.lower(), dn))
    keep = []
    for norm, dn in parsed:
        if not any(other != norm and norm.endswith("," + other) for other, _ in parsed):
            keep.append(dn)
    return keep


def _same_server(
    directory: DirectoryClient, server: str, entries: Iterator[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Pass the entries through, then check that the server answering is still the one the mark came from."""
    yield from entries
    now = directory.server_identity()
    if now != server:
        raise DirectoryRetryable(
            f"The directory connection moved from {server or 'an unnamed server'} to {now or 'an unnamed server'} "
            "during the read; run the import again.",
            operation="search",
            target=directory.config.url,
        )
