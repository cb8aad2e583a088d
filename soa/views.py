"""Mailbox pages: the searchable list and the two-sided detail view (its editing: soa.views_changes)."""

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

from portal.cursors import BadCursor
from portal.decorators import action_required
from portal.roles import Action, OutsideScope
from soa.forms import MailboxFilterForm
from soa.selectors import mailbox_get, mailbox_search, paginate
from soa.views_changes import page_context

PAGE_SIZE = 50


@action_required(Action.MAILBOX_VIEW)
def mailbox_list_view(request: HttpRequest) -> HttpResponse:
    form = MailboxFilterForm(request.GET or None)
    page = total = None
    if not form.is_bound or form.is_valid():
        filters = form.selector_filters() if form.is_bound else {}
        sort = form.cleaned_data.get("sort", "name") if form.is_bound else "name"
        mailboxes = mailbox_search(user=request.user, **filters)
        total = mailboxes.count()
        try:
            page = paginate(
                mailboxes, sort=sort, after=request.GET.get("after", ""), before=request.GET.get("before", ""),
                size=PAGE_SIZE,
            )  # fmt: skip
        except BadCursor as exc:
            return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    query = request.GET.copy()
    for key in ("after", "before"):
        query.pop(key, None)
    template = "soa/mailbox_list.html#mailbox-results" if request.htmx else "soa/mailbox_list.html"
    return render(request, template, {"form": form, "page": page, "total": total, "query": query.urlencode()})


@action_required(Action.MAILBOX_VIEW)
def mailbox_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The two-sided mailbox page; for help desk in scope, also where its Exchange attributes are edited
    (soa.views_changes). A refresh asked for by the page (after a change finished) gets the attributes card."""
    mailbox = mailbox_get(user=request.user, pk=pk)
    if mailbox is None:
        # Outside the user's scope looks exactly like absent: a 403 would confirm the mailbox exists.
        raise OutsideScope("mailbox", Action.MAILBOX_VIEW)
    template = "soa/mailbox_detail.html#exchange-attributes" if request.htmx else "soa/mailbox_detail.html"
    return render(request, template, page_context(request, mailbox))
