"""The decommission readiness page (soa.readiness): how far the tenant is from removing its last Exchange server,
with its CSV export and a printable report for management.

Administrators, operators, approvers and auditors see it (the roles that see waves); its figures cover the mailboxes
the user may see. Measuring a million mailboxes takes seconds, so the page shows the snapshot the periodic job took
(writeback.jobs.readiness, every READINESS_SNAPSHOT_INTERVAL_MINUTES) while it is younger than
READINESS_SNAPSHOT_MAX_AGE_MINUTES: as it is to a tenant-wide user, summed from its per-OU groups for a user limited
to OUs. Without a recent snapshot, the user gets a measurement of their scope made now and reused for
READINESS_CACHE_SECONDS per user and scope (as the OU picker's tree is).
The trend is drawn from the snapshots, one a day.
"""

import datetime as dt
import hashlib
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from portal.audit import audit_record
from portal.csv_stream import csv_lines
from portal.decorators import action_required
from portal.roles import Action, scope_dns, scope_filter
from soa.forms import RECIPIENT_TYPES
from soa.prerequisites import prerequisite_rows
from soa.readiness import (
    MANUAL_CONDITIONS,
    OU_ROWS,
    chart,
    checklist,
    latest_snapshot,
    measure,
    snapshot_scoped,
    trend,
)
from soa.selectors import mailbox_list
from soa.views_prerequisites import prerequisites_context
from writeback.selectors import readiness_writeback_counts

CSV_HEADER = ["section", "item", "cloud", "on_prem", "total", "count", "status", "note"]


def readiness_figures(user) -> dict:
    """The user's figures: from the latest snapshot when it is recent enough (pre-aggregated by the snapshot job:
    a tenant-wide user's as it was taken, an OU-scoped user's summed from its per-OU groups), else measured now and
    reused for READINESS_CACHE_SECONDS."""
    bases = scope_dns(user, Action.MAILBOX_VIEW)
    recent = latest_snapshot(
        max_age=dt.timedelta(minutes=settings.READINESS_SNAPSHOT_MAX_AGE_MINUTES), figures=bases is None
    )
    if recent is not None:
        figures = recent.figures if bases is None else snapshot_scoped(recent, bases)
        if figures is not None:
            return figures
    mailboxes = mailbox_list(user=user)
    scope = hashlib.sha256(str(scope_filter(user, Action.MAILBOX_VIEW, "dn_norm")).encode()).hexdigest()[:32]
    key = f"soa:readiness:{user.pk}:{scope}"
    figures = cache.get(key)
    if figures is None:
        figures = measure(
            mailboxes, now=timezone.now(), quiet_period=dt.timedelta(hours=settings.WAVE_QUIET_PERIOD_HOURS),
            writeback=readiness_writeback_counts(mailboxes),
        )  # fmt: skip
        if settings.READINESS_CACHE_SECONDS > 0:
            cache.set(key, figures, settings.READINESS_CACHE_SECONDS)
    return figures


def _list_url(**filters) -> str:
    """The mailbox list with ``filters`` (its own query parameters): a figure's drill-down."""
    query = {name: value for name, value in filters.items() if value}
    return reverse("mailbox_list") + ("?" + urlencode(query) if query else "")


def _context(request: HttpRequest) -> dict:
    figures = readiness_figures(request.user)
    for row in figures["by_type"]:
        listed = row["recipient_type"] in RECIPIENT_TYPES  # the list filters only by the types it can move
        row["cloud_url"] = _list_url(authority="CLOUD", recipient_type=row["recipient_type"]) if listed else ""
        row["on_prem_url"] = _list_url(authority="ON_PREM", recipient_type=row["recipient_type"]) if listed else ""
        row["total_url"] = _list_url(recipient_type=row["recipient_type"]) if listed else ""
    ous = figures["by_ou"][:OU_ROWS]
    for row in ous:
        row["cloud_url"] = _list_url(ou=row["ou"], authority="CLOUD") if row["ou"] else ""
        row["on_prem_url"] = _list_url(ou=row["ou"], authority="ON_PREM") if row["ou"] else ""
        row["total_url"] = _list_url(ou=row["ou"]) if row["ou"] else ""
    items = [
        {"item": item, "url": reverse(item.evidence) + item.evidence_suffix if item.evidence != "readiness"
         else item.evidence_suffix}
        for item in checklist(figures)
    ]  # fmt: skip
    snapshots = trend(today=timezone.now().date())
    return {
        "figures": figures,
        "ous": ous,
        "ous_more": max(len(figures["by_ou"]) - OU_ROWS, 0),
        "checklist": items,
        "met": sum(1 for entry in items if entry["item"].met),
        "manual": MANUAL_CONDITIONS,
        "snapshots": snapshots,
        "cloud_chart": chart(snapshots, "cloud"),
        "drift_chart": chart(snapshots, "open_drift"),
        "drifted_chart": chart(snapshots, "drifted"),
        "cache_seconds": settings.READINESS_CACHE_SECONDS,
        "drift_url": reverse("drift"),
        "prerequisites": prerequisites_context(request.user),
    }


@action_required(Action.WAVE_VIEW)
def readiness_view(request: HttpRequest) -> HttpResponse:
    return render(request, "soa/readiness.html", _context(request))


@action_required(Action.WAVE_VIEW)
def readiness_report_view(request: HttpRequest) -> HttpResponse:
    """The same figures laid out for paper (print styles, no navigation, no drill-down links)."""
    context = _context(request)
    context["prerequisites"]["may_manage"] = False  # paper: the results, not the forms
    return render(request, "soa/readiness_report.html", {**context, "printed_at": timezone.now()})


@action_required(Action.WAVE_VIEW)
def readiness_export_view(request: HttpRequest) -> HttpResponse:
    """Every figure of the page (all OUs, not only the first) as CSV; the export is recorded."""
    figures = readiness_figures(request.user)
    with transaction.atomic():
        audit_record(actor=request.user, action="soa.readiness.exported", object_type="readiness",
                     after={"measured_at": figures["measured_at"], "total": figures["total"]})  # fmt: skip

    def rows():
        yield ["total", "mailboxes", figures["cloud"], figures["on_prem"], figures["total"], "", "", ""]
        yield ["total", "with drift at the inventory", "", "", "", figures["drifted"], "", ""]
        yield ["total", "open drift findings", "", "", "", figures["open_drift"], "", ""]
        yield ["total", "failed writebacks", "", "", "", figures["failed_writebacks"], "", ""]
        yield ["total", "ready to move", "", "", "", figures["ready"], "", ""]
        for row in figures["by_type"]:
            yield ["recipient type", row["recipient_type"] or "unknown", row["cloud"], row["on_prem"], row["total"],
                   "", "", "" if row["supported"] else "not supported"]  # fmt: skip
        for row in figures["by_ou"]:
            yield ["ou", row["ou"] or "(none)", row["cloud"], row["on_prem"], row["total"], "", "", ""]
        for row in figures["blockers"]:
            yield ["blocker", row["code"], "", "", "", row["count"], "", row["label"]]
        for row in figures["unsupported_types"]:
            yield ["unsupported", row["recipient_type"], "", "", "", row["count"], "", row["advice"]]
        for row in figures["stale_attributes"]:
            yield ["not written back", row["attribute"], "", "", "", "", "", ", ".join(row["applications"])]
        for item in checklist(figures):
            yield ["checklist", item.title, "", "", "", "", "met" if item.met else "not met",
                   f"{item.source}: {item.measured}"]  # fmt: skip
        for row in prerequisite_rows():
            detail = f"{row['source']}: {row['measured']}" if row["source"] else row["measured"]
            yield ["prerequisite", row["check"].title, "", "", "", "", row["label"],
                   f"{detail} Error: {row['error']}" if row["error"] else detail]  # fmt: skip

    response = StreamingHttpResponse(csv_lines(CSV_HEADER, rows()), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="soa-readiness-{stamp}.csv"'
    return response
