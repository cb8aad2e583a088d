"""Which Exchange Online object is which AD user: the keys the inventory pairs on, and moving one side between rows.

Microsoft's sync pairs an AD user with its Entra user through the sourceAnchor, and Exchange shows the Entra user's
object id as ``ExternalDirectoryObjectId`` (exchange-facts §8). Get-Mailbox's ``ImmutableId`` is Exchange's own
``msExchGenericImmutableId``, usually empty on a synced tenant (§3), so it is never used. The inventory pairs, in
this order, and records which way (``Mailbox.pairing``):

1. AD's ``msDS-ExternalDirectoryObjectID`` (``User_<object id>``, written back by Entra Connect's Exchange hybrid
   writeback) names the Exchange object directly;
2. Graph's ``onPremisesImmutableId`` (the sourceAnchor) leads from the AD user to the Entra ``id``;
3. failing both, the same UPN or primary SMTP address on both sides: a weak pair that pre-flight warns about.

An identifier outranks a name match: when a stronger pair appears for a row that was paired weakly, or a
one-sided row turns out to be the other half of another, the Exchange side moves between rows here.
"""

import base64
import logging
import uuid
from typing import Any

from django.conf import settings

from soa.choices import Pairing
from soa.models import Mailbox, MailboxAddress, WaveMember
from soa.name_words import name_words_replace

logger = logging.getLogger(__name__)

CONSISTENCY_GUID = "mS-DS-ConsistencyGuid"
DIRECTORY_ID_ATTRIBUTE = "msDS-ExternalDirectoryObjectID"
DIRECTORY_ID_PREFIX = "user_"
# Pairing strength, strongest first: a weaker method never replaces a stronger one.
RANK = {Pairing.DIRECTORY_ID: 3, Pairing.GRAPH: 2, Pairing.UPN: 1, Pairing.SMTP: 1, Pairing.NONE: 0}
EXO_FIELDS = (
    "exo_object_id", "exo_values", "authority", "primary_smtp", "recipient_type_details", "exo_when_changed",
    "in_exo", "exo_read_at", "exo_seen_run",
)  # fmt: skip


def anchor_attribute() -> str:
    """The AD attribute Entra Connect uses as sourceAnchor (ENTRA_SOURCE_ANCHOR; Connect's default since 1.1.524)."""
    return getattr(settings, "ENTRA_SOURCE_ANCHOR", CONSISTENCY_GUID) or CONSISTENCY_GUID


def source_anchor(attributes: dict[str, Any]) -> str:
    """Graph's onPremisesImmutableId for an AD entry: base64 of a binary anchor, a string anchor as it is.

    Connect fills an empty mS-DS-ConsistencyGuid from objectGUID, so for that attribute objectGUID stands in
    (exchange-facts §3, §8).
    """
    name = anchor_attribute()
    value = attributes.get(name)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if not value and name == CONSISTENCY_GUID:
        value = attributes.get("objectGUID")
    if not value:
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def directory_object_id(attributes: dict[str, Any]) -> uuid.UUID | None:
    """The Entra object id from msDS-ExternalDirectoryObjectID (``User_<id>``); None when absent or malformed."""
    value = attributes.get(DIRECTORY_ID_ATTRIBUTE)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if not value:
        return None
    text = str(value)
    if not text.lower().startswith(DIRECTORY_ID_PREFIX):
        return None  # Connect writes users as User_<id>; anything else is not ours to interpret
    try:
        return uuid.UUID(text[len(DIRECTORY_ID_PREFIX) :])
    except ValueError:
        logger.warning("Ignoring a malformed %s value %r", DIRECTORY_ID_ATTRIBUTE, text)
        return None


def outranks(new: str, current: str) -> bool:
    return RANK[Pairing(new)] > RANK[Pairing(current or Pairing.NONE)]


def repair(mailbox: Mailbox, *, object_id: uuid.UUID, partner: Mailbox | None, pairing: str) -> dict[str, Any]:
    """Pair ``mailbox`` (an AD row) with Exchange object ``object_id`` by ``pairing``. Call in a transaction.

    A row paired with another object gives that side up to a new Exchange-only row; ``partner``, the
    Exchange-only row holding ``object_id`` if any, is merged in. The caller recomputes drift and saves.
    Returns what was done, for the audit event.
    """
    done: dict[str, Any] = {"mailbox": mailbox.pk, "upn": mailbox.upn, "exo_object_id": str(object_id)}
    if mailbox.exo_object_id is not None:
        done |= {"was_paired_with": str(mailbox.exo_object_id), "was_paired_by": mailbox.pairing}
        done["split_off_row"] = give_up_exo_side(mailbox).pk
    if partner is not None:
        done |= take_exo_side(into=mailbox, source=partner)
    else:
        mailbox.exo_object_id = object_id
    mailbox.pairing = pairing
    mailbox.version += 1
    return done


def take_exo_side(*, into: Mailbox, source: Mailbox) -> dict[str, Any]:
    """Move ``source``'s Exchange side onto ``into`` and delete ``source``, an Exchange-only row. Call in a transaction.

    Its addresses and wave memberships move with it. A wave that holds both rows keeps ``into``'s membership
    and drops the other (both now stand for one mailbox). Returns what was done, for the audit event.
    """
    for name in EXO_FIELDS:
        setattr(into, name, getattr(source, name))
    MailboxAddress.objects.filter(mailbox=into).delete()
    MailboxAddress.objects.filter(mailbox=source).update(mailbox=into)
    shared_waves = WaveMember.objects.filter(mailbox=into).values("wave_id")
    dropped = list(WaveMember.objects.filter(mailbox=source, wave_id__in=shared_waves).values_list("pk", "wave_id"))
    WaveMember.objects.filter(pk__in=[pk for pk, _ in dropped]).delete()
    moved = WaveMember.objects.filter(mailbox=source).update(mailbox=into)
    source_id = source.pk
    Mailbox.objects.filter(pk=source_id).update(exo_object_id=None)  # free the unique key before into takes it
    source.delete()
    return {"merged_row": source_id, "memberships_moved": moved, "duplicate_memberships_dropped": len(dropped)}


def give_up_exo_side(mailbox: Mailbox) -> Mailbox:
    """Split a row's Exchange side off into a new Exchange-only row (its pair was wrong). Call in a transaction."""
    orphan = Mailbox(
        in_ad=False, upn=mailbox.upn, display_name=mailbox.display_name, search_name=mailbox.search_name,
        **{name: getattr(mailbox, name) for name in EXO_FIELDS},
    )  # fmt: skip
    mailbox.exo_object_id = None
    mailbox.save(update_fields=["exo_object_id"])
    orphan.save()
    name_words_replace([orphan])
    MailboxAddress.objects.filter(mailbox=mailbox).update(mailbox=orphan)
    for name in EXO_FIELDS:
        if name != "exo_object_id":
            setattr(mailbox, name, Mailbox._meta.get_field(name).get_default())
    return orphan
