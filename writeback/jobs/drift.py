"""The drift scan on the job lifecycle: the written-back attributes of every cloud-managed mailbox compared between
Exchange Online and AD, each difference recorded as a DriftFinding.

The run row is writeback.models.DriftScan (RUN_TRANSITIONS: claimed, then DONE or FAILED; the sweep fails one whose
heartbeat stopped). A full scan reads both sides whole; an incremental one reads what changed since the last
completed scan, as the inventory's incremental import does and through the same functions: AD's users changed
since the scan's change mark and those below OUs changed since it (writeback.inventory_ad.ad_read, which reads all
of AD when the mark is from another server), Exchange's mailboxes with ``WhenChangedUTC`` after the last scan's newest
(one second of overlap). A mailbox read on one side only is read on the other by its id (one Get-Mailbox, or one
LDAP search), so both values compared are fresh. Values are compared by the drift rules (soa.values.same_value)
over the attributes this installation writes back (soa.attributes.writeback_attributes).

A difference with an open finding for the same mailbox and attribute is not recorded again; an open finding whose
attribute the two sides agree on again is closed (``AGREES``, one ``writeback.drift.cleared`` event per page). The new
findings of each page of mailboxes are recorded in one transaction with one audit event (``writeback.drift.found`` on
the scan, naming each finding). With DRIFT_AUTO_REPAIR on, each mailbox with new findings gets a writeback of its
cloud values (writeback.drift.drift_auto_repair). The scan only reads: it writes nothing into either directory, and
leaves the mailboxes' stored values to the inventory and the writeback.

The schedule is one self-renewing chain (writeback.jobs.chain), a tick every DRIFT_SCAN_INTERVAL_MINUTES (0: off),
started by ``manage.py drift_scan_schedule``; each tick requests the scan due (writeback.drift.scan_mode_due).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rq.job import Job

from portal.audit import audit_record
from soa.attributes import Kind, MappedAttribute, writeback_attributes
from soa.choices import Authority
from soa.models import Mailbox
from soa.values import AD_ONLY, ad_values, exo_values, is_moera, same_value
from writeback.directory import AD_USER_FILTER, DirectoryClient, DirectoryConfig, DirectoryError
from writeback.drift import DriftError, drift_auto_repair, drift_scan_enqueue, drift_scan_request
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient, ExchangeOnlineError
from writeback.inventory import EXO_OVERLAP, _pages, _when
from writeback.inventory_ad import ad_read
from writeback.jobs.chain import Chain
from writeback.jobs.lifecycle import (
    FAIL,
    REQUEUE_AFTER,
    RetryPolicy,
    Work,
    perform,
    run_claim,
    run_fail,
    run_finish,
    run_heartbeat,
    run_requeue_lost,
    run_sweep,
)
from writeback.models import DriftFinding, DriftScan

logger = logging.getLogger(__name__)

STARTED = "writeback.drift_scan.started"
COMPLETED = "writeback.drift_scan.completed"
FAILED = "writeback.drift_scan.failed"
SCAN_REQUEUED = "writeback.drift_scan.requeued"
FOUND = "writeback.drift.found"
CLEARED = "writeback.drift.cleared"
PAGE_SIZE = 500
DRIFT_SCAN_RETRY = RetryPolicy(max_attempts=1, stale=FAIL)  # a scan cannot resume half-way; the next one starts afresh
STALE_AFTER = dt.timedelta(minutes=10)  # every page is a heartbeat; a page is one transaction of comparisons


class ScanError(Exception):
    """A scan that cannot run as asked (an incremental one with no completed scan to continue from)."""


def compared_attributes() -> list[MappedAttribute]:
    """The attributes a scan compares: those written back, not AD-only, never identity attributes."""
    return [a for a in writeback_attributes() if a.exo not in AD_ONLY and not a.identity]


def differences(cloud: dict[str, Any], ad: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(Exchange name, cloud value, AD value) of each compared attribute on which the two sides differ by the drift
    rules. A MOERA in a single-valued attribute is left out: the writeback never writes one into AD."""
    found = []
    for attribute in compared_attributes():
        if attribute.exo not in cloud:
            continue
        wanted, held = cloud.get(attribute.exo), ad.get(attribute.exo)
        if attribute.kind is not Kind.PROXY and isinstance(wanted, str) and is_moera(wanted):
            continue
        if not same_value(attribute, wanted, held):
            found.append((attribute.exo, _plain(wanted), _plain(held)))
    return found


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- the steps --------------------------------------------------------------------------------------------------------


def claim(scan_id: int) -> DriftScan | None:
    """QUEUED -> RUNNING (audited); None when another worker has it or it has ended."""
    return run_claim(DriftScan, scan_id, action=STARTED)


def _previous(scan: DriftScan) -> DriftScan | None:
    return DriftScan.objects.filter(state=DriftScan.State.DONE, pk__lt=scan.pk).order_by("-pk").first()


def scan_run(scan: DriftScan, *, exchange: ExchangeOnlineClient, directory: DirectoryClient) -> DriftScan:
    """Read what the scan's mode says from both sides, compare, and record the findings page by page."""
    previous = _previous(scan) if scan.mode == DriftScan.Mode.INCREMENTAL else None
    if scan.mode == DriftScan.Mode.INCREMENTAL and previous is None:
        raise ScanError("An incremental drift scan needs a completed earlier scan; run a full scan first.")
    cloud_managed = Mailbox.objects.filter(authority=Authority.CLOUD, in_ad=True, in_exo=True).exclude(ad_guid=None)
    by_guid = dict(cloud_managed.exclude(exo_object_id=None).values_list("ad_guid", "pk"))
    by_object = dict(cloud_managed.exclude(exo_object_id=None).values_list("exo_object_id", "pk"))
    ad_fresh: dict[int, dict[str, Any]] = {}
    exo_fresh: dict[int, dict[str, Any]] = {}
    names = ["objectGUID", *(a.ad for a in compared_attributes())]

    read = ad_read(
        scan, directory, previous=previous, base_dn=settings.LDAP_BASE_DN, user_filter=AD_USER_FILTER, attributes=names
    )
    for page in _pages(read.entries, PAGE_SIZE):
        for entry in page:
            guid = entry["attributes"].get("objectGUID")
            pk = by_guid.get(uuid.UUID(bytes_le=guid)) if guid else None
            if pk is not None:
                ad_fresh[pk] = ad_values(entry["attributes"])
        scan.ad_read += len(page)
        run_heartbeat(DriftScan, scan.pk, ad_read=scan.ad_read)

    parameters: dict[str, Any] = {"ResultSize": "Unlimited"}
    if previous is not None and previous.exo_high_water:
        since = (previous.exo_high_water - EXO_OVERLAP).strftime("%Y-%m-%dT%H:%M:%SZ")
        parameters["Filter"] = f"WhenChangedUTC -gt '{since}'"
    newest = previous.exo_high_water if previous is not None else None
    for page in exchange.iter_pages("Get-Mailbox", parameters):
        for payload in page:
            when = _when(payload.get("WhenChangedUTC"))
            newest = max(newest, when) if newest and when else (newest or when)
            object_id = payload.get("ExternalDirectoryObjectId")
            pk = by_object.get(uuid.UUID(str(object_id))) if object_id else None
            if pk is not None and payload.get("IsExchangeCloudManaged"):
                exo_fresh[pk] = exo_values(payload)
        scan.exo_read += len(page)
        run_heartbeat(DriftScan, scan.pk, exo_read=scan.exo_read)

    touched = sorted(set(ad_fresh) | set(exo_fresh))
    if scan.mode == DriftScan.Mode.FULL:
        touched = [pk for pk in touched if pk in ad_fresh and pk in exo_fresh]  # a side missing is the import's to find
    mailboxes = Mailbox.objects.in_bulk(touched)
    for page in _pages(touched, PAGE_SIZE):
        compared = []
        for pk in page:
            mailbox = mailboxes[pk]
            cloud = exo_fresh.get(pk)
            if cloud is None:
                payload = exchange.get_mailbox(str(mailbox.exo_object_id))
                if not payload.get("IsExchangeCloudManaged"):
                    continue  # moved back to AD's authority since the import: nothing of the cloud to compare
                cloud = exo_values(payload)
            ad = ad_fresh.get(pk)
            if ad is None:
                entry = directory.find_by_guid(mailbox.ad_guid, names)
                if entry is None:
                    continue
                ad = ad_values(entry["attributes"])
            compared.append((mailbox, differences(cloud, ad)))
        found = record_page(scan, compared)
        scan.cleared += clear_page(scan, compared)
        scan.compared += len(compared)
        scan.found += len(found)
        run_heartbeat(DriftScan, scan.pk, compared=scan.compared, found=scan.found, cleared=scan.cleared)
        if found and settings.DRIFT_AUTO_REPAIR:
            drift_auto_repair(finding_ids=[finding.pk for finding in found])
    DriftScan.objects.filter(pk=scan.pk).update(ad_high_water=read.mark or "", exo_high_water=newest)
    return scan


def record_page(scan: DriftScan, compared: list[tuple[Mailbox, list[tuple[str, Any, Any]]]]) -> list[DriftFinding]:
    """Record one page's new findings (none for a mailbox and attribute with an open finding), with one audit event
    naming them all. Returns the findings created."""
    wanted = [(mailbox, name, cloud, ad) for mailbox, diffs in compared for name, cloud, ad in diffs]
    if not wanted:
        return []
    with transaction.atomic():
        open_now = set(
            DriftFinding.objects.filter(
                mailbox_id__in={mailbox.pk for mailbox, *_ in wanted}, resolved_at__isnull=True
            ).values_list("mailbox_id", "attribute")
        )
        now = timezone.now()
        created = []
        for mailbox, name, cloud, ad in wanted:
            if (mailbox.pk, name) in open_now:
                continue
            open_now.add((mailbox.pk, name))
            created.append(
                DriftFinding(
                    mailbox=mailbox,
                    attribute=name,
                    ad_value=ad,
                    last_known_value=mailbox.ad_values.get(name),
                    cloud_value=cloud,
                    scan=scan,
                    found_at=now,
                )  # fmt: skip
            )
        if not created:
            return []
        for finding in created:
            finding.save()  # one by one: bulk_create leaves pks unset on some databases
        audit_record(
            actor=None, action=FOUND, obj=scan, reason=f"{len(created)} attribute(s) differ between Exchange and AD.",
            after={"findings": [
                {"id": f.pk, "mailbox_id": f.mailbox_id, "attribute": f.attribute, "ad_value": f.ad_value,
                 "cloud_value": f.cloud_value}
                for f in created
            ]},
        )  # fmt: skip
    return created


def clear_page(scan: DriftScan, compared: list[tuple[Mailbox, list[tuple[str, Any, Any]]]]) -> int:
    """Close the open findings of the compared mailboxes whose attribute the two sides now agree on (someone put AD
    right, or Exchange took AD's value), with one audit event naming them. Returns how many were closed."""
    names = {attribute.exo for attribute in compared_attributes()}
    agreeing = {(mailbox.pk, name) for mailbox, diffs in compared for name in names - {d[0] for d in diffs}}
    if not agreeing:
        return 0
    with transaction.atomic():
        rows = [
            row
            for row in DriftFinding.objects.select_for_update().filter(
                mailbox_id__in={pk for pk, _ in agreeing}, attribute__in=names, resolved_at__isnull=True
            )
            if (row.mailbox_id, row.attribute) in agreeing
        ]
        if not rows:
            return 0
        now = timezone.now()
        for row in rows:
            row.resolved_at, row.resolution = now, DriftFinding.Resolution.AGREES
            row.save(update_fields=["resolved_at", "resolution"])
        audit_record(
            actor=None, action=CLEARED, obj=scan, reason=f"{len(rows)} finding(s): Exchange and AD agree again.",
            after={"findings": [
                {"id": row.pk, "mailbox_id": row.mailbox_id, "attribute": row.attribute} for row in rows
            ]},
        )  # fmt: skip
    return len(rows)


def _run(scan: DriftScan) -> DriftScan:
    directory = DirectoryClient(DirectoryConfig.from_settings())
    try:
        return scan_run(scan, exchange=ExchangeOnlineClient(ExchangeConfig.from_settings()), directory=directory)
    finally:
        directory.close()


def _finish(scan: DriftScan, _result: DriftScan) -> DriftScan:
    return run_finish(DriftScan, scan.pk, action=COMPLETED) or DriftScan.objects.get(pk=scan.pk)


def _fail(scan: DriftScan, error: str) -> DriftScan:
    return run_fail(DriftScan, scan.pk, error, action=FAILED) or DriftScan.objects.get(pk=scan.pk)


DRIFT_SCAN = Work(
    name="Drift scan",
    claim=claim,
    run=_run,
    finish=_finish,
    fail=_fail,
    expected=(ExchangeOnlineError, DirectoryError, ScanError),
)


def drift_scan_job(scan_id: int) -> str | None:
    """RQ entrypoint: run one queued scan. Safe to deliver twice (the second delivery finds it claimed). Returns the
    state it left the scan in."""
    row = perform(DRIFT_SCAN, scan_id, correlation=f"drift-scan-{scan_id}")
    return row.state if row is not None else None


def drift_scan_sweep() -> list[int]:
    """Fail scans whose heartbeat stopped (a dead worker), so the next scan may run, and queue again a queued scan
    whose job Redis lost (``writeback.drift_scan.requeued``)."""
    run_requeue_lost(DriftScan, older_than=REQUEUE_AFTER, action=SCAN_REQUEUED, requeue=drift_scan_enqueue)
    return run_sweep(DriftScan, stale_after=STALE_AFTER, action=FAILED, policy=DRIFT_SCAN_RETRY)


# -- the schedule ------------------------------------------------------------------------------------------------------


def interval_seconds() -> int | None:
    """Seconds between scheduled scans; None when DRIFT_SCAN_INTERVAL_MINUTES is 0 (off)."""
    minutes = int(settings.DRIFT_SCAN_INTERVAL_MINUTES)
    if minutes < 0:
        raise ValueError(f"DRIFT_SCAN_INTERVAL_MINUTES cannot be negative (it is {minutes}).")
    return minutes * 60 or None


def _request_due() -> str:
    try:
        with transaction.atomic():
            scan = drift_scan_request(actor=None)
            audit_record(actor=None, action="writeback.drift_scan.scheduled", obj=scan, after={"mode": scan.mode})
    except DriftError as exc:
        return f"skipped: {exc}"
    return f"queued {scan.mode.lower()} drift scan #{scan.pk}"


def drift_scan_periodic_job() -> str:
    """RQ entrypoint (scheduled): schedule the next tick when this is the chain's, then request the scan due."""
    return CHAIN.tick(_request_due, interval_seconds)


def drift_scan_schedule() -> tuple[Job | None, bool]:
    """Make sure the scans are scheduled (safe to call any number of times). Returns the pending tick and whether this
    call created it; (None, False) when DRIFT_SCAN_INTERVAL_MINUTES is 0."""
    return CHAIN.ensure(interval_seconds())


CHAIN = Chain(
    name="Drift scan schedule",
    queue_name="default",
    next_key="soa:drift-scan:next",
    lock_key="soa:drift-scan:lock",
    job_id_prefix="drift-scan-schedule-",
    func=drift_scan_periodic_job,
    description="Scheduled drift scan (every {seconds} s)",
    timeout=300,
    result_ttl=86400,
)
