"""The tenant default page (exchange-facts §1.9): what Exchange Online shows now, what blocks switching it on, and the
guarded request (soa.services.tenant_default): an administrator asks with a reason, two other approvers confirm by
typing the tenant's name, and a job makes the call (writeback.jobs.tenant_default).

The roles that see the readiness page see this one (administrators, operators, approvers; auditors read it and can
send nothing, as everywhere). The blockers are counted tenant-wide because the switch is; the rows listed as their
evidence are limited to the mailboxes the user may see. Switching the default off is not offered: it would not help
the users it already affected, whom only Microsoft Support can change back.
"""

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.limits import REASON_MAX_LENGTH
from portal.roles import Action, may
from soa.choices import TENANT_DEFAULT_OPEN_STATES, TenantDefaultState
from soa.models import TENANT_DEFAULT_APPROVALS, TenantDefaultRequest
from soa.selectors import mailbox_list
from soa.services import SoaError
from soa.services.tenant_default import (
    REVERT_NOTE,
    approval_refusal,
    request_refusal,
    tenant_default_approve,
    tenant_default_cancel,
    tenant_default_request_create,
    tenant_default_retry,
)
from writeback.tenant_default import (
    ENABLE_PARAMETER,
    EVIDENCE_ROWS,
    recent_creations,
    tenant_default_blockers,
    tenant_default_read,
    unhealthy_writebacks,
)

HISTORY = 10


class RequestForm(forms.Form):
    reason = forms.CharField(max_length=REASON_MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 3}))


class ApproveForm(forms.Form):
    typed_name = forms.CharField(max_length=255, label="Type the tenant's name to confirm")


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=REASON_MAX_LENGTH, required=False)


def _context(request: HttpRequest, **given) -> dict:
    user = request.user
    read = tenant_default_read(fresh=request.GET.get("refresh") == "1")
    blockers = tenant_default_blockers()
    visible = mailbox_list(user=user).values("pk")
    recent = list(recent_creations().filter(pk__in=visible)[:EVIDENCE_ROWS])
    unhealthy = list(unhealthy_writebacks().filter(mailbox__in=visible)[:EVIDENCE_ROWS])
    history = list(TenantDefaultRequest.objects.select_related("requested_by", "cancelled_by")[:HISTORY])
    current = next((row for row in history if row.state in TENANT_DEFAULT_OPEN_STATES), None)
    approvals = list(current.approvals.select_related("approver")) if current else []
    may_request = request_refusal(user) is None and read.enabled is not True
    return {
        "read": read,
        "blockers": blockers,
        "blocked": any(blocker.holds for blocker in blockers),
        "recent": recent,
        "unhealthy": unhealthy,
        "history": history,
        "current": current,
        "approvals": approvals,
        "needed": TENANT_DEFAULT_APPROVALS,
        "may_request": may_request,
        "may_approve": current is not None and approval_refusal(user, current) is None,
        "approve_refusal": approval_refusal(user, current) if current and current.state == "PENDING" else "",
        "may_administer": may(user, Action.PORTAL_CONFIGURE),
        "revert_note": REVERT_NOTE,
        "parameter": ENABLE_PARAMETER,
        "request_form": given.get("request_form") or RequestForm(),
        "approve_form": given.get("approve_form") or ApproveForm(),
        "PENDING": TenantDefaultState.PENDING,
        "FAILED": TenantDefaultState.FAILED,
    }


def _page(request: HttpRequest, **forms_given) -> HttpResponse:
    """The page again with a form's errors (what was typed was refused; nothing changed)."""
    return render(request, "soa/tenant_default.html", _context(request, **forms_given))


@action_required(Action.WAVE_VIEW)
def tenant_default_view(request: HttpRequest) -> HttpResponse:
    if request.htmx:  # the readiness page's card: only the value, without counting the blockers
        read = tenant_default_read()
        return render(request, "soa/tenant_default.html#tenant-default-state", {"read": read})
    return render(request, "soa/tenant_default.html", _context(request))


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def tenant_default_request_view(request: HttpRequest) -> HttpResponse:
    form = RequestForm(request.POST)
    if form.is_valid():
        read = tenant_default_read()  # at most TENANT_DEFAULT_CACHE_SECONDS old; the job reads again before it calls
        try:
            if read.error:
                raise SoaError(f"Exchange Online could not be read ({read.error}); nothing was requested.")
            row = tenant_default_request_create(
                actor=request.user, reason=form.cleaned_data["reason"], tenant_name=read.tenant_name,
                property_name=read.property_name, enabled=read.enabled, blockers=tenant_default_blockers(),
            )  # fmt: skip
        except SoaError as error:
            if error.kind:  # a refusal of the act, not of what was typed: said above the page
                messages.error(request, str(error))
                return redirect("tenant_default")
            form.add_error(None, str(error))
            return _page(request, request_form=form)
        messages.success(request, f"Request #{row.pk} is waiting for {TENANT_DEFAULT_APPROVALS} approvers.")
        return redirect("tenant_default")
    return _page(request, request_form=form)


@require_POST
@action_required(Action.WAVE_APPROVE)
def tenant_default_approve_view(request: HttpRequest, request_id: int) -> HttpResponse:
    form = ApproveForm(request.POST)
    if form.is_valid():
        try:
            row = tenant_default_approve(
                request_id=request_id, actor=request.user, typed_name=form.cleaned_data["typed_name"],
                blockers=tenant_default_blockers(),
            )  # fmt: skip
        except SoaError as error:
            if error.kind:
                messages.error(request, str(error))
                return redirect("tenant_default")
            form.add_error("typed_name", str(error))
            return _page(request, approve_form=form)
        if row.state == TenantDefaultState.QUEUED:
            messages.success(request, "Both approvals are in: the switch is queued and runs in the background.")
        else:
            messages.success(request, "Your approval is recorded; one more approver is needed.")
        return redirect("tenant_default")
    return _page(request, approve_form=form)


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def tenant_default_retry_view(request: HttpRequest, request_id: int) -> HttpResponse:
    try:
        tenant_default_retry(request_id=request_id, actor=request.user, blockers=tenant_default_blockers())
    except SoaError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "The switch is queued again; it reads Exchange Online before it calls.")
    return redirect("tenant_default")


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def tenant_default_cancel_view(request: HttpRequest, request_id: int) -> HttpResponse:
    form = CancelForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        tenant_default_cancel(request_id=request_id, actor=request.user, reason=reason)
    except SoaError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "The request is cancelled; nothing was sent to Exchange Online.")
    return redirect("tenant_default")
