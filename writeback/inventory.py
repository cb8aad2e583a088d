"""Inventory import: every directory-synced mailbox, as Exchange Online and AD each describe it.

A run streams an AD paged search, then (when some AD user still needs it) Graph's users, then Exchange Online's
Get-Mailbox pages, and upserts each page into Mailbox rows in its own short transaction (written through
writeback.rows, not the ORM's per-value compilation). Get-Mailbox is read from the start of the run, by a child
process or a thread that spools its pages (writeback.read_ahead), so that both sources are read at once while the
merge keeps its order: directory first, which pairing needs; the two sides meet on
ExternalDirectoryObjectId, found the ways writeback/inventory_pairing.py describes. Nothing holds the tenant in
memory: one page at a time. A row is written only when something in it changed, so a re-run over an
unchanged tenant changes nothing but the read times. An incremental run reads only what changed since the
last completed run (AD's change stamp, Exchange's WhenChangedUTC); only a full run can tell which objects
have disappeared from one side.

Network calls happen outside any transaction; the run row is the truth about progress, and every page written is
its heartbeat. Changes to a mailbox's authority and presence (in_ad, in_exo) are audited once per page
(``writeback.inventory.changed``, naming each mailbox). The job that runs an import is writeback.jobs.inventory.
"""

import contextlib
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from portal.audit import audit_record
from portal.dn import InvalidDn, normalize_dn
from portal.roles import Action, may
from soa.attributes import ATTRIBUTES
from soa.choices import Authority, Pairing
from soa.jobs import INVENTORY_JOB_TIMEOUT, INVENTORY_RUN_JOB, enqueue
from soa.models import Mailbox, MailboxAddress, MailboxNameWord
from soa.name_words import name_suffixes
from soa.values import ad_values, exo_values, refresh_drift, split_proxy
from writeback.directory import AD_USER_FILTER, DirectoryClient
from writeback.exchange import (
    ExchangeOnlineClient,
    ExoAuthError,
    GraphClient,
    GraphError,
)
from writeback.inventory_ad import ad_read
from writeback.inventory_pairing import (
    CONSISTENCY_GUID,
    DIRECTORY_ID_ATTRIBUTE,
    anchor_attribute,
    directory_object_id,
    outranks,
    repair,
    source_anchor,
)
from writeback.jobs.lifecycle import run_heartbeat
from writeback.models import InventoryRun
from writeback.read_ahead import Held, ReadAhead, Spool
from writeback.rows import insert_rows, insert_values, update_rows

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
# Exchange's WhenChangedUTC has one-second resolution: re-read the last second rather than miss a change in it.
EXO_OVERLAP = dt.timedelta(seconds=1)
_AD_FIELDS = [
    "ad_guid", "source_anchor", "dn", "dn_norm", "ou_norm", "upn", "display_name", "search_name", "department",
    "ad_values", "ad_when_created",
]  # fmt: skip
# When the AD object was created: AD's constructed createTimeStamp (from whenCreated), OpenLDAP's operational one.
CREATED_ATTRIBUTE = "createTimestamp"
_EXO_FIELDS = ["exo_object_id", "exo_values", "authority", "primary_smtp", "recipient_type_details", "exo_when_changed"]


class InventoryError(Exception):
    """The import cannot be started or could not finish; the message says why."""


def _pages(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while page := list(islice(iterator, size)):
        yield page


def _bump(run: InventoryRun, **counts: int) -> None:
    """Add to the run's counters; the same statement is the run's heartbeat (writeback.jobs.lifecycle)."""
    run_heartbeat(InventoryRun, run.pk, **{name: F(name) + value for name, value in counts.items() if value})


def _record_changes(run: InventoryRun, side: str, created: list[Mailbox], changes: dict[int, dict[str, list]]) -> None:
    """One audit event for a page's changes to mailboxes' authority and presence (in_ad, in_exo): the mailboxes it
    created, and for each changed one the fields as [before, after]. Nothing when the page changed neither."""
    if created or changes:
        after = {"side": side, "created": [m.pk for m in created], "changed": changes}
        audit_record(actor=None, action="writeback.inventory.changed", obj=run, after=after)


def _changes(before: dict[str, Any], mailbox: Mailbox) -> dict[str, list]:
    return {name: [value, getattr(mailbox, name)] for name, value in before.items() if getattr(mailbox, name) != value}


@functools.lru_cache(maxsize=4096)
def _parent_dn(parent: str) -> str:
    return normalize_dn(parent)


def _dn_parts(dn: str) -> tuple[str, str]:
    """The normalised DN and its parent's. Thousands of users share a parent: when the first RDN is plain (no escape,
    no second value, no quote), it is parsed alone and the parent's normal form comes from a cache; parsing every
    whole DN was a tenth of an import's CPU."""
    head, comma, parent = dn.partition(",")
    try:
        if comma and parent.strip() and not any(char in head for char in '\\+;"'):
            parent_norm = _parent_dn(parent)
            return f"{normalize_dn(head)},{parent_norm}", parent_norm
        norm = normalize_dn(dn)
    except InvalidDn:
        return "", ""
    return norm, norm.split(",", 1)[1] if "," in norm else ""


def _save_changed(mailboxes: list[Mailbox], fields: list[str]) -> None:
    # Django's bulk_update builds a CASE expression per row and field, which cost two thirds of an import's time
    # (profiled at 3,000 users); writeback.rows sends one statement per few hundred rows instead.
    now = timezone.now()
    for mailbox in mailboxes:
        mailbox.updated_at = now
    update_rows(mailboxes, [*fields, "updated_at"])


def _stamp(pks: list[int], **stamps: Any) -> None:
    """The read stamps alone, on rows the page left unchanged: on PostgreSQL a heap-only update, since no index holds
    these columns and the table's pages keep room for it (soa migration 0015)."""
    if pks:
        Mailbox.objects.filter(pk__in=pks).update(**stamps)


def _replace_name_words(mailboxes: list[Mailbox], *, new: bool = False) -> None:
    """Write the name-search word rows of saved ``mailboxes`` (soa.name_words), replacing theirs unless ``new``."""
    if not mailboxes:
        return
    if not new:
        MailboxNameWord.objects.filter(mailbox__in=[m.pk for m in mailboxes]).delete()
    insert_values(
        MailboxNameWord,
        ["mailbox", "suffix"],
        [(m.pk, suffix) for m in mailboxes for suffix in name_suffixes(m.search_name)],
    )


def created_at(attributes: dict[str, Any]) -> dt.datetime | None:
    """The entry's creation time (CREATED_ATTRIBUTE, GeneralizedTime ``20261130120000Z`` or already parsed)."""
    value = next((v for k, v in attributes.items() if k.lower() == CREATED_ATTRIBUTE.lower()), None)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        try:
            value = dt.datetime.strptime(value[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return None


def _apply(mailbox: Mailbox, fields: dict[str, Any]) -> bool:
    """Set the fields that differ; True when anything did."""
    changed = False
    for name, value in fields.items():
        if getattr(mailbox, name) != value:
            setattr(mailbox, name, value)
            changed = True
    return changed


def _when(value: Any) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def exchange_key(payload: dict[str, Any]) -> bytes | None:
    """The spool's key for a Get-Mailbox object: its ExternalDirectoryObjectId's bytes, for a synced one only (what
    import_exo_page would pair on). Anything else stays in the spool for the Exchange pass, which judges it."""
    object_id = payload.get("ExternalDirectoryObjectId")
    if payload.get("IsDirSynced") is not True or not object_id:
        return None
    try:
        return uuid.UUID(str(object_id)).bytes
    except ValueError:
        return None


def _exo_fields(object_id: uuid.UUID, payload: dict[str, Any]) -> dict[str, Any]:
    """What a Get-Mailbox object sets on its row."""
    return {
        "exo_object_id": object_id,
        "exo_values": exo_values(payload),
        "authority": Authority.CLOUD if payload.get("IsExchangeCloudManaged") else Authority.ON_PREM,
        "primary_smtp": str(payload.get("PrimarySmtpAddress") or "").lower(),
        "recipient_type_details": str(payload.get("RecipientTypeDetails") or ""),
        "exo_when_changed": _when(payload.get("WhenChangedUTC")),
    }


@dataclass
class _ExoSide:
    """What taking a page's Exchange objects from the spool did (import_ad_page)."""

    completed: list[Mailbox] = field(default_factory=list)  # rows given their Exchange side, new ones included
    changed: list[Mailbox] = field(default_factory=list)  # existing rows whose Exchange side changed
    readdress: list[Mailbox] = field(default_factory=list)  # existing rows whose addresses changed
    before: list[tuple[Mailbox, dict[str, Any]]] = field(default_factory=list)  # authority and in_exo before
    read: int = 0
    newest: dt.datetime | None = None

    def audit(self) -> dict[int, dict[str, list]]:
        """Changes to authority and in_exo, as the Exchange pass would have recorded them (rows saved by now)."""
        return {m.pk: diff for m, before in self.before if (diff := _changes(before, m))}


def _take_exchange_side(run: InventoryRun, spool: Spool, rows: list[Mailbox], now: dt.datetime) -> _ExoSide:
    """Merge into ``rows`` (paired by directory id, new or existing) the Get-Mailbox objects the spool has read
    for them, as import_exo_page would have when its turn came. An object not read yet arrives in that pass."""
    side = _ExoSide()
    taken = spool.take(m.exo_object_id.bytes for m in rows)
    for mailbox in rows:
        payloads = taken.get(mailbox.exo_object_id.bytes)
        if not payloads:
            continue
        side.read += len(payloads)
        # Two objects with one id: the later read wins, as it would in the Exchange pass.
        fields = _exo_fields(mailbox.exo_object_id, payloads[-1])
        for payload in payloads:
            when = _when(payload.get("WhenChangedUTC"))
            if when and (side.newest is None or when > side.newest):
                side.newest = when
        side.before.append((mailbox, {"authority": mailbox.authority, "in_exo": mailbox.in_exo}))
        addresses_before = mailbox.exo_values.get("EmailAddresses") if mailbox.in_exo else None
        if _apply(mailbox, fields) or not mailbox.in_exo:
            mailbox.in_exo = True
            if mailbox.pk is not None:
                side.changed.append(mailbox)
                if addresses_before != mailbox.exo_values.get("EmailAddresses"):
                    side.readdress.append(mailbox)
        mailbox.exo_read_at, mailbox.exo_seen_run = now, run.pk
        side.completed.append(mailbox)
    return side


def _hold_back(keyed: list[tuple], by_guid: dict, by_object: dict, exchange: Spool, held: Held) -> tuple[list, int]:
    """Put aside the users whose row would be new and whose Exchange object the spool has not read yet: each is
    imported as soon as its object has been read (``Held.ready``), since nobody else can touch its row or object
    meanwhile. Any user naming an object a waiting user names, or an object a waiting user's row holds, waits too,
    until the end, in the directory's order: the order in which users claim an object decides who gets it.
    Returns the users to import now and how many were put aside."""
    named = [object_id.bytes for _, _, object_id, _ in keyed if object_id]
    if not named:
        return keyed, 0
    waiting = held.holds(named)
    new = [
        object_id.bytes
        for guid, _, object_id, _ in keyed
        if object_id and guid not in by_guid and object_id not in by_object and object_id.bytes not in waiting
    ]
    unread = set(new) - exchange.has(new)
    now, aside, blocks = [], [], []
    for item in keyed:
        guid, _, object_id, entry = item
        key = object_id.bytes if object_id else None
        if key is not None and key in waiting:
            aside.append((key, entry, False))
            row = by_guid.get(guid)
            if row is not None and row.exo_object_id is not None:
                blocks.append(row.exo_object_id.bytes)  # who names the object this row holds waits behind it
                waiting.add(row.exo_object_id.bytes)
        elif key is not None and key in unread and guid not in by_guid:
            aside.append((key, entry, True))
            waiting.add(key)  # a later user of this page naming it waits behind this one
        else:
            now.append(item)
    if aside:
        held.put(aside, blocks)
    return now, len(aside)


# -- Active Directory side ------------------------------------------------------------------------------------


def import_ad_page(
    run: InventoryRun, entries: list[dict[str, Any]], exchange: Spool | None = None, held: Held | None = None
) -> dt.datetime | None:
    """Upsert one page of AD user entries (``{"dn": ..., "attributes": {...}}`` with raw GUID bytes).

    A user whose msDS-ExternalDirectoryObjectID names its Exchange object is paired here (inventory_pairing), and
    when ``exchange`` (the run's spool of Get-Mailbox objects) has read that object already, it is taken from the
    spool and merged now, so the row is written once with both sides. Returns the newest WhenChangedUTC taken.

    With ``held``, while Exchange Online is still being read, a user who would get a new row and whose object the
    spool has not read yet is put aside (``_hold_back``), to be imported once it has.
    """
    keyed = []
    for entry in entries:
        attributes = entry["attributes"]
        guid_bytes = attributes.get("objectGUID")
        if not guid_bytes:
            continue
        keyed.append(
            (uuid.UUID(bytes_le=guid_bytes), source_anchor(attributes), directory_object_id(attributes), entry)
        )
    object_ids = [object_id for _, _, object_id, _ in keyed if object_id]
    existing = Mailbox.objects.filter(
        Q(ad_guid__in=[guid for guid, _, _, _ in keyed]) | Q(exo_object_id__in=object_ids)
    )
    by_guid = {m.ad_guid: m for m in existing if m.ad_guid}
    by_object = {m.exo_object_id: m for m in existing if m.exo_object_id}
    put_aside = 0
    if exchange is not None and held is not None and not exchange.finished:
        keyed, put_aside = _hold_back(keyed, by_guid, by_object, exchange, held)
    created, changed, seen, repairs = [], [], [], []
    paired: list[Mailbox] = []  # rows now paired by directory id, whose Exchange side the spool may hold
    renamed: set[int] = set()  # rows whose name changed: their word rows are written again
    presence: dict[int, dict[str, Any]] = {}  # in_ad of each existing row before this page
    for guid, anchor, object_id, entry in keyed:
        values = ad_values(entry["attributes"])
        dn_norm, ou_norm = _dn_parts(entry["dn"])
        fields = {
            "ad_guid": guid, "source_anchor": anchor, "dn": entry["dn"], "dn_norm": dn_norm, "ou_norm": ou_norm,
            "upn": (values.get("UserPrincipalName") or "").lower(), "display_name": values.get("DisplayName") or "",
            "search_name": (values.get("DisplayName") or "").lower(),
            "department": values.get("Department") or "", "ad_values": values,
            "ad_when_created": created_at(entry["attributes"]),
        }  # fmt: skip
        ad_mail = str(values.get("WindowsEmailAddress") or "").lower()
        mailbox = by_guid.get(guid)
        partner = by_object.get(object_id) if object_id else None
        if partner is not None and partner.ad_guid not in (None, guid):
            # Two AD users name one cloud object: believe neither, and say so.
            logger.warning("%s and %s both name Exchange object %s", partner.dn, entry["dn"], object_id)
            object_id, partner = None, None
        if mailbox is None and partner is not None:
            mailbox, partner = partner, None  # the Exchange-only row this user's id names gets its AD side
        if mailbox is None:
            mailbox = Mailbox(in_ad=True, primary_smtp=ad_mail, **fields)
            if object_id:
                mailbox.exo_object_id, mailbox.pairing = object_id, Pairing.DIRECTORY_ID
                paired.append(mailbox)
            created.append(mailbox)
            continue
        seen.append(mailbox.pk)
        presence[mailbox.pk] = {"in_ad": mailbox.in_ad}
        if mailbox.search_name != fields["search_name"]:
            renamed.add(mailbox.pk)
        dirty = _apply(mailbox, fields) or not mailbox.in_ad
        if object_id and mailbox.exo_object_id != object_id:
            repairs.append((mailbox, partner, object_id))
            continue
        if object_id and mailbox.pairing != Pairing.DIRECTORY_ID:
            mailbox.pairing, dirty = Pairing.DIRECTORY_ID, True
        if object_id:
            paired.append(mailbox)
        if not mailbox.in_exo and mailbox.primary_smtp != ad_mail:
            mailbox.primary_smtp, dirty = ad_mail, True  # what a weak pair by primary SMTP looks for
        if dirty:
            mailbox.in_ad = True
            mailbox.version += 1
            changed.append(mailbox)
    now = timezone.now()
    exo = _take_exchange_side(run, exchange, paired, now) if exchange is not None else _ExoSide()
    ad_changed = {m.pk for m in changed}
    for mailbox in exo.changed:
        if mailbox.pk not in ad_changed:
            mailbox.version += 1
    for mailbox in (*created, *changed, *exo.changed):
        refresh_drift(mailbox)
    # Rows written anyway carry their read stamps in the same statement; the others get them alone (_stamp).
    for mailbox in (*created, *changed, *exo.changed, *(m for m, _, _ in repairs)):
        mailbox.ad_read_at, mailbox.ad_seen_run = now, run.pk
    whole = {m.pk for m in exo.completed if m.pk is not None}  # existing rows whose Exchange side came with them
    written = {m.pk for m in changed} | {m.pk for m in exo.changed} | {m.pk for m, _, _ in repairs}
    with transaction.atomic():
        repaired = []
        for mailbox, partner, object_id in repairs:
            repaired.append(repair(mailbox, object_id=object_id, partner=partner, pairing=Pairing.DIRECTORY_ID))
            mailbox.in_ad = True
            refresh_drift(mailbox)
            mailbox.save()
        insert_rows(created)
        fields = [*_AD_FIELDS, "in_ad", "version", "drift", "has_drift", "pairing", "primary_smtp"]
        ad_only = [m for m in changed if m.pk not in whole]
        _save_changed(ad_only, [*fields, "ad_read_at", "ad_seen_run"])
        both = [m for m in {m.pk: m for m in (*changed, *exo.changed)}.values() if m.pk in whole]
        stamps = ["ad_read_at", "ad_seen_run", "exo_read_at", "exo_seen_run"]
        _save_changed(both, list(dict.fromkeys([*fields, *_EXO_FIELDS, "in_exo", *stamps])))
        _replace_name_words(created, new=True)
        _replace_name_words([*(m for m in changed if m.pk in renamed), *(m for m, _, _ in repairs)])
        unwritten = [pk for pk in seen if pk not in written]
        _stamp([pk for pk in unwritten if pk not in whole], ad_read_at=now, ad_seen_run=run.pk)
        _stamp([pk for pk in unwritten if pk in whole], ad_read_at=now, ad_seen_run=run.pk, exo_read_at=now,
               exo_seen_run=run.pk)  # fmt: skip
        _replace_addresses([m for m in created if m.in_exo], new=True)
        _replace_addresses(exo.readdress)
        if repaired:
            after = {"source": DIRECTORY_ID_ATTRIBUTE, "pairs": repaired}
            audit_record(actor=None, action="writeback.inventory.paired", obj=run, after=after)
        moved = [m for m in changed] + [m for m, _, _ in repairs]
        changes = {m.pk: diff for m in moved if (diff := _changes(presence[m.pk], m))}
        _record_changes(run, "ad", created, changes)
        _record_changes(run, "exo", [], exo.audit())
    _bump(
        run, ad_read=len(entries) - put_aside, created=len(created), exo_read=exo.read,
        changed=len(changed) + len(repairs) + len(exo.changed),
        unchanged=len(seen) - len(changed) - len(repairs) + len(whole) - len(exo.changed),
    )  # fmt: skip
    return exo.newest


# -- Exchange Online side -------------------------------------------------------------------------------------


def _replace_addresses(mailboxes: list[Mailbox], *, new: bool = False) -> None:
    """Write the address rows of saved ``mailboxes`` from their Exchange addresses, replacing theirs unless ``new``."""
    if not mailboxes:
        return
    if not new:
        MailboxAddress.objects.filter(mailbox__in=[m.pk for m in mailboxes]).delete()
    rows = {}
    for mailbox in mailboxes:
        for raw in mailbox.exo_values.get("EmailAddresses") or []:
            prefix, address, primary = split_proxy(raw)
            rows[(mailbox.pk, prefix, address)] = primary
    insert_values(
        MailboxAddress,
        ["mailbox", "prefix", "address", "is_primary"],
        [(*key, primary) for key, primary in rows.items()],
    )


def _weak_partners(payloads: list[dict[str, Any]]) -> tuple[dict[str, Mailbox], dict[str, Mailbox]]:
    """AD-only rows a payload could be paired with by name: by UPN, and by primary SMTP address (unambiguous only)."""
    upns = {str(p.get("UserPrincipalName") or "").lower() for p in payloads} - {""}
    smtps = {str(p.get("PrimarySmtpAddress") or "").lower() for p in payloads} - {""}
    if not upns and not smtps:
        return {}, {}
    candidates = Mailbox.objects.filter(exo_object_id__isnull=True, in_ad=True).filter(
        Q(upn__in=upns) | Q(primary_smtp__in=smtps)
    )
    by_upn: dict[str, Mailbox] = {}
    by_smtp: dict[str, list[Mailbox]] = {}
    for mailbox in candidates:
        by_upn.setdefault(mailbox.upn, mailbox)
        if mailbox.primary_smtp:
            by_smtp.setdefault(mailbox.primary_smtp, []).append(mailbox)
    return by_upn, {smtp: rows[0] for smtp, rows in by_smtp.items() if len(rows) == 1}


def import_exo_page(run: InventoryRun, payloads: list[dict[str, Any]]) -> dt.datetime | None:
    """Upsert one page of Get-Mailbox objects; returns the newest WhenChangedUTC in it.

    A mailbox meets its AD row on ExternalDirectoryObjectId, which the AD and Graph passes put there; one that
    finds none is paired by UPN or primary SMTP address with an AD row still unpaired, as a weak pair.
    """
    synced = [p for p in payloads if p.get("IsDirSynced") is True and p.get("ExternalDirectoryObjectId")]
    skipped = len(payloads) - len(synced)
    object_ids = [uuid.UUID(str(p["ExternalDirectoryObjectId"])) for p in synced]
    by_object = {m.exo_object_id: m for m in Mailbox.objects.filter(exo_object_id__in=object_ids)}
    by_upn, by_smtp = _weak_partners([p for o, p in zip(object_ids, synced, strict=True) if o not in by_object])
    created, changed, seen, readdress = [], [], [], []
    presence: dict[int, dict[str, Any]] = {}  # authority and in_exo of each existing row before this page
    newest = None
    for object_id, payload in zip(object_ids, synced, strict=True):
        fields = _exo_fields(object_id, payload)
        when = fields["exo_when_changed"]
        newest = max(newest, when) if newest and when else (newest or when)
        upn = str(payload.get("UserPrincipalName") or "").lower()
        primary = fields["primary_smtp"]
        mailbox = by_object.get(object_id)
        if mailbox is None:
            for pairing, partner in ((Pairing.UPN, by_upn.pop(upn, None)), (Pairing.SMTP, by_smtp.pop(primary, None))):
                if partner is not None and partner.exo_object_id is None:
                    mailbox = partner
                    mailbox.pairing = pairing
                    break
        if mailbox is None:
            mailbox = Mailbox(
                in_exo=True, upn=upn, display_name=payload.get("DisplayName") or "",
                search_name=str(payload.get("DisplayName") or "").lower(), **fields,
            )  # fmt: skip
            refresh_drift(mailbox)
            created.append(mailbox)
            continue
        seen.append(mailbox.pk)
        presence[mailbox.pk] = {"authority": mailbox.authority, "in_exo": mailbox.in_exo}
        addresses_before = mailbox.exo_values.get("EmailAddresses") if mailbox.in_exo else None
        if _apply(mailbox, fields) or not mailbox.in_exo:
            mailbox.in_exo = True
            mailbox.version += 1
            refresh_drift(mailbox)
            changed.append(mailbox)
            if addresses_before != mailbox.exo_values.get("EmailAddresses"):
                readdress.append(mailbox)
    # A row the AD pass of this very run created is being completed, not changed: count it once, as created.
    completed = sum(1 for m in changed if run.started_at and m.created_at and m.created_at >= run.started_at)
    now = timezone.now()
    for mailbox in (*created, *changed):
        mailbox.exo_read_at, mailbox.exo_seen_run = now, run.pk
    written = {m.pk for m in changed}
    with transaction.atomic():
        insert_rows(created)
        _replace_name_words(created, new=True)
        fields = [*_EXO_FIELDS, "in_exo", "version", "drift", "has_drift", "pairing"]
        _save_changed(changed, [*fields, "exo_read_at", "exo_seen_run"])
        _stamp([pk for pk in seen if pk not in written], exo_read_at=now, exo_seen_run=run.pk)
        _replace_addresses(created, new=True)
        _replace_addresses(readdress)
        _record_changes(run, "exo", created, {m.pk: diff for m in changed if (diff := _changes(presence[m.pk], m))})
    _bump(
        run, exo_read=len(payloads), created=len(created), changed=len(changed) - completed,
        unchanged=len(seen) - len(changed), skipped_not_synced=skipped,
    )  # fmt: skip
    return newest


# -- Entra ID (Graph) side -------------------------------------------------------------------------------------


def import_graph_page(run: InventoryRun, users: list[dict[str, Any]]) -> int:
    """Pair AD rows with their Exchange objects through Graph users' sourceAnchor; returns how many it (re)paired."""
    anchors = {
        str(u["onPremisesImmutableId"]): uuid.UUID(str(u["id"])) for u in users if u.get("onPremisesImmutableId")
    }
    if not anchors:
        return 0
    rows = [
        m
        for m in Mailbox.objects.filter(in_ad=True, source_anchor__in=list(anchors))
        if m.exo_object_id != anchors[m.source_anchor] and outranks(Pairing.GRAPH, m.pairing)
    ]
    if not rows:
        return 0
    wanted = [anchors[m.source_anchor] for m in rows]
    partners = {m.exo_object_id: m for m in Mailbox.objects.filter(exo_object_id__in=wanted)}
    done = []
    with transaction.atomic():
        for mailbox in rows:
            object_id = anchors[mailbox.source_anchor]
            partner = partners.get(object_id)
            if partner is not None and partner.ad_guid is not None:
                # Another AD row already holds that object by a stronger or equal pair: leave both alone.
                logger.warning("Graph pairs %s with %s, which %s already holds", mailbox.dn, object_id, partner.dn)
                continue
            done.append(repair(mailbox, object_id=object_id, partner=partner, pairing=Pairing.GRAPH))
            refresh_drift(mailbox)
            mailbox.save()
        if done:
            after = {"source": "graph", "pairs": done}
            audit_record(actor=None, action="writeback.inventory.paired", obj=run, after=after)
    _bump(run, graph_paired=len(done))
    return len(done)


# -- the run ---------------------------------------------------------------------------------------------------


def _needs_graph() -> bool:
    """Whether any AD user still lacks a pair by identifier (Graph is not asked when the directory ids suffice)."""
    strong = [Pairing.DIRECTORY_ID, Pairing.GRAPH]
    return Mailbox.objects.filter(in_ad=True).exclude(pairing__in=strong).exists()


def _previous(run: InventoryRun) -> InventoryRun | None:
    return InventoryRun.objects.filter(state=InventoryRun.State.DONE, pk__lt=run.pk).order_by("-pk").first()


def _phase(run: InventoryRun, phase: str, **fields: Any) -> None:
    run_heartbeat(InventoryRun, run.pk, phase=phase, **fields)


def _exchange_pages(client: Callable[[], ExchangeOnlineClient], parameters: dict[str, Any]) -> Iterator[list[dict]]:
    return client().iter_pages("Get-Mailbox", parameters)


# How long the directory pass, with nothing else to do, waits for more Exchange objects to arrive in the spool.
_WAIT_FOR_OBJECTS = 0.05
_WAITING_HEARTBEAT = 10.0


def _import_ad_pages(
    run: InventoryRun,
    exchange: Any,
    pages: Iterable[list],
    newest: dt.datetime | None,
    held: Held | None = None,
    *,
    merge: Callable,
) -> dt.datetime | None:
    """``merge`` (import_ad_page) for each page; returns the newest WhenChangedUTC so far."""
    for page in pages:
        if page:
            page_newest = merge(run, page, exchange, held)
            if page_newest and (newest is None or page_newest > newest):
                newest = page_newest
    return newest


def directory_pass(
    run: InventoryRun,
    ad_pages: Iterable[list],
    exchange: Any,
    newest: dt.datetime | None,
    *,
    tick: Callable[[], None] = lambda: None,
    merge: Callable | None = None,
) -> dt.datetime | None:
    """Merge the directory's pages, taking from ``exchange`` (a Spool, or a spread import's SharedSpool) the objects
    its users name; users whose objects are not read yet wait on disk (Held) until they are, or to the end. ``tick``
    is called after each page and while waiting (``heartbeat``: a slow Exchange read is not a stalled import);
    ``merge`` imports one page (import_ad_page by default).
    Returns the newest WhenChangedUTC taken."""
    merge = merge or import_ad_page
    with Held() as held:
        importing = partial(_import_ad_pages, run, exchange, merge=merge)
        for page in ad_pages:
            newest = importing([page], newest, held)
            newest = importing([held.ready(exchange, PAGE_SIZE)], newest)  # users whose objects came meanwhile
            tick()
        while held.count and not exchange.finished:  # the directory is read: the waiting users as their objects come
            if held.early > held.given_early and (page := held.ready(exchange, PAGE_SIZE)):
                newest = importing([page], newest)
                continue
            tick()
            time.sleep(_WAIT_FOR_OBJECTS)
        newest = importing(held.pages(PAGE_SIZE), newest)  # Exchange is read: whoever still waits, in order
        logger.info(
            "inventory %s: the directory pass took %d Exchange objects from the spool; %d users waited for theirs",
            run.pk, exchange.taken, held.count,
        )  # fmt: skip
    return newest


def heartbeat(run: InventoryRun, every: float = _WAITING_HEARTBEAT) -> Callable[[], None]:
    """A tick that says the run is alive at most every ``every`` seconds."""
    last = time.monotonic()

    def tick() -> None:
        nonlocal last
        if time.monotonic() - last > every:
            run_heartbeat(InventoryRun, run.pk)
            last = time.monotonic()

    return tick


def ad_attributes() -> list[str]:
    """What the import reads of each AD user."""
    return list(dict.fromkeys(["objectGUID", CONSISTENCY_GUID, anchor_attribute(), DIRECTORY_ID_ATTRIBUTE,
                               CREATED_ATTRIBUTE, *(a.ad for a in ATTRIBUTES)]))  # fmt: skip


def exchange_parameters(previous: InventoryRun | None) -> dict[str, Any]:
    """Get-Mailbox's parameters: everything, or what changed since the previous run's newest WhenChangedUTC."""
    parameters: dict[str, Any] = {"ResultSize": "Unlimited"}
    if previous and previous.exo_high_water:
        since = (previous.exo_high_water - EXO_OVERLAP).strftime("%Y-%m-%dT%H:%M:%SZ")
        parameters["Filter"] = f"WhenChangedUTC -gt '{since}'"
    return parameters


def exchange_spool(run: InventoryRun, exchange: ExchangeOnlineClient, parameters: dict[str, Any], **options) -> Spool:
    """Exchange Online read from now on, by a child process or a thread, into a spool (writeback.read_ahead)."""
    if settings.INVENTORY_READ_PROCESS:  # a client of its own in the child: the parent's sockets stay the parent's
        source = partial(_exchange_pages, partial(ExchangeOnlineClient, exchange.config), parameters)
    else:
        source = partial(_exchange_pages, lambda: exchange, parameters)
    name = f"inventory-{run.pk}-exchange"
    return Spool(source, name=name, process=settings.INVENTORY_READ_PROCESS, key=exchange_key, **options)


def run_import(
    run: InventoryRun, *, exchange: ExchangeOnlineClient, directory: DirectoryClient, graph: GraphClient | None = None
) -> InventoryRun:
    """Read both sides page by page into the database, then settle one-sided objects and drift totals.

    ``graph`` (None: pair without it) is asked only when some AD user is left without an identifier pair. A full
    import with INVENTORY_WORKERS above 1 spreads its directory pass over workers (writeback.inventory_shards).
    """
    previous = _previous(run) if run.mode == InventoryRun.Mode.INCREMENTAL else None
    if run.mode == InventoryRun.Mode.INCREMENTAL and previous is None:
        raise InventoryError("An incremental import needs a completed earlier import; run a full import first.")
    _phase(run, "directory", expected=Mailbox.objects.count())
    if run.mode == InventoryRun.Mode.FULL and settings.INVENTORY_WORKERS > 1:
        from writeback.inventory_shards import spread_import  # it builds on this module

        newest, mark = spread_import(run, exchange=exchange, directory=directory, graph=graph)
        return settle(run, mark=mark, newest=newest)

    # Changed users and the users of changed OUs, or everything when the mark is from another server (inventory_ad).
    ad = ad_read(
        run, directory, previous=previous, base_dn=settings.LDAP_BASE_DN, user_filter=AD_USER_FILTER,
        attributes=ad_attributes(),
    )  # fmt: skip
    newest = previous.exo_high_water if previous else None
    # Exchange Online is read from now on while the directory is read and merged (writeback.read_ahead); its pages
    # are merged after the directory's, as pairing needs.
    with contextlib.ExitStack() as readers:
        exo_pages = readers.enter_context(exchange_spool(run, exchange, exchange_parameters(previous),
                                                         page_size=PAGE_SIZE))  # fmt: skip
        ad_pages: Iterable[list[dict[str, Any]]] = _pages(ad.entries, PAGE_SIZE)
        if ad.full:  # an incremental read writes OU counts on the run as it goes: it stays in this thread
            ad_pages = readers.enter_context(ReadAhead(ad_pages, depth=2, name=f"inventory-{run.pk}-directory"))
        newest = directory_pass(run, ad_pages, exo_pages, newest, tick=heartbeat(run))
        graph_pass(run, graph)
        newest = exchange_pass(run, exo_pages, newest)
        logger.info("inventory %s: the Exchange spool took %.1f MB on disk", run.pk, exo_pages.size() / 1e6)
    return settle(run, mark=ad.mark, newest=newest)


def graph_pass(run: InventoryRun, graph: GraphClient | None) -> None:
    """Pair through Microsoft Graph the AD users msDS-ExternalDirectoryObjectID left unpaired, when there are any."""
    if graph is None or not _needs_graph():
        return
    _phase(run, "entra")
    try:
        for page in graph.iter_user_pages():
            _bump(run, graph_read=len(page))
            import_graph_page(run, page)
    except (GraphError, ExoAuthError) as exc:
        raise InventoryError(
            f"Pairing through Microsoft Graph failed: {exc} Some AD users carry no "
            "msDS-ExternalDirectoryObjectID; grant the application Graph's User.Read.All, or set "
            "INVENTORY_GRAPH_PAIRING=false to pair them by name only (weak pairs)."
        ) from exc


def exchange_pass(run: InventoryRun, pages: Iterable[list[dict]], newest: dt.datetime | None) -> dt.datetime | None:
    """Merge the Exchange objects the directory pass did not take, in the order read."""
    _phase(run, "exchange")
    for page in pages:
        page_newest = import_exo_page(run, page)
        if page_newest and (newest is None or page_newest > newest):
            newest = page_newest
    return newest


def settle(run: InventoryRun, *, mark: str | None, newest: dt.datetime | None) -> InventoryRun:
    """A full run marks what it did not see as gone from that side; every run records its totals and marks."""
    _phase(run, "settling")
    with transaction.atomic():
        if run.mode == InventoryRun.Mode.FULL:
            for field, seen_run in (("in_ad", "ad_seen_run"), ("in_exo", "exo_seen_run")):
                gone = list(
                    Mailbox.objects.filter(**{field: True}).exclude(**{seen_run: run.pk}).values_list("pk", flat=True)
                )
                for page in _pages(gone, PAGE_SIZE):
                    Mailbox.objects.filter(pk__in=page).update(
                        **{field: False}, drift=[], has_drift=False, version=F("version") + 1
                    )
                    side = "ad" if field == "in_ad" else "exo"
                    _record_changes(run, side, [], {pk: {field: [True, False]} for pk in page})
        InventoryRun.objects.filter(pk=run.pk).update(
            exo_only=Mailbox.objects.filter(in_exo=True, in_ad=False).count(),
            ad_only=Mailbox.objects.filter(in_ad=True, in_exo=False).count(),
            drifted=Mailbox.objects.filter(has_drift=True).count(),
            pairings=dict(
                Mailbox.objects.filter(in_ad=True, in_exo=True)
                .exclude(pairing="")
                .values_list("pairing")
                .annotate(n=Count("pk"))
                .order_by()
            ),
            ad_high_water=mark or "",
            exo_high_water=newest,
        )
    return run


# -- the request -----------------------------------------------------------------------------------------------


def inventory_run_request(*, actor, mode: str = InventoryRun.Mode.FULL, enqueue: bool = True) -> InventoryRun:
    """Queue an import (one at a time). ``actor`` None is the command line, which runs it itself."""
    if actor is not None and not may(actor, Action.PORTAL_CONFIGURE):
        raise InventoryError("Only an administrator can start an inventory import.")
    with transaction.atomic():
        running = InventoryRun.objects.select_for_update().filter(state__in=InventoryRun.OPEN_STATES).first()
        if running is not None:
            raise InventoryError(f"Import #{running.pk} is already {running.get_state_display().lower()}.")
        run = InventoryRun.objects.create(mode=mode, requested_by=actor)
        audit_record(actor=actor, action="writeback.inventory.requested", obj=run, after={"mode": run.mode})
        if enqueue:
            transaction.on_commit(partial(inventory_enqueue, run.pk))
    return run


def inventory_enqueue(run_id: int) -> None:
    """Queue a queued import's job (after the commit) and note its id on the run."""
    job_id = enqueue(INVENTORY_RUN_JOB, run_id, job_timeout=INVENTORY_JOB_TIMEOUT)
    if job_id is not None:  # None: Redis was unreachable; the run stays queued and the sweep queues it later
        InventoryRun.objects.filter(pk=run_id).update(job_id=job_id)


# The job's steps moved to writeback.jobs.inventory (the job lifecycle); these names stay importable from here for
# one release, since queued jobs in Redis name writeback.inventory.inventory_run_job.
_MOVED = {"claim", "execute", "inventory_run_job"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from writeback.jobs import inventory as jobs_inventory

        return getattr(jobs_inventory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
