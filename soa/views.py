"""Mailbox pages: the searchable list and the two-sided detail view (its editing: soa.views_changes)."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from portal.audit import audit_record
from portal.csv_stream import csv_lines
from portal.cursors import BadCursor
from portal.decorators import action_required
from portal.roles import Action, OutsideScope, may
from soa.forms import MailboxFilterForm
from soa.selectors import SORTS, capped_count, mailbox_get, mailbox_search, ou_tree, paginate
from soa.views_changes import page_context

PAGE_SIZE = 50
# The columns the list sorts by when their heading is clicked: the sort key for each, ascending first.
SORTABLE = {"Name": "name", "UPN": "upn", "Department": "department"}
EXPORT_HEADER = ["display_name", "upn", "primary_smtp", "department", "dn", "recipient_type", "authority", "drift"]


def _sort_links(query, sort: str) -> list[dict]:
    """Each column heading's link: its sort ascending, or descending when it is the current ascending sort."""
    links = []
    for label, key in SORTABLE.items():
        wanted = f"-{key}" if sort == key else key
        params = query.copy()
        params["sort"] = wanted
        links.append({"label": label, "href": "?" + params.urlencode(), "current": sort.lstrip("-") == key,
                      "descending": sort == f"-{key}"})  # fmt: skip
    return links


@action_required(Action.MAILBOX_VIEW)
def mailbox_list_view(request: HttpRequest) -> HttpResponse:
    form = MailboxFilterForm(request.GET or None)
    form.offer_ous(ou_tree(user=request.user))
    page = total = None
    more = False
    sort = "name"
    if not form.is_bound or form.is_valid():
        filters = form.selector_filters() if form.is_bound else {}
        sort = form.cleaned_data.get("sort", "name") if form.is_bound else "name"
        mailboxes = mailbox_search(user=request.user, **filters)
        total, more = capped_count(mailboxes)
        try:
            page = paginate(
                mailboxes, sort=sort, after=request.GET.get("after", ""), before=request.GET.get("before", ""),
                size=PAGE_SIZE, few=not more,
            )  # fmt: skip
        except BadCursor as exc:
            return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    query = request.GET.copy()
    for key in ("after", "before"):
        query.pop(key, None)
    template = "soa/mailbox_list.html#mailbox-results" if request.htmx else "soa/mailbox_list.html"
    context = {"form": form, "page": page, "total": total, "more": more, "query": query.urlencode(),
               "sort_links": _sort_links(query, sort)}  # fmt: skip
    return render(request, template, context)


@action_required(Action.MAILBOX_VIEW)
def mailbox_export_view(request: HttpRequest) -> HttpResponse:
    """The list's current filter and sort as CSV, streamed row by row; the export is recorded with its filter."""
    form = MailboxFilterForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
        return HttpResponseBadRequest(f"Invalid filters ({problems}).", content_type="text/plain; charset=utf-8")
    filters = form.selector_filters() if form.is_bound else {}
    field, descending = SORTS.get(form.cleaned_data.get("sort", "name") if form.is_bound else "name", SORTS["name"])
    mailboxes = mailbox_search(user=request.user, **filters).order_by(
        *((f"-{field}", "-id") if descending else (field, "id"))
    )
    with transaction.atomic():
        recorded = {key: value for key, value in filters.items() if value not in ("", None)}
        audit_record(
            actor=request.user, action="soa.mailbox.exported", object_type="mailbox", after={"filters": recorded}
        )

    def rows():
        columns = ("display_name", "upn", "primary_smtp", "department", "dn", "recipient_type_details",
                   "authority", "drift")  # fmt: skip
        for mailbox in mailboxes.only(*columns).iterator(chunk_size=2000):
            yield [mailbox.display_name, mailbox.upn, mailbox.primary_smtp, mailbox.department, mailbox.dn,
                   mailbox.recipient_type_details, mailbox.authority, " ".join(mailbox.drift)]  # fmt: skip

    response = StreamingHttpResponse(csv_lines(EXPORT_HEADER, rows()), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="soa-mailboxes-{stamp}.csv"'
    return response


@action_required(Action.MAILBOX_VIEW)
def mailbox_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The two-sided mailbox page; for help desk in scope, also where its Exchange attributes are edited
    (soa.views_changes). A refresh asked for by the page (after a change finished) gets the attributes card."""
    mailbox = mailbox_get(user=request.user, pk=pk)
    if mailbox is None:
        # Outside the user's scope looks exactly like absent: a 403 would confirm the mailbox exists.
        raise OutsideScope("mailbox", Action.MAILBOX_VIEW)
    template = "soa/mailbox_detail.html#exchange-attributes" if request.htmx else "soa/mailbox_detail.html"
    context = page_context(request, mailbox, may_audit_history=may(request.user, Action.AUDIT_VIEW))
    return render(request, template, context)
