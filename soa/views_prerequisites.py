"""The readiness page's prerequisites section (soa.prerequisites): its context for the page, and the administrators'
requests (record Entra Connect's version, pick the canary and check the Exchange role, check everything now).

Everyone who sees the page sees the results; only administrators (portal_configure) may post, and each post is
audited by the service it calls. A refused or malformed post re-renders the page with the error and changes nothing.
"""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.roles import Action, may
from soa.forms_prerequisites import CanaryForm, ConnectVersionForm
from soa.models import PrerequisiteInput
from soa.prerequisites import (
    PrerequisiteError,
    canary_check_request,
    check_pending,
    check_request,
    connect_version_record,
    latest_input,
    prerequisite_rows,
)

ANCHOR = "#prerequisites"


def prerequisites_context(user, *, version_form=None, canary_form=None) -> dict:
    """What templates/soa/_readiness_prerequisites.html draws."""
    rows = prerequisite_rows()
    canary = latest_input(PrerequisiteInput.Kind.CANARY)
    return {
        "rows": rows,
        "met": sum(1 for row in rows if row["status"] == "met"),
        "may_manage": may(user, Action.PORTAL_CONFIGURE),
        "pending": check_pending(),
        "canary": canary.mailbox if canary else None,
        "version_form": version_form or ConnectVersionForm(),
        "canary_form": canary_form or CanaryForm(initial={"identity": canary.mailbox.upn} if canary and canary.mailbox
                                                 else None),
    }  # fmt: skip


def _page_with(request: HttpRequest, **forms) -> HttpResponse:
    from soa.views_readiness import _context  # the page this section belongs to

    context = _context(request)
    context["prerequisites"] = prerequisites_context(request.user, **forms)
    return render(request, "soa/readiness.html", context, status=400)


def _back() -> HttpResponse:
    return redirect(reverse("readiness") + ANCHOR)


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def connect_version_view(request: HttpRequest) -> HttpResponse:
    form = ConnectVersionForm(request.POST)
    if not form.is_valid():
        return _page_with(request, version_form=form)
    try:
        record = connect_version_record(actor=request.user, **form.cleaned_data)
    except PrerequisiteError as error:
        form.add_error(None, str(error))
        return _page_with(request, version_form=form)
    messages.success(request, f"Entra Connect version {record.value} recorded.")
    return _back()


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def canary_check_view(request: HttpRequest) -> HttpResponse:
    form = CanaryForm(request.POST)
    if not form.is_valid():
        return _page_with(request, canary_form=form)
    try:
        record = canary_check_request(actor=request.user, identity=form.cleaned_data["identity"],
                                      confirmed=form.cleaned_data["confirm"])  # fmt: skip
    except PrerequisiteError as error:
        form.add_error("identity", str(error))
        return _page_with(request, canary_form=form)
    if record is None:
        messages.info(request, "The check of this canary is already queued; reload the page in a minute.")
    else:
        messages.success(request, f"{record.mailbox.upn} is the canary; its Exchange role check runs with the other "
                         "checks. Reload the page in a minute for the result.")  # fmt: skip
    return _back()


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def check_now_view(request: HttpRequest) -> HttpResponse:
    try:
        queued = check_request(actor=request.user)
    except PrerequisiteError as error:
        messages.error(request, str(error))
        return _back()
    if queued:
        messages.success(request, "The prerequisite checks are queued; reload the page in a minute for their results.")
    else:
        messages.info(request, "The prerequisite checks are already queued; reload the page in a minute.")
    return _back()
