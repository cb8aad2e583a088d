"""The quiet period, checked again just before each flip to the cloud (the runner's half of the pre-flight rule).

Pre-flight applies the rule at submission from the inventory's copy of Exchange's WhenChangedUTC; a wave can
then wait days for its approvals, and an on-premises edit made meanwhile would race the sync (exchange-facts
§1.3, §6). Just before the flip the runner has a fresh Get-Mailbox; this module adds AD's own change time of the
user and applies the same rule (soa.preflight.quiet_period_end) to the later of the two.
"""

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.utils import timezone

from soa.models import Mailbox
from soa.preflight import quiet_period_end, quiet_period_refusal
from writeback.directory import DirectoryClient

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _exchange_time(value: object) -> dt.datetime | None:
    """WhenChangedUTC as a datetime (Exchange writes up to seven fractional digits; Python reads six)."""
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", str(value)).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _generalized_time(raw: bytes) -> dt.datetime:
    """An LDAP GeneralizedTime ("20261130105500.0Z" in AD, "20261130105500Z" in OpenLDAP) in UTC."""
    text = raw.decode("ascii").rstrip("Z").split(".")[0]
    return dt.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)


def ad_changed_at(directory: DirectoryClient, guid: uuid.UUID) -> dt.datetime | None:
    """When AD last changed the user with this objectGUID: whenChanged, and modifyTimestamp (AD constructs it from
    whenChanged; OpenLDAP has only this one), the later of the two. None when the user or both stamps are missing.

    A DC stamps whenChanged itself and does not replicate it, so two DCs can differ by the replication delay;
    the quiet period is hours, so that does not matter here."""
    wanted = ["whenChanged", "modifyTimestamp"] if directory.change_mark_name() == "highestCommittedUSN" else []
    entry = directory.find_by_guid(guid, wanted or ["modifyTimestamp"])
    if entry is None:
        return None
    stamps = [
        _generalized_time(value)
        for name, values in entry["raw_attributes"].items()
        if name.lower() in ("whenchanged", "modifytimestamp")
        for value in values
    ]
    return max(stamps, default=None)


def quiet_period_deferral(
    mailbox: Mailbox, current: Mapping[str, Any], directory: DirectoryClient | None
) -> tuple[dt.datetime, str] | None:
    """Before a flip to the cloud: (until when, why) for a mailbox changed (in Exchange or in AD) within the quiet
    period, so that the runner defers its member until the period ends; None when it may flip now.

    Deferred rather than failed: the rule asks only for time to pass (Microsoft's "sync cycle plus 24 hours"), the
    wave was approved with this member in it, and a failure would need an operator to retry what will be safe by
    itself. An edit that keeps coming back (a script still writing AD) keeps deferring it, and the member's
    message says until when, so the operator can see it and remove or cancel."""
    quiet = dt.timedelta(hours=float(settings.WAVE_QUIET_PERIOD_HOURS))
    ad_change = ad_changed_at(directory, mailbox.ad_guid) if directory and mailbox.ad_guid else None
    found = quiet_period_end([_exchange_time(current.get("WhenChangedUTC")), ad_change], quiet)
    if found is None or timezone.now() >= found[1]:
        return None
    last_change, ends = found
    where = "in AD" if ad_change == last_change else "in Exchange Online"
    return ends, (
        f"Deferred until {ends:%Y-%m-%d %H:%M} UTC: re-checked before the flip, the mailbox was changed {where}. "
        + quiet_period_refusal(last_change, ends, quiet)
    )
