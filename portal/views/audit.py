"""The auditors' pages: browse, export and verify the change history (verifying is a job: writeback.jobs.audit)."""

import datetime as dt
import json
import logging
import re
import uuid
from dataclasses import dataclass

import django_rq
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError

from portal.audit import audit_record
from portal.csv_stream import csv_lines
from portal.cursors import BadCursor, decode_cursor, encode_cursor
from portal.decorators import action_required
from portal.forms import AuditFilterForm
from portal.models import AuditEvent
from portal.roles import Action
from portal.selectors import audit_event_list
from portal.views.audit_objects import (
    MAILBOX_SEARCH_LIMIT,
    changed_keys,
    mailbox_events,
    name_mailboxes,
    undoable,
    wave_events,
)
from writeback.jobs.audit import (
    JOB_TIMEOUT,
    PROGRESS_KEY,
    QUEUE,
    RESULT_TTL,
    VERIFY_JOB_PREFIX,
    audit_verification_job,
)

logger = logging.getLogger(__name__)
PAGE_SIZE = 50
# The list counts matches up to this many and says "more than" beyond: a count of every event of a million-event log
# on each page would cost more than the page itself.
COUNT_CAP = 1_000
QUEUEING_GRACE = dt.timedelta(minutes=1)
_JOB_ID = re.compile(re.escape(VERIFY_JOB_PREFIX) + r"[0-9a-f]{32}")
EXPORT_FIELDS = [
    "id", "occurred_at", "actor_name", "action", "object_type", "object_id", "object_repr",
    "before", "after", "reason", "correlation_id", "prev_hash", "hash",
]  # fmt: skip


def _filters(request: HttpRequest) -> tuple[AuditFilterForm, dict, Q | None]:
    """The form, its cleaned filters, and the filter on the objects of the mailboxes its mailbox field names and of
    the wave it names (an error on the form when the mailbox field names none, or too many to list)."""
    form = AuditFilterForm(request.GET or None)
    if not (form.is_bound and form.is_valid()):
        return form, {}, None
    filters, objects = form.cleaned_data, None
    if filters.get("mailbox", "").strip():
        objects, found = mailbox_events(user=request.user, text=filters["mailbox"])
        if not found:
            form.add_error("mailbox", "No mailbox has this name, UPN or address (or it is outside your scope).")
        elif found > MAILBOX_SEARCH_LIMIT:
            form.add_error("mailbox", f"More than {MAILBOX_SEARCH_LIMIT} mailboxes match; type more of the name.")
    if filters.get("wave"):
        # Both given: the events of those mailboxes within that wave.
        objects = wave_events(filters["wave"]) if objects is None else objects & wave_events(filters["wave"])
    return form, filters, objects


@dataclass
class AuditPage:
    """One page of the list: its events, newest first, and the cursors of the newer and older pages (None at ends)."""

    rows: list[AuditEvent]
    newer: str | None
    older: str | None

    @property
    def object_list(self) -> list[AuditEvent]:
        return self.rows


def keyset_page(events, *, after: str = "", before: str = "", size: int = PAGE_SIZE) -> AuditPage:
    """One page of ``events``, newest first by (occurred_at, id), from a cursor of a previous page: the rows, and the
    cursors of the newer and older pages (None at either end). Never counts or skips rows, so the thousandth page
    costs what the first does. Raises BadCursor for a cursor the page did not write."""
    backwards = bool(before) and not after
    cursor = decode_cursor(after or before, (dt.datetime, int)) if (after or before) else None
    if cursor is not None:
        at, pk = cursor
        if timezone.is_naive(at):
            raise BadCursor("not a time")
        if backwards:
            # The leading inclusive bound lets the (occurred_at, id) index start at the cursor; the OR alone would not.
            events = events.filter(Q(occurred_at__gte=at), Q(occurred_at__gt=at) | Q(id__gt=pk))
        else:
            events = events.filter(Q(occurred_at__lte=at), Q(occurred_at__lt=at) | Q(id__lt=pk))
    order = ["occurred_at", "id"] if backwards else ["-occurred_at", "-id"]
    rows = list(events.order_by(*order)[: size + 1])
    more, rows = len(rows) > size, rows[:size]
    if backwards:
        rows.reverse()
    has_older = more if not backwards else bool(rows)
    has_newer = (more if backwards else cursor is not None) and bool(rows)
    return AuditPage(
        rows=rows,
        newer=encode_cursor(rows[0].occurred_at, rows[0].pk) if has_newer else None,
        older=encode_cursor(rows[-1].occurred_at, rows[-1].pk) if has_older else None,
    )


def capped_count(events, cap: int = COUNT_CAP) -> tuple[int, bool]:
    """How many ``events`` there are, counting at most ``cap`` + 1: (the count, whether it passed ``cap``)."""
    counted = events.order_by()[: cap + 1].count()
    return (cap, True) if counted > cap else (counted, False)


@action_required(Action.AUDIT_VIEW)
def audit_list(request: HttpRequest) -> HttpResponse:
    form, filters, objects = _filters(request)
    events = audit_event_list(user=request.user, filters=filters, objects=objects)
    if form.errors:
        # Listing everything under a filter the user believes applied would mislead: show the error instead.
        events = events.none()
    try:
        page = keyset_page(events, after=request.GET.get("after", ""), before=request.GET.get("before", ""))
    except BadCursor as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    name_mailboxes(page.rows)
    may_undo = undoable(request.user, page.rows)
    for event in page.rows:
        event.changes = changed_keys(event.before, event.after)
        event.undoable = event.pk in may_undo
    count, more = capped_count(events)
    query = request.GET.copy()
    for key in ("after", "before"):
        query.pop(key, None)
    template = "portal/audit_list.html#audit-results" if request.htmx else "portal/audit_list.html"
    context = {"form": form, "page": page, "count": count, "more": more, "query": query.urlencode(),
               "correlation_undo": bool(filters.get("correlation_id")) and bool(may_undo)}  # fmt: skip
    return render(request, template, context)


def _row(event) -> dict:
    return {field: getattr(event, field) for field in EXPORT_FIELDS} | {"occurred_at": event.occurred_at.isoformat()}


@action_required(Action.AUDIT_EXPORT)
def audit_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """Stream the filtered history as CSV or JSON Lines; the export itself is recorded."""
    if fmt not in ("csv", "jsonl"):
        return HttpResponseBadRequest("Export format must be csv or jsonl.")
    form, filters, objects = _filters(request)
    if form.errors:
        problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
        return HttpResponseBadRequest(f"Invalid filters ({problems}).", content_type="text/plain")
    events = audit_event_list(user=request.user, filters=filters, objects=objects).order_by("id")
    with transaction.atomic():
        audit_record(
            actor=request.user,
            action="portal.audit.exported",
            object_type="audit",
            after={"format": fmt, "filters": {key: value for key, value in filters.items() if value}},
        )
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":

        def lines():
            rows = (_row(event) for event in events.iterator(chunk_size=2000))
            yield from csv_lines(
                EXPORT_FIELDS,
                ([json.dumps(row[f]) if f in ("before", "after") else row[f] for f in EXPORT_FIELDS] for row in rows),
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
    """Queue a verification of the whole chain; the answer polls for its result (audit_verification)."""
    job_id = f"{VERIFY_JOB_PREFIX}{uuid.uuid4().hex}"
    with transaction.atomic():
        audit_record(actor=request.user, action="portal.audit.verify_requested", object_type="audit",
                     object_id=job_id)  # fmt: skip
    try:
        # django-rq queues the job once the database has committed, which it has here: a Redis that does not answer
        # is found now, and said so, instead of the page polling for a job that never was.
        django_rq.get_queue(QUEUE).enqueue(
            audit_verification_job, requested_by_id=request.user.pk, job_id=job_id, job_timeout=JOB_TIMEOUT,
            result_ttl=RESULT_TTL,
        )  # fmt: skip
    except RedisError as exc:
        logger.warning("Audit verification %s not queued: %s", job_id, exc)
        unqueued = "It could not be queued: the job queue (Redis) does not answer. Try again in a moment."
        context = {"verification": {"state": "failed", "error": unqueued}, "job_id": job_id}
        return render(request, "portal/audit_list.html#verify-result", context)
    if not request.htmx:
        return redirect("audit_verification", job_id=job_id)
    return render(request, "portal/audit_list.html#verify-result", _verification(job_id))


@action_required(Action.AUDIT_VERIFY)
def audit_verification(request: HttpRequest, job_id: str) -> HttpResponse:
    """A verification's state: its result once recorded, else how far it has got."""
    if not _JOB_ID.fullmatch(job_id):
        return HttpResponseBadRequest("Not a verification id.", content_type="text/plain")
    template = "portal/audit_list.html#verify-result" if request.htmx else "portal/audit_verification.html"
    return render(request, template, _verification(job_id))


def _verification(job_id: str) -> dict:
    """What the page shows: the recorded result, the recorded failure, or the job's progress."""
    done = AuditEvent.objects.filter(action="portal.audit.verified", correlation_id=job_id).first()
    if done is not None:
        return {"verification": {"state": "done", **(done.after or {})}, "job_id": job_id}
    failed = AuditEvent.objects.filter(action="writeback.job.failed", object_id=job_id).first()
    if failed is not None:
        return {"verification": {"state": "failed", "error": failed.reason}, "job_id": job_id}
    job = django_rq.get_queue(QUEUE).fetch_job(job_id)
    if job is None or job.is_failed or job.is_stopped or job.is_canceled:
        requested = AuditEvent.objects.filter(action="portal.audit.verify_requested", object_id=job_id).first()
        if job is None and requested is not None and timezone.now() - requested.occurred_at < QUEUEING_GRACE:
            # Redis may not have the job yet (django-rq queues it on commit); a minute later it is lost.
            return {"verification": {"state": "running", "verified": 0}, "job_id": job_id}
        lost = "The verification job is gone (stopped, or its worker died). Ask for another."
        return {"verification": {"state": "failed", "error": lost}, "job_id": job_id}
    return {"verification": {"state": "running", "verified": job.meta.get(PROGRESS_KEY, 0)}, "job_id": job_id}
