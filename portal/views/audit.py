"""The auditors' pages: browse, export and verify the change history."""

import csv
import json

from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST

from portal.audit import audit_record, verify_chain
from portal.decorators import action_required
from portal.forms import AuditFilterForm
from portal.roles import Action
from portal.selectors import audit_event_list

PAGE_SIZE = 50
EXPORT_FIELDS = [
    "id", "occurred_at", "actor_name", "action", "object_type", "object_id", "object_repr",
    "before", "after", "reason", "correlation_id", "prev_hash", "hash",
]  # fmt: skip


def _filters(request: HttpRequest) -> tuple[AuditFilterForm, dict]:
    form = AuditFilterForm(request.GET or None)
    return form, (form.cleaned_data if form.is_bound and form.is_valid() else {})


@action_required(Action.AUDIT_VIEW)
def audit_list(request: HttpRequest) -> HttpResponse:
    form, filters = _filters(request)
    events = audit_event_list(user=request.user, filters=filters)
    if form.errors:
        # Listing everything under a filter the user believes applied would mislead: show the error instead.
        events = events.none()
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    template = "portal/audit_list.html#audit-results" if request.htmx else "portal/audit_list.html"
    return render(request, template, {"form": form, "page": page, "query": query.urlencode()})


def _csv_cell(value) -> str:
    # A cell starting with = + - @ is run as a formula by spreadsheet programs; auditors open these files.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def _row(event) -> dict:
    return {field: getattr(event, field) for field in EXPORT_FIELDS} | {"occurred_at": event.occurred_at.isoformat()}


@action_required(Action.AUDIT_EXPORT)
def audit_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """Stream the filtered history as CSV or JSON Lines; the export itself is recorded."""
    if fmt not in ("csv", "jsonl"):
        return HttpResponseBadRequest("Export format must be csv or jsonl.")
    form, filters = _filters(request)
    if form.errors:
        problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
        return HttpResponseBadRequest(f"Invalid filters ({problems}).", content_type="text/plain")
    events = audit_event_list(user=request.user, filters=filters).order_by("id")
    with transaction.atomic():
        audit_record(
            actor=request.user,
            action="portal.audit.exported",
            object_type="audit",
            after={"format": fmt, "filters": {key: value for key, value in filters.items() if value}},
        )
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        writer = csv.writer(_Echo())

        def lines():
            yield writer.writerow(EXPORT_FIELDS)
            for event in events.iterator(chunk_size=2000):
                row = _row(event)
                yield writer.writerow(
                    [_csv_cell(json.dumps(row[f]) if f in ("before", "after") else row[f]) for f in EXPORT_FIELDS]
                )

        content_type = "text/csv; charset=utf-8"
    else:

        def lines():
            for event in events.iterator(chunk_size=2000):
                yield json.dumps(_row(event), ensure_ascii=False) + "\n"

        content_type = "application/x-ndjson; charset=utf-8"
    response = StreamingHttpResponse(lines(), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="soa-audit-{stamp}.{fmt}"'
    return response


@require_POST
@action_required(Action.AUDIT_VERIFY)
def audit_verify_view(request: HttpRequest) -> HttpResponse:
    checked, broken = verify_chain()
    with transaction.atomic():
        audit_record(
            actor=request.user,
            action="portal.audit.verified",
            object_type="audit",
            after={"checked": checked, "broken_at": broken.event_id if broken else None},
        )
    return render(request, "portal/audit_list.html#verify-result", {"checked": checked, "broken": broken})
