"""The tenant default (exchange-facts §1.9) as the portal sees it: its current value, read from Exchange Online, and
the conditions under which it must not be switched on, counted from the inventory and the writeback's rows.

The value is Get-OrganizationConfig's EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY (a name only a third party reports,
§1.4, so a setting), read through the Exchange client and reused for TENANT_DEFAULT_CACHE_SECONDS; a failed read is
reused for a few seconds only, so a page shows the error without making every view wait for Exchange's retries.

The blockers are tenant-wide, whoever looks, because the switch is:

- mailboxes whose Exchange attributes AD still masters (synced and not cloud-managed, or not moved to Exchange Online
  yet): Microsoft says to switch it on only once every on-premises mailbox has moved;
- recipients with Exchange attributes created in AD within TENANT_DEFAULT_RECENT_CREATION_DAYS (the inventory's
  ``ad_when_created``): Microsoft says not to while mailboxes, mail users or remote mailboxes are still created there;
- open drift findings, and an unhealthy writeback (failed tasks no later one made good, or tasks stalled: running
  without a heartbeat, or queued and not picked up, for longer than the writeback's own staleness).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from soa.choices import Authority
from soa.models import Mailbox
from soa.services.tenant_default import Blocker
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient, ExchangeOnlineError
from writeback.jobs.writeback import STALE_AFTER
from writeback.models import DriftFinding, WritebackTask

# Set-OrganizationConfig's switch (documented, exchange-facts §1.4 [MS S5]); the read-back property is the setting.
ENABLE_PARAMETER = "ExchangeAttributesCloudManagedByDefault"
CACHE_KEY = "soa:tenant-default:read"
ERROR_CACHE_SECONDS = 10
# A writeback task running without a heartbeat, or queued without being picked up, this long has stalled: the
# writeback sweep's own limit.
STALLED_AFTER = STALE_AFTER
EVIDENCE_ROWS = 20
# A page waits this long for Exchange at most, not the job's minutes of retries: an unreachable Exchange is shown.
PAGE_PATIENCE = {"max_attempts": 2, "connect_timeout": 5.0, "timeout": 20.0, "backoff_max": 2.0}


@dataclass(frozen=True)
class DefaultRead:
    """What Get-OrganizationConfig said (or why it could not be read), and when."""

    read_at: dt.datetime
    property_name: str
    enabled: bool | None = None  # None: not read, or the property is missing
    tenant_name: str = ""
    error: str = ""
    present: bool = True  # the property was in the answer


def _read(client: ExchangeOnlineClient | None, property_name: str) -> DefaultRead:
    now = timezone.now()
    try:
        if client is None:
            config = ExchangeConfig.from_settings()
            if not config.tenant or not config.client_id:
                unset = "Exchange Online is not configured (EXO_TENANT, ENTRA_CLIENT_ID)."
                return DefaultRead(read_at=now, property_name=property_name, error=unset)
            client = ExchangeOnlineClient(replace(config, **PAGE_PATIENCE))
        organization = client.get_organization_config()
    except (ExchangeOnlineError, ValueError, OSError) as error:
        return DefaultRead(read_at=now, property_name=property_name, error=str(error) or type(error).__name__)
    return from_organization(organization, property_name=property_name, read_at=now)


def from_organization(organization: dict[str, Any], *, property_name: str, read_at: dt.datetime) -> DefaultRead:
    """The default as one Get-OrganizationConfig object shows it."""
    value = organization.get(property_name)
    name = str(organization.get("Name") or organization.get("Identity") or "")
    return DefaultRead(
        read_at=read_at, property_name=property_name, enabled=value if isinstance(value, bool) else None,
        tenant_name=name, present=property_name in organization,
    )  # fmt: skip


def tenant_default_read(*, fresh: bool = False, client: ExchangeOnlineClient | None = None) -> DefaultRead:
    """The tenant default, from the cache while the last read is younger than TENANT_DEFAULT_CACHE_SECONDS."""
    property_name = settings.EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY
    key = f"{CACHE_KEY}:{property_name}"
    if not fresh:
        cached = cache.get(key)
        if isinstance(cached, DefaultRead):
            return cached
    read = _read(client, property_name)
    seconds = min(ERROR_CACHE_SECONDS, settings.TENANT_DEFAULT_CACHE_SECONDS) if read.error else (
        settings.TENANT_DEFAULT_CACHE_SECONDS)  # fmt: skip
    if seconds > 0:
        cache.set(key, read, seconds)
    return read


def tenant_default_forget() -> None:
    """Drop the cached read (after the job changed it)."""
    cache.delete(f"{CACHE_KEY}:{settings.EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY}")


# -- the blockers ----------------------------------------------------------------------------------------------------


def ad_managed() -> QuerySet[Mailbox]:
    return Mailbox.objects.filter(authority=Authority.ON_PREM)


def recent_creations(now: dt.datetime | None = None) -> QuerySet[Mailbox]:
    days = int(settings.TENANT_DEFAULT_RECENT_CREATION_DAYS)
    if days <= 0:
        return Mailbox.objects.none()
    since = (now or timezone.now()) - dt.timedelta(days=days)
    return Mailbox.objects.filter(in_ad=True, ad_when_created__gte=since).order_by("-ad_when_created", "id")


def open_findings() -> QuerySet[DriftFinding]:
    return DriftFinding.objects.filter(resolved_at__isnull=True)


def unhealthy_writebacks(now: dt.datetime | None = None) -> QuerySet[WritebackTask]:
    """Failed tasks no later DONE task of the same mailbox made good, and stalled ones."""
    cutoff = (now or timezone.now()) - STALLED_AFTER
    State = WritebackTask.State
    made_good = Exists(
        WritebackTask.objects.filter(mailbox=OuterRef("mailbox"), state=State.DONE, id__gt=OuterRef("id"))
    )
    failed = Q(state=State.FAILED) & ~Q(made_good)
    stalled = Q(state=State.RUNNING, heartbeat_at__lt=cutoff) | (
        Q(state=State.QUEUED, queued_at__lt=cutoff) & ~Q(retry_at__gte=cutoff)
    )
    return WritebackTask.objects.filter(failed | stalled).select_related("mailbox").order_by("-id")


def tenant_default_blockers(now: dt.datetime | None = None) -> list[Blocker]:
    """Every blocker with its count now (a count of 0: it does not hold) and the page that shows what was counted."""
    now = now or timezone.now()
    days = int(settings.TENANT_DEFAULT_RECENT_CREATION_DAYS)
    page = reverse("tenant_default")
    return [
        Blocker(
            "ad_managed", "Mailboxes whose Exchange attributes AD still masters", ad_managed().count(),
            reverse("mailbox_list") + "?authority=ON_PREM",
            "Synced mailboxes not yet cloud-managed, and mailboxes not yet moved to Exchange Online.",
        ),
        Blocker(
            "recent_creation", f"Recipients created in AD in the last {days} days", recent_creations(now).count(),
            page + "#recent-creations",
            "Recipients with Exchange attributes whose AD object (createTimestamp) is that recent, from the last "
            "inventory." if days > 0 else "Not checked: TENANT_DEFAULT_RECENT_CREATION_DAYS is 0.",
        ),
        Blocker("open_drift", "Open drift findings", open_findings().count(), reverse("drift")),
        Blocker(
            "writeback_unhealthy", "Writebacks failed or stalled", unhealthy_writebacks(now).count(),
            page + "#unhealthy-writebacks",
            f"Failed and not made good by a later writeback, or running or queued for more than "
            f"{int(STALLED_AFTER.total_seconds() // 60)} minutes without progress.",
        ),
    ]  # fmt: skip
