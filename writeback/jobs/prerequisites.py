"""The readiness page's prerequisite checks that call out (soa.prerequisites judges and stores what they measure).

- ``connect_sync``: Graph ``GET /v1.0/organization`` through the app-only client (writeback.exchange.GraphClient).
- ``exchange_role``: on the canary an administrator picked, Get-Mailbox, then Set-Mailbox -IsExchangeCloudManaged
  with the value just read, then Get-Mailbox again (ExchangeOnlineClient.set_mailbox with verify). Exchange's 401/403
  is "not met" with its message as the evidence; anything else that stops the check is "unknown". Audited as carried
  out (``soa.prerequisites.canary_checked``).
- ``writeback``: the cloud-managed mailboxes whose Exchange side changed longest enough ago for Cloud Sync to have
  written it (PREREQUISITE_WRITEBACK_SETTLE_MINUTES), newest first, at most PREREQUISITE_WRITEBACK_SAMPLE, leaving out
  those whose latest change the portal wrote into AD itself (a done WritebackTask finished after it): their
  written-back attributes are read in AD now, with AD's change time (whenChanged; modifyTimestamp on OpenLDAP), and
  compared with the inventory's Exchange values by the drift rules.

``prerequisites_check_job`` runs on request (the page's buttons) and from the readiness snapshot's periodic job; the
periodic run repeats the canary's flip only every PREREQUISITE_ROLE_CHECK_HOURS.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from portal.audit import audit_record
from soa.attributes import EXCHANGE_ATTRIBUTES
from soa.choices import Authority
from soa.models import Mailbox, PrerequisiteCheck, PrerequisiteInput
from soa.prerequisites import Judgement, Status, judge_connect_sync, judge_writeback, latest_input, result_store
from soa.prerequisites import unreachable as unreachable_result
from soa.values import AD_ONLY, ad_values, same_value
from writeback.directory import DirectoryError, equality_filter
from writeback.directory.batch import GUIDS_PER_SEARCH
from writeback.directory.modify import normalise_entry
from writeback.exchange import ExchangeConfig, ExchangeOnlineError, ExoAuthError, GraphClient, GraphError
from writeback.jobs.clients import directory_client, exchange_client
from writeback.models import WritebackTask

logger = logging.getLogger(__name__)

# The attributes Microsoft's Cloud Sync writes back (exchange-facts §2.2), whatever this installation writes itself.
CLOUD_SYNC_ATTRIBUTES = tuple(a for a in EXCHANGE_ATTRIBUTES if a.microsoft_writeback and a.exo not in AD_ONLY)
# When an entry last changed: AD's whenChanged; OpenLDAP (the sandbox) refuses that name and keeps modifyTimestamp.
AD_CHANGE_TIME, OPENLDAP_CHANGE_TIME = "whenChanged", "modifyTimestamp"


def connect_sync_check(*, now: dt.datetime | None = None) -> PrerequisiteCheck:
    now = now or timezone.now()
    config = ExchangeConfig.from_settings()
    source = f"Microsoft Graph GET /v1.0/organization at {config.graph_base_url}"
    try:
        organization = GraphClient(config).organization()
    except (GraphError, ExchangeOnlineError) as error:
        return unreachable_result("connect_sync", source=source, error=str(error))
    return result_store("connect_sync", judge_connect_sync(organization, now=now), source=source, now=now)


def _role_judgement(identity: str) -> tuple[Judgement, str]:
    """Flip the canary to the value it has; (judgement, error) where error is set when the check could not run."""
    client = exchange_client()
    evidence: dict[str, Any] = {"canary": identity}
    try:
        before = _flag(client.get_mailbox(identity).get("IsExchangeCloudManaged"))
        evidence["before"] = before
        if before is None:  # writing a guess could flip the mailbox's authority: write nothing
            return Judgement(
                Status.UNKNOWN,
                "Get-Mailbox did not show the canary's IsExchangeCloudManaged, so nothing was written.",
                evidence,
            ), "IsExchangeCloudManaged missing from Get-Mailbox"
        result = client.set_mailbox(identity, verify=True, IsExchangeCloudManaged=before)
    except ExchangeOnlineError as error:
        # 401/403: the token or the app's role does not allow it (a cmdlet outside the app's role comes back as a
        # 403 whose body cannot be read, exchange-facts §4.4); a token Entra would not issue has no status.
        if error.status in (401, 403):
            evidence["exchange_error"] = error.message
            return Judgement(Status.NOT_MET, f"Exchange Online refused the app ({error.status}): {error.message}",
                             evidence), ""  # fmt: skip
        what = "No token for Exchange Online." if isinstance(error, ExoAuthError) else "The flip could not be made."
        return Judgement(Status.UNKNOWN, what, evidence), str(error)
    read_back = _flag((result.mailbox or {}).get("IsExchangeCloudManaged"))
    evidence.update(read_back=read_back, warnings=result.warnings, changed=result.changed)
    return Judgement(Status.MET, f"Set-Mailbox -IsExchangeCloudManaged ${str(before).lower()} on {identity} "
                     f"was accepted; read back: {read_back}.", evidence), ""  # fmt: skip


def _flag(value: Any) -> bool | None:
    """Exchange's Boolean as JSON gives it (true/false, or "True"/"False" as text), else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def exchange_role_check() -> PrerequisiteCheck | None:
    """The canary's no-op flip (None when no canary is recorded)."""
    canary = latest_input(PrerequisiteInput.Kind.CANARY)
    if canary is None or canary.mailbox is None:
        return None
    mailbox = canary.mailbox
    identity = mailbox.upn or mailbox.primary_smtp
    source = f"Exchange Online Get-Mailbox / Set-Mailbox on {identity} at {settings.EXO_BASE_URL}"
    judgement, error = _role_judgement(identity)
    with transaction.atomic():
        row = result_store("exchange_role", judgement, source=source, error=error)
        audit_record(
            actor=None,
            action="soa.prerequisites.canary_checked",
            obj=mailbox,
            after={
                "status": judgement.status,
                **judgement.evidence,
                "error": error,
                "requested_by": canary.recorded_by.get_username() if canary.recorded_by else None,
            },
        )
    return row


def _change_time(values: list[Any] | None) -> str:
    """GeneralizedTime (``20261130235959Z``, AD ``20261130235959.0Z``) as ISO 8601 UTC text, or ''."""
    for value in values or []:
        text = value.decode() if isinstance(value, bytes) else str(value)
        digits = text[:14]
        if len(digits) == 14 and digits.isdigit():
            when = dt.datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
            return when.isoformat()
    return ""


def _iso(when: dt.datetime | None) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat() if when else ""


def writeback_sample(now: dt.datetime) -> tuple[list[Mailbox], int]:
    """The mailboxes to read in AD, and how many were left out because the portal wrote their latest change."""
    settled = now - dt.timedelta(minutes=settings.PREREQUISITE_WRITEBACK_SETTLE_MINUTES)
    candidates = Mailbox.objects.filter(
        authority=Authority.CLOUD, in_ad=True, in_exo=True, ad_guid__isnull=False, exo_when_changed__lte=settled
    )
    portal_wrote = WritebackTask.objects.filter(
        mailbox=OuterRef("pk"), state=WritebackTask.State.DONE, finished_at__gte=OuterRef("exo_when_changed")
    )
    excluded = candidates.filter(Exists(portal_wrote)).count()
    chosen = candidates.exclude(Exists(portal_wrote)).order_by("-exo_when_changed", "-pk")
    return list(chosen[: settings.PREREQUISITE_WRITEBACK_SAMPLE]), excluded


def writeback_check(*, now: dt.datetime | None = None) -> PrerequisiteCheck:
    now = now or timezone.now()
    mailboxes, excluded = writeback_sample(now)
    try:
        client = directory_client()
        source = f"AD at {client.config.url}, compared with the inventory's Exchange Online values"
        is_ad = client.change_mark_name() == "highestCommittedUSN"
        change_time = AD_CHANGE_TIME if is_ad else OPENLDAP_CHANGE_TIME
        wanted = [*(a.ad for a in CLOUD_SYNC_ATTRIBUTES), change_time, "objectGUID"]
        entries: dict[Any, dict[str, Any]] = {}
        for start in range(0, len(mailboxes), GUIDS_PER_SEARCH):
            chunk = mailboxes[start : start + GUIDS_PER_SEARCH]
            search_filter = "(|" + "".join(equality_filter("objectGUID", m.ad_guid.bytes_le) for m in chunk) + ")"
            for entry in client.search(client.config.base_dn, search_filter, wanted, raw_only=True):
                raw = {name.lower(): values for name, values in entry["raw_attributes"].items()}
                guid = bytes((raw.get("objectguid") or [b""])[0])
                entries[guid] = raw
    except DirectoryError as error:
        return unreachable_result("writeback", source="AD (directory settings)", error=str(error))
    samples = []
    for mailbox in mailboxes:
        raw = entries.get(mailbox.ad_guid.bytes_le)
        if raw is None:
            continue  # gone from AD since the inventory: the inventory will notice
        ad = ad_values(normalise_entry(raw))
        changed = _change_time(raw.get(change_time.lower()))
        samples.append({
            "upn": mailbox.upn,
            "exo_when_changed": _iso(mailbox.exo_when_changed),
            "ad_when_changed": changed,
            "differing": [a.exo for a in CLOUD_SYNC_ATTRIBUTES
                          if a.exo in mailbox.exo_values and not same_value(a, mailbox.exo_values[a.exo], ad[a.exo])],
            # Changed in AD after the inventory read Exchange: the stored Exchange values may be the older ones.
            "newer_in_ad": bool(changed and mailbox.exo_read_at and changed > _iso(mailbox.exo_read_at)),
        })  # fmt: skip
    judgement = judge_writeback(
        samples, excluded=excluded, settle_minutes=settings.PREREQUISITE_WRITEBACK_SETTLE_MINUTES
    )
    return result_store("writeback", judgement, source=source, now=now)


def _role_due(now: dt.datetime) -> bool:
    hours = settings.PREREQUISITE_ROLE_CHECK_HOURS
    if hours <= 0:
        return False
    last = PrerequisiteCheck.objects.filter(key="exchange_role").values_list("checked_at", flat=True).first()
    return last is None or now - last >= dt.timedelta(hours=hours)


def prerequisites_run(*, role: bool = False, now: dt.datetime | None = None) -> dict[str, str]:
    """Run the checks; the canary's flip when ``role`` or when it is due. Returns each check's status."""
    now = now or timezone.now()
    done = {"connect_sync": connect_sync_check(now=now).status, "writeback": writeback_check(now=now).status}
    if role or _role_due(now):
        row = exchange_role_check()
        if row is not None:
            done["exchange_role"] = row.status
    return done


def prerequisites_check_job(role: bool = False) -> str:
    """RQ entrypoint (the page's buttons)."""
    done = prerequisites_run(role=role)
    return "prerequisites: " + ", ".join(f"{key} {status}" for key, status in done.items())
