"""The readiness page's prerequisites: what must hold on Microsoft's side before mailboxes move and the last Exchange
server goes, each checked from measured data rather than assumed (docs/readiness.md, "Prerequisites").

- ``connect_version``: Entra Connect Sync at or above ENTRA_CONNECT_MIN_VERSION (exchange-facts §1.3). No Microsoft
  API the portal can call reports the build: Microsoft's guidance reads it on the sync server
  (``Get-ADSyncGlobalSettings``), so an administrator records the version and where it was seen, and the check
  compares that record.
- ``connect_sync``: Graph's organization says the tenant is synced and was last synced within
  ENTRA_CONNECT_SYNC_MAX_AGE_HOURS (Connect's cycle is 30 minutes, §6).
- ``exchange_role``: the app may change IsExchangeCloudManaged (§1.5): a no-op flip of a canary mailbox an
  administrator picks, read back; a 401/403 is not met.
- ``writeback``: Cloud Sync's EXO-to-AD writeback (§2) has written what Exchange Online holds into AD, judged from a
  sample of cloud-managed mailboxes read in AD.

The checks that call out run in the background (writeback.jobs.prerequisites) and leave their result in
``PrerequisiteCheck``; this module judges measurements (pure functions the job calls), stores results, and holds the
administrators' requests (each audited, in one transaction with what it changes). soa never imports writeback, so
the jobs are queued by dotted name.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.roles import Action, may
from soa.jobs import QUEUE, REDIS_UNREACHABLE, job_pending
from soa.models import Mailbox, PrerequisiteCheck, PrerequisiteInput

logger = logging.getLogger(__name__)
Status = PrerequisiteCheck.Status
CHECK_JOB = "writeback.jobs.prerequisites.prerequisites_check_job"
# One requested run at a time: while it waits or runs, asking again queues nothing more (a double click, a second
# administrator); the run reads the canary when it starts, so a canary picked meanwhile is still checked.
CHECK_JOB_ID = "prerequisites-check"
VERSION_PATTERN = re.compile(r"^\d{1,5}(\.\d{1,5}){1,3}$")


class PrerequisiteError(Exception):
    """A request refused; the message says why."""


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    reference: str
    fix: str


CHECKS: tuple[Check, ...] = (
    Check(
        "connect_version", "Entra Connect Sync is at the baseline build or later", "exchange-facts §1.3",
        "Upgrade Entra Connect Sync on the sync server to the baseline build or later, then record the version here. "
        "Read it on that server with (Get-ADSyncGlobalSettings).Parameters"
        "['Microsoft.Synchronize.ServerConfigurationVersion']. Older builds keep pushing on-premises values into "
        "mailboxes whose authority moved to the cloud.",
    ),
    Check(
        "connect_sync", "Entra Connect has synced recently", "exchange-facts §6, §8; Graph organization",
        "On the Entra Connect server, Get-ADSyncScheduler should show the scheduler enabled and a recent cycle; run a "
        "delta cycle (Start-ADSyncSyncCycle -PolicyType Delta) and look at Synchronization Service Manager for "
        "errors. If the portal could not read Graph, grant its app registration Graph's Organization.Read.All "
        "application permission with admin consent.",
    ),
    Check(
        "exchange_role", "The portal's app may change IsExchangeCloudManaged", "exchange-facts §1.5, §4.1",
        "Assign the portal's app registration the Exchange Administrator role in Entra ID (besides the "
        "Exchange.ManageAsApp permission); narrower roles are not documented to allow the change. Then check again.",
    ),
    Check(
        "writeback", "Cloud Sync writes Exchange attributes back to AD", "exchange-facts §2",
        "In the Entra admin center create an \u201cEXO to AD attribute sync\u201d Cloud Sync configuration for the "
        "domain and start provisioning (agent 1.1.1107.0 or later, Exchange schema in AD). Look at its provisioning "
        "logs for the mailboxes listed; a mailbox new to its scope is written only by an initial cycle or by "
        "Provision on demand.",
    ),
)  # fmt: skip
BY_KEY = {check.key: check for check in CHECKS}


# -- judging measurements ---------------------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...] | None:
    """``2.5.76.0`` as (2, 5, 76, 0), or None when it is not a dotted version number."""
    text = (text or "").strip()
    if not VERSION_PATTERN.match(text):
        return None
    return tuple(int(part) for part in text.split("."))


def version_at_least(version: str, baseline: str) -> bool:
    """Compare dotted versions numerically, missing trailing parts counting as 0 (2.5.76 equals 2.5.76.0)."""
    have, want = parse_version(version), parse_version(baseline)
    if have is None or want is None:
        raise ValueError(f"not a version: {version if have is None else baseline!r}")
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) >= want + (0,) * (width - len(want))


@dataclass
class Judgement:
    status: str
    measured: str
    evidence: dict[str, Any]


def parse_graph_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def judge_connect_sync(organization: dict[str, Any], *, now: dt.datetime) -> Judgement:
    """Graph's organization object (onPremisesSyncEnabled, onPremisesLastSyncDateTime) against the allowed age."""
    limit = dt.timedelta(hours=settings.ENTRA_CONNECT_SYNC_MAX_AGE_HOURS)
    enabled = organization.get("onPremisesSyncEnabled")
    raw = organization.get("onPremisesLastSyncDateTime")
    evidence = {"onPremisesSyncEnabled": enabled, "onPremisesLastSyncDateTime": raw,
                "organization": organization.get("displayName") or organization.get("id") or "",
                "max_age_hours": settings.ENTRA_CONNECT_SYNC_MAX_AGE_HOURS}  # fmt: skip
    if not organization:
        return Judgement(Status.UNKNOWN, "Graph listed no organization for the tenant.", evidence)
    if enabled is not True:
        return Judgement(Status.NOT_MET, f"Directory synchronisation is not on for the tenant "
                         f"(onPremisesSyncEnabled is {'null' if enabled is None else str(enabled).lower()}).",
                         evidence)  # fmt: skip
    last = parse_graph_time(raw)
    if last is None:
        return Judgement(Status.NOT_MET, "Graph shows no last sync time: the tenant has not been synced.", evidence)
    age = now - last
    minutes = max(int(age.total_seconds() // 60), 0)
    said = f"Last synced {last:%Y-%m-%d %H:%M} UTC, {minutes // 60} h {minutes % 60} min before the check"
    if age > limit:
        return Judgement(Status.NOT_MET, f"{said}: older than the {limit.total_seconds() / 3600:g} h allowed.",
                         evidence)  # fmt: skip
    return Judgement(Status.MET, f"{said} (at most {limit.total_seconds() / 3600:g} h allowed).", evidence)


def judge_writeback(samples: list[dict[str, Any]], *, excluded: int, settle_minutes: int) -> Judgement:
    """Each sample is one cloud-managed mailbox read in AD: ``upn``, ``exo_when_changed`` and ``ad_when_changed``
    (ISO text), ``differing`` (written-back attributes AD holds otherwise than the inventory's Exchange values),
    ``newer_in_ad`` (AD changed after the inventory read Exchange: not judged)."""
    judged = [s for s in samples if not s["newer_in_ad"]]
    differing = [s for s in judged if s["differing"]]
    written = [s for s in judged if not s["differing"] and s["ad_when_changed"] and s["exo_when_changed"]
               and s["ad_when_changed"] >= s["exo_when_changed"]]  # fmt: skip
    newest = max(written, key=lambda s: s["ad_when_changed"], default=None)
    evidence = {
        "read": len(samples), "judged": len(judged), "differing": len(differing), "written_after": len(written),
        "not_judged_newer_in_ad": len(samples) - len(judged), "excluded_portal_writes": excluded,
        "settle_minutes": settle_minutes,
        "examples": [{"upn": s["upn"], "attributes": s["differing"]} for s in differing[:5]],
        "newest_write": {"upn": newest["upn"], "ad_when_changed": newest["ad_when_changed"]} if newest else None,
    }  # fmt: skip
    if not judged:
        return Judgement(Status.UNKNOWN, f"No cloud-managed mailbox changed in Exchange Online more than "
                         f"{settle_minutes} minutes before the check could be compared with AD.", evidence)  # fmt: skip
    if differing:
        names = ", ".join(f"{s['upn']} ({', '.join(s['differing'])})" for s in differing[:3])
        return Judgement(Status.NOT_MET, f"{len(differing)} of {len(judged)} cloud-managed mailboxes read in AD hold "
                         f"other values than Exchange Online for attributes Cloud Sync writes back, e.g. {names}.",
                         evidence)  # fmt: skip
    if newest is None:
        return Judgement(Status.UNKNOWN, f"AD agrees with Exchange Online for all {len(judged)} mailboxes read, but "
                         "none was changed in AD after its last change in Exchange Online: nothing shows that "
                         "Cloud Sync has written anything.", evidence)  # fmt: skip
    return Judgement(Status.MET, f"AD agrees with Exchange Online for all {len(judged)} mailboxes read; the newest "
                     f"write seen in AD after a cloud change: {newest['ad_when_changed'][:16].replace('T', ' ')} UTC "
                     f"({newest['upn']}).", evidence)  # fmt: skip


def result_store(key: str, judgement: Judgement, *, source: str, error: str = "", now: dt.datetime | None = None):
    """Keep ``judgement`` as the check's latest result."""
    return PrerequisiteCheck.objects.update_or_create(key=key, defaults={
        "status": judgement.status, "measured": judgement.measured, "evidence": judgement.evidence,
        "source": source, "error": error, "checked_at": now or timezone.now(),
    })[0]  # fmt: skip


def unreachable(key: str, *, source: str, error: str, evidence: dict[str, Any] | None = None):
    """The source gave no answer: the check is unknown, and says why."""
    return result_store(key, Judgement(Status.UNKNOWN, "The source could not be read.", evidence or {}),
                        source=source, error=error)  # fmt: skip


# -- what administrators record ---------------------------------------------------------------------------------------


def latest_input(kind: str) -> PrerequisiteInput | None:
    return PrerequisiteInput.objects.filter(kind=kind).select_related("mailbox", "recorded_by").first()


def connect_version_judgement() -> tuple[Judgement, PrerequisiteInput | None]:
    """The recorded Entra Connect version against the baseline (nothing to call: judged when the page is drawn)."""
    baseline = settings.ENTRA_CONNECT_MIN_VERSION
    record = latest_input(PrerequisiteInput.Kind.CONNECT_VERSION)
    if record is None:
        return Judgement(Status.UNKNOWN, f"No version recorded yet; the baseline is {baseline}.", {}), None
    evidence = {"version": record.value, "baseline": baseline, "seen_where": record.seen_where}
    if version_at_least(record.value, baseline):
        return Judgement(
            Status.MET, f"Version {record.value} is at or above the baseline {baseline}.", evidence
        ), record
    return Judgement(Status.NOT_MET, f"Version {record.value} is below the baseline {baseline}.", evidence), record


def _require_admin(actor) -> None:
    if not may(actor, Action.PORTAL_CONFIGURE):
        raise PrerequisiteError("Only an administrator may record prerequisites or run their checks.")


def connect_version_record(*, actor, version: str, seen_where: str) -> PrerequisiteInput:
    """Record the Entra Connect version an administrator read, and where (audited)."""
    _require_admin(actor)
    version, seen_where = version.strip(), seen_where.strip()
    if parse_version(version) is None:
        raise PrerequisiteError(f"{version!r} is not a version number such as 2.5.76.0.")
    if not seen_where:
        raise PrerequisiteError("Say where the version was read (server and command, or admin center page).")
    current = latest_input(PrerequisiteInput.Kind.CONNECT_VERSION)
    if current is not None and (current.value, current.seen_where) == (version, seen_where):
        return current  # recorded already (a double click, or a second administrator saying the same)
    with transaction.atomic():
        record = PrerequisiteInput.objects.create(
            kind=PrerequisiteInput.Kind.CONNECT_VERSION, value=version, seen_where=seen_where, recorded_by=actor
        )
        audit_record(actor=actor, action="soa.prerequisites.connect_version_recorded", obj=record,
                     after={"version": version, "seen_where": seen_where,
                            "baseline": settings.ENTRA_CONNECT_MIN_VERSION})  # fmt: skip
    return record


def canary_find(identity: str) -> Mailbox:
    """The mailbox an administrator named (UPN or primary SMTP address) if it can serve as the canary."""
    identity = identity.strip()
    mailbox = (Mailbox.objects.filter(upn__iexact=identity).first()
               or Mailbox.objects.filter(primary_smtp__iexact=identity).first())  # fmt: skip
    if mailbox is None:
        raise PrerequisiteError(f"No mailbox in the inventory has the address {identity!r}.")
    if not mailbox.in_exo:
        raise PrerequisiteError(f"{identity} was not found in Exchange Online at the last inventory.")
    if not mailbox.is_dir_synced:
        raise PrerequisiteError(f"{identity} is not directory-synchronised: IsExchangeCloudManaged applies only to "
                                "synchronised mailboxes, so it cannot serve as the canary.")  # fmt: skip
    return mailbox


def check_pending() -> bool:
    """Whether a requested run of the checks is still queued or running."""
    try:
        return job_pending(CHECK_JOB_ID)
    except REDIS_UNREACHABLE:
        return False


def _enqueue_check() -> None:
    """Queue the requested run (after commit). Redis down: logged, and the next periodic run checks anyway."""
    import django_rq

    try:
        django_rq.get_queue(QUEUE).enqueue(CHECK_JOB, True, job_id=CHECK_JOB_ID, job_timeout=1800)
    except REDIS_UNREACHABLE as error:
        logger.error("Could not queue the prerequisite checks: Redis is unreachable (%s).", error)


def canary_check_request(*, actor, identity: str, confirmed: bool) -> PrerequisiteInput | None:
    """Make ``identity`` the canary and queue the checks: the job sets the canary's IsExchangeCloudManaged to the value
    it already has and reads it back (audited here as requested, by the job as carried out). Returns None when that
    canary's check is already on its way (nothing recorded or queued again)."""
    _require_admin(actor)
    if not confirmed:
        raise PrerequisiteError("Confirm that the portal may run the no-op Set-Mailbox on this mailbox.")
    mailbox = canary_find(identity)
    pending = check_pending()
    current = latest_input(PrerequisiteInput.Kind.CANARY)
    if pending and current is not None and current.mailbox_id == mailbox.pk:
        return None
    with transaction.atomic():
        record = PrerequisiteInput.objects.create(kind=PrerequisiteInput.Kind.CANARY, mailbox=mailbox,
                                                  recorded_by=actor)  # fmt: skip
        audit_record(actor=actor, action="soa.prerequisites.canary_requested", obj=mailbox,
                     after={"canary": mailbox.upn, "authority": mailbox.authority, "queued": not pending,
                            "operation": "Set-Mailbox -IsExchangeCloudManaged <current value>, then Get-Mailbox"},
                     )  # fmt: skip
        if not pending:  # a run on its way reads the new canary when it starts
            transaction.on_commit(_enqueue_check)
    return record


def check_request(*, actor) -> bool:
    """Queue every check now (the canary's flip too, when a canary is recorded); audited. False when a run is already
    on its way (nothing recorded or queued again)."""
    _require_admin(actor)
    if check_pending():
        return False
    canary = latest_input(PrerequisiteInput.Kind.CANARY)
    with transaction.atomic():
        audit_record(actor=actor, action="soa.prerequisites.check_requested", object_type="prerequisites",
                     after={"canary": canary.mailbox.upn if canary and canary.mailbox else None})  # fmt: skip
        transaction.on_commit(_enqueue_check)
    return True


# -- the page ---------------------------------------------------------------------------------------------------------


def prerequisite_rows() -> list[dict[str, Any]]:
    """One row per check for the page: its result (stored, or judged now for the recorded version) and fix."""
    stored = {row.key: row for row in PrerequisiteCheck.objects.all()}
    rows = []
    for check in CHECKS:
        row: dict[str, Any] = {"check": check, "status": Status.UNKNOWN, "measured": "Not checked yet.",
                               "when": None, "source": "", "error": "", "evidence": {}}  # fmt: skip
        if check.key == "connect_version":
            judgement, record = connect_version_judgement()
            row.update(status=judgement.status, measured=judgement.measured, evidence=judgement.evidence)
            if record is not None:
                who = record.recorded_by.get_username() if record.recorded_by else "someone"
                row.update(when=record.recorded_at, source=f"recorded by {who}: {record.seen_where}")
        elif (
            check.key == "exchange_role"
            and check.key not in stored
            and latest_input(PrerequisiteInput.Kind.CANARY) is None
        ):
            row["measured"] = "No canary mailbox picked yet: an administrator picks one to run this check."
        elif check.key in stored:
            result = stored[check.key]
            row.update(status=result.status, measured=result.measured, when=result.checked_at, source=result.source,
                       error=result.error, evidence=result.evidence)  # fmt: skip
        row["label"] = Status(row["status"]).label
        rows.append(row)
    return rows
