"""The tenant's accepted domains, cached in the database for validation.

Get-AcceptedDomain is a call to Exchange Online, which only ``writeback`` makes; the list lives in a table
(soa.models.AcceptedDomain) rather than Django's cache because the portal's cache is per process (local memory):
what a worker stored there, the web process would never see. A job in ``writeback`` calls ``accepted_domains_replace``
with what Exchange answered; soa.selectors.accepted_domains_known reads it within ACCEPTED_DOMAINS_TTL_SECONDS.
"""

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction

from portal.audit import audit_record
from portal.models import User
from soa.models import AcceptedDomain
from soa.services import SoaError


@transaction.atomic
def accepted_domains_replace(
    *, domains: Iterable[Mapping[str, Any]], fetched_at: dt.datetime, actor: User | None = None
) -> list[AcceptedDomain]:
    """Replace the cached list with Get-AcceptedDomain's answer (objects with ``DomainName``, ``DomainType`` and
    ``Default``), stamped ``fetched_at``. A change of the set of domains is audited; a refresh that finds the same
    domains is not, since it changes nothing anyone decided."""
    rows: dict[str, AcceptedDomain] = {}
    for item in domains:
        name = str(item.get("DomainName") or "").strip().lower()
        if not name:
            continue
        rows[name] = AcceptedDomain(
            domain=name, domain_type=str(item.get("DomainType") or ""), is_default=bool(item.get("Default")),
            fetched_at=fetched_at,
        )  # fmt: skip
    if not rows:
        # Every tenant has at least its onmicrosoft.com domain: an empty answer is a fault, not a fact to cache.
        raise SoaError("Exchange Online listed no accepted domains; the cached list was kept.")
    before = sorted(AcceptedDomain.objects.values_list("domain", flat=True))
    AcceptedDomain.objects.all().delete()
    created = AcceptedDomain.objects.bulk_create(rows.values())
    after = sorted(rows)
    if before != after:
        audit_record(
            actor=actor, action="soa.accepted_domains.changed", object_type="soa.accepteddomain",
            object_repr="accepted domains", before={"domains": before}, after={"domains": after},
        )  # fmt: skip
    return created
