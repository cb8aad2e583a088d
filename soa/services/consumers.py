"""The registry of on-premises applications that read Exchange attributes from AD (administrators keep it).

Pre-flight reads it to warn, before authority moves to the cloud, about attributes those applications would see
go stale because this installation does not write them back (soa.preflight.stale_consumer_attributes).
"""

import re
from collections.abc import Iterable

from django.db import transaction

from portal.audit import audit_record
from portal.roles import Action
from soa.attributes import BY_AD
from soa.models import ConsumerApplication
from soa.services import SoaError, require_action

# An LDAP attribute description's name (RFC 4512 keystring), as AD spells its attributes.
_LDAP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")


def _clean_attributes(attributes: Iterable[str]) -> list[str]:
    cleaned: dict[str, str] = {}
    bad = []
    for raw in attributes:
        name = str(raw).strip()
        if not name:
            continue
        if not _LDAP_NAME.match(name):
            bad.append(name)
            continue
        known = BY_AD.get(name.lower())
        cleaned.setdefault(name.lower(), known.ad if known else name)  # AD's own spelling when the portal maps it
    if bad:
        raise SoaError(f"Not LDAP attribute names: {', '.join(repr(name) for name in bad)}.")
    if not cleaned:
        raise SoaError("List at least one AD attribute the application reads (for example extensionAttribute1).")
    return sorted(cleaned.values(), key=str.lower)


@transaction.atomic
def consumer_application_register(
    *, actor, name: str, attributes: Iterable[str], notes: str = ""
) -> ConsumerApplication:
    """Register an application and the AD attributes it reads, or replace what is known of it (same name)."""
    require_action(actor, Action.PORTAL_CONFIGURE)
    name = " ".join((name or "").split())
    if not name:
        raise SoaError("Give the application's name.")
    if len(name) > ConsumerApplication._meta.get_field("name").max_length:
        raise SoaError("The application's name is too long (200 characters at most).")
    cleaned = _clean_attributes(attributes)
    application = ConsumerApplication.objects.select_for_update().filter(name__iexact=name).first()
    before = application.audit_snapshot() if application else None
    if application is None:
        application = ConsumerApplication(name=name, created_by=actor)
    application.name, application.attributes, application.notes = name, cleaned, (notes or "").strip()
    application.save()
    audit_record(
        actor=actor, action="soa.consumer_application.registered", obj=application, before=before,
        after=application.audit_snapshot(),
    )  # fmt: skip
    return application


@transaction.atomic
def consumer_application_remove(*, actor, application_id: int, reason: str = "") -> None:
    """Take an application out of the registry (it no longer reads AD, or was registered by mistake)."""
    require_action(actor, Action.PORTAL_CONFIGURE)
    application = ConsumerApplication.objects.select_for_update().filter(pk=application_id).first()
    if application is None:
        raise SoaError(f"There is no registered application #{application_id}.")
    before = application.audit_snapshot()
    audit_record(
        actor=actor, action="soa.consumer_application.removed", obj=application, before=before, after=None,
        reason=reason,
    )  # fmt: skip
    application.delete()
