"""The drift page: open drift findings (filtered by OU subtree, attribute and age in the URL, keyset-paginated),
one-click and bulk repair, and the administrators' "Scan now". Reads go through writeback.drift.drift_finding_list
(scoped to the user), writes through its services, which check role and scope themselves and audit."""

import datetime as dt
from dataclasses import dataclass
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from portal.cursors import BadCursor, decode_cursor, encode_cursor
from portal.limits import REASON_MAX_LENGTH, too_long
from portal.roles import Action, may
from writeback.drift import (
    DriftError,
    drift_finding_list,
    drift_finding_repair,
    drift_findings_repair,
    drift_repair_refusal,
    drift_scan_refusal,
    drift_scan_request,
    drift_visible,
)
from writeback.jobs.drift import compared_attributes
from writeback.models import DriftFinding, DriftScan, WritebackTask

PAGE_SIZE = 50
AGES = [("", "Any age"), ("1", "Older than a day"), ("7", "Older than a week"), ("30", "Older than 30 days")]


@dataclass
class Filters:
    ou: str = ""
    attribute: str = ""
    age: str = ""

    @classmethod
    def from_query(cls, data) -> "Filters":
        names = {attribute.exo for attribute in compared_attributes()} | set(
            DriftFinding.objects.values_list("attribute", flat=True).distinct()
        )
        attribute = data.get("attribute", "")
        age = data.get("age", "")
        return cls(
            ou=data.get("ou", "").strip(),
            attribute=attribute if attribute in names else "",
            age=age if age in dict(AGES) else "",
        )

    def findings(self, user) -> QuerySet[DriftFinding]:
        return drift_finding_list(
            user=user, ou=self.ou, attribute=self.attribute, older_than_days=int(self.age) if self.age else None
        )

    def query(self) -> str:
        return urlencode({key: value for key, value in vars(self).items() if value})


def _page(findings: QuerySet[DriftFinding], after: str) -> tuple[list[DriftFinding], str | None]:
    """Keyset pagination on (found_at, id), newest first: a page costs the same however deep it is."""
    if after:
        found_at, pk = decode_cursor(after, (dt.datetime, int))  # BadCursor: answered 400 by the views
        findings = findings.filter(found_at__lte=found_at).filter(
            Q(found_at__lt=found_at) | Q(found_at=found_at, pk__lt=pk)
        )
    rows = list(findings[: PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, encode_cursor(rows[-1].found_at, rows[-1].pk) if more and rows else None


def _repairable(findings: QuerySet[DriftFinding]) -> QuerySet[DriftFinding]:
    """The findings a bulk repair takes: those without a repair already on its way."""
    return findings.exclude(repair_task__state__in=WritebackTask.OPEN_STATES)


def _context(request: HttpRequest, filters: Filters, **given) -> dict:
    user = request.user
    findings = filters.findings(user)
    rows, next_cursor = _page(findings, request.GET.get("after", ""))
    can_repair = may(user, Action.MAILBOX_EDIT) or may(user, Action.PORTAL_CONFIGURE)
    return {
        "filters": filters,
        "query": filters.query(),
        "ages": AGES,
        "attributes": [attribute.exo for attribute in compared_attributes()],
        "rows": [{"finding": finding, "refusal": drift_repair_refusal(finding, user)} for finding in rows],
        "next_cursor": next_cursor,
        "paged": bool(request.GET.get("after")),
        "total": findings.count(),
        "can_repair": can_repair,
        "repairable": _repairable(findings).count() if can_repair else 0,
        "can_scan": may(user, Action.PORTAL_CONFIGURE),
        "scan_refusal": drift_scan_refusal(user) if may(user, Action.PORTAL_CONFIGURE) else None,
        "last_scan": DriftScan.objects.first(),
        "last_done": DriftScan.objects.filter(state=DriftScan.State.DONE).first(),
        **given,
    }


def _bad_request(message: str) -> HttpResponse:
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _cursor_checked(view):
    """A page link whose cursor the page did not write answers 400 with why, never a 500 nor a silent first page."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except BadCursor as exc:
            return _bad_request(str(exc))

    return wrapped


def _guard(request: HttpRequest) -> None:
    if not drift_visible(request.user):
        raise PermissionDenied("Your roles do not show drift findings.")


@_cursor_checked
def drift_view(request: HttpRequest) -> HttpResponse:
    """Open findings the user may see, filtered and paged by the URL."""
    if not request.user.is_authenticated:
        from django.contrib.auth.views import redirect_to_login

        return redirect_to_login(request.get_full_path())
    _guard(request)
    template = "writeback/drift.html#drift-findings" if request.htmx else "writeback/drift.html"
    return render(request, template, _context(request, Filters.from_query(request.GET)))


@require_POST
@_cursor_checked
def drift_repair_view(request: HttpRequest, finding_id: int) -> HttpResponse:
    """One-click repair: the service decides (scope, state) and audits a refusal; a finding the user may not even see
    is answered 404, as if absent."""
    _guard(request)
    filters = Filters.from_query(request.GET)
    reason = request.POST.get("reason", "")
    if problem := too_long(reason, REASON_MAX_LENGTH, "The reason"):
        return _bad_request(problem)
    try:
        task = drift_finding_repair(finding_id=finding_id, actor=request.user, reason=reason)
    except DriftFinding.DoesNotExist as exc:
        raise Http404("No such finding.") from exc
    except DriftError as exc:
        if not drift_finding_list(user=request.user, open_only=False).filter(pk=finding_id).exists():
            raise Http404("No such finding.") from exc
        notice, ok = str(exc), False
    else:
        notice, ok = f"Repair queued: {task} writes the cloud's values into AD.", True
    if not request.htmx:
        (messages.success if ok else messages.error)(request, notice)
        return redirect(f"/drift/?{filters.query()}")
    return render(request, "writeback/drift.html#drift-findings", _context(request, filters, notice=notice, ok=ok))


def drift_bulk_repair_view(request: HttpRequest) -> HttpResponse:
    """Bulk repair of the filtered findings: a GET shows the confirmation naming the count, the POST repairs them."""
    _guard(request)
    filters = Filters.from_query(request.GET)
    findings = _repairable(filters.findings(request.user))
    if request.method == "POST":
        reason = request.POST.get("reason", "")
        if problem := too_long(reason, REASON_MAX_LENGTH, "The reason"):
            return _bad_request(problem)
        ids = list(findings.values_list("pk", flat=True))
        try:
            tasks = drift_findings_repair(finding_ids=ids, actor=request.user, reason=reason)
        except DriftError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Repair queued for {len(ids)} finding(s): {len(tasks)} writeback task(s).")
        return redirect(f"/drift/?{filters.query()}")
    return render(
        request,
        "writeback/drift_confirm.html",
        {"filters": filters, "query": filters.query(), "count": findings.count()},
    )


@require_POST
def drift_scan_view(request: HttpRequest) -> HttpResponse:
    """Scan now (administrators): the mode due, queued."""
    _guard(request)
    try:
        scan = drift_scan_request(actor=request.user)
    except DriftError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{scan} is queued.")
    return redirect("drift")
