"""Pilot-wave pages: the list, the create form, and the wave page where members are chosen, pre-flight is run,
the wave is submitted, withdrawn, cancelled, approved or rejected. Each POST calls one service; the services
enforce every rule, and their refusals are shown to the user."""

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.roles import Action, may
from soa.choices import Decision, WaveState
from soa.forms_waves import (
    ApproveForm,
    CsvMembersForm,
    MemberSearchForm,
    ReasonForm,
    RequiredReasonForm,
    WaveCreateForm,
    WaveFilterForm,
    WaveStateFilterForm,
)
from soa.models import PilotWave
from soa.selectors import mailbox_search, wave_approvals, wave_get, wave_list, wave_members
from soa.services import SoaError
from soa.services.approvals import approval_refusal, wave_approve, wave_reject
from soa.services.wave_members import (
    CsvImportError,
    wave_add_by_filter,
    wave_add_from_csv,
    wave_add_members,
    wave_remove_members,
)
from soa.services.waves import wave_cancel, wave_create, wave_preflight, wave_submit, wave_withdraw

MEMBER_ROWS = 500  # members shown on the page; the counts cover all of them
PICK_ROWS = 50  # search results offered for picking


def _wave_or_404(request: HttpRequest, pk: int) -> PilotWave:
    wave = wave_get(user=request.user, pk=pk)
    if wave is None:
        raise Http404("No such wave.")
    return wave


def _done(request: HttpRequest, wave: PilotWave, text: str) -> HttpResponse:
    messages.success(request, text)
    return redirect("wave_detail", pk=wave.pk)


# -- list and create -------------------------------------------------------------------------------------------


@action_required(Action.WAVE_VIEW)
def wave_list_view(request: HttpRequest) -> HttpResponse:
    form = WaveStateFilterForm(request.GET or None)
    state = form.cleaned_data["state"] if form.is_bound and form.is_valid() else ""
    context = {
        "form": form,
        "waves": wave_list(user=request.user, state=state),
        "filtered": bool(state),
        "can_build": may(request.user, Action.WAVE_BUILD),
    }
    template = "soa/wave_list.html#wave-results" if request.htmx else "soa/wave_list.html"
    return render(request, template, context)


@action_required(Action.WAVE_BUILD)
def wave_create_view(request: HttpRequest) -> HttpResponse:
    form = WaveCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            wave = wave_create(actor=request.user, **form.cleaned_data)
        except SoaError as exc:
            form.add_error(None, str(exc))
        else:
            return _done(request, wave, f"Draft wave “{wave.name}” created; now add its members.")
    return render(request, "soa/wave_create.html", {"form": form})


# -- the wave page ---------------------------------------------------------------------------------------------


def _member_rows(members, live: dict | None) -> list[dict]:
    """Each member with its findings: the live pre-flight's when one was just run, else the frozen ones."""
    rows = []
    for member in members:
        findings = live.get(member.mailbox_id) if live is not None else member.preflight
        rows.append({"member": member, "findings": findings or {}})
    return rows


def _detail_context(request: HttpRequest, wave: PilotWave, *, live_report=None, **forms_given) -> dict:
    user = request.user
    members = wave_members(user=user, wave_id=wave.pk)
    live = None
    report = wave.preflight_report or None
    if live_report is not None:
        live = {pk: findings.as_json() for pk, findings in live_report.members.items()}
        report = live_report.as_json()
    is_draft = wave.state == WaveState.DRAFT
    can_build = may(user, Action.WAVE_BUILD)
    may_approve = may(user, Action.WAVE_APPROVE) and wave.state == WaveState.SUBMITTED
    approve_refusal = approval_refusal(user, wave, decision=Decision.APPROVE) if may_approve else None
    reject_refusal = approval_refusal(user, wave, decision=Decision.REJECT) if may_approve else None
    cancel_action = Action.WAVE_BUILD if wave.state in (WaveState.DRAFT, WaveState.SUBMITTED) else Action.WAVE_RUN
    search = MemberSearchForm(request.GET if is_draft and "q" in request.GET else None)
    picks = None
    if search.is_bound and search.is_valid():
        picks = list(mailbox_search(user=user, **search.selector_filters()).order_by("display_name", "id")[:PICK_ROWS])
    context = {
        "wave": wave,
        "member_total": members.count(),
        "member_rows": _member_rows(members[:MEMBER_ROWS], live),
        "member_limit": MEMBER_ROWS,
        "approvals": wave_approvals(user=user, wave_id=wave.pk),
        "report": report,
        "report_is_live": live_report is not None,
        "can_edit": is_draft and can_build,
        "can_submit": is_draft and can_build,
        "can_withdraw": wave.state == WaveState.SUBMITTED and can_build,
        "can_cancel": wave.state in (WaveState.DRAFT, WaveState.SUBMITTED, WaveState.APPROVED, WaveState.PAUSED)
        and may(user, cancel_action),
        "can_preflight": is_draft,  # a submitted wave shows its frozen report
        "may_decide": may_approve,
        "approve_refusal": approve_refusal,
        "reject_refusal": reject_refusal,
        "search_form": search,
        "picks": picks,
        "filter_form": WaveFilterForm(),
        "csv_form": CsvMembersForm(),
        "approve_form": ApproveForm(),
        "reject_form": RequiredReasonForm(),
        "member_error": None,
        "csv_problems": None,
    }
    context.update(forms_given)
    return context


@action_required(Action.WAVE_VIEW)
def wave_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    template = "soa/wave_detail.html#picker-results" if request.htmx else "soa/wave_detail.html"
    return render(request, template, _detail_context(request, wave))


@action_required(Action.WAVE_VIEW)
def wave_preflight_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Run pre-flight on the wave as it is now (reads only) and show it with each member's findings."""
    wave = _wave_or_404(request, pk)
    try:
        report = wave_preflight(actor=request.user, wave_id=wave.pk)
    except SoaError as exc:
        messages.error(request, str(exc))
        return redirect("wave_detail", pk=wave.pk)
    template = "soa/wave_detail.html#wave-members" if request.htmx else "soa/wave_detail.html"
    return render(request, template, _detail_context(request, wave, live_report=report))


# -- members ---------------------------------------------------------------------------------------------------


def _member_refusal(request: HttpRequest, wave: PilotWave, exc: SoaError, **forms_given) -> HttpResponse:
    wave.refresh_from_db()
    problems = exc.problems if isinstance(exc, CsvImportError) else None
    context = _detail_context(request, wave, member_error=str(exc), csv_problems=problems, **forms_given)
    return render(request, "soa/wave_detail.html", context)


def _added(request: HttpRequest, wave: PilotWave, change) -> HttpResponse:
    text = f"Added {change.changed} mailbox{'es' if change.changed != 1 else ''} to “{wave.name}”."
    if change.unchanged:
        text += f" {change.unchanged} already belonged to it."
    return _done(request, wave, text)


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_add_members_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    try:
        change = wave_add_members(actor=request.user, wave_id=wave.pk, mailbox_ids=request.POST.getlist("mailbox"))
    except SoaError as exc:
        return _member_refusal(request, wave, exc)
    return _added(request, wave, change)


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_add_by_filter_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    form = WaveFilterForm(request.POST)
    if not form.is_valid():
        return _member_refusal(request, wave, SoaError("Check the filters."), filter_form=form)
    try:
        change = wave_add_by_filter(actor=request.user, wave_id=wave.pk, **form.service_filters())
    except SoaError as exc:
        return _member_refusal(request, wave, exc, filter_form=form)
    return _added(request, wave, change)


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_add_from_csv_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    form = CsvMembersForm(request.POST, request.FILES)
    if not form.is_valid():
        return _member_refusal(request, wave, SoaError(" ".join(form.non_field_errors())), csv_form=form)
    try:
        change = wave_add_from_csv(actor=request.user, wave_id=wave.pk, text=form.cleaned_data["text"])
    except SoaError as exc:
        return _member_refusal(request, wave, exc, csv_form=form)
    return _added(request, wave, change)


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_remove_members_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    try:
        change = wave_remove_members(actor=request.user, wave_id=wave.pk, mailbox_ids=request.POST.getlist("mailbox"))
    except SoaError as exc:
        return _member_refusal(request, wave, exc)
    return _done(request, wave, f"Removed {change.changed} member{'s' if change.changed != 1 else ''}.")


# -- state changes with a confirmation step ----------------------------------------------------------------------


def _confirm(request: HttpRequest, pk: int, *, form_class: type[forms.Form], step: dict, perform) -> HttpResponse:
    """GET shows the confirmation; POST performs the step through its service and returns to the wave."""
    wave = _wave_or_404(request, pk)
    form = form_class(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            wave = perform(wave, form.cleaned_data)
        except SoaError as exc:
            form.add_error(None, str(exc))
        else:
            return _done(request, wave, step["done"].format(name=wave.name))
    step = {**step, "title": step["title"].format(name=wave.name)}
    context = {"wave": wave, "form": form, "step": step, "summary": None, "summary_error": None}
    if step.get("preflight") and wave.state == WaveState.DRAFT:
        try:
            context["summary"] = wave_preflight(actor=request.user, wave_id=wave.pk).summary()
        except SoaError as exc:
            context["summary_error"] = str(exc)
    return render(request, "soa/wave_confirm.html", context)


@action_required(Action.WAVE_BUILD)
def wave_submit_view(request: HttpRequest, pk: int) -> HttpResponse:
    step = {
        "title": "Submit wave “{name}” for approval?",
        "text": "Pre-flight runs again and its report is frozen; members with blocking findings are excluded, and "
        "the approvers are emailed. Members cannot change until it is withdrawn.",
        "button": "Submit for approval",
        "done": "Wave “{name}” is submitted for approval.",
        "preflight": True,
    }
    return _confirm(
        request, pk, form_class=forms.Form, step=step,
        perform=lambda wave, data: wave_submit(actor=request.user, wave_id=wave.pk),
    )  # fmt: skip


@action_required(Action.WAVE_BUILD)
def wave_withdraw_view(request: HttpRequest, pk: int) -> HttpResponse:
    step = {
        "title": "Withdraw wave “{name}” to a draft?",
        "text": "The frozen pre-flight report and exclusions are dropped and decisions already given no longer "
        "count; the next submission starts a new approval round.",
        "button": "Withdraw to draft",
        "done": "Wave “{name}” is a draft again.",
    }
    return _confirm(
        request, pk, form_class=ReasonForm, step=step,
        perform=lambda wave, data: wave_withdraw(actor=request.user, wave_id=wave.pk, reason=data["reason"]),
    )  # fmt: skip


@action_required(Action.WAVE_VIEW)
def wave_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    step = {
        "title": "Cancel wave “{name}”?",
        "text": "A cancelled wave never runs and cannot be reopened; members that have not started are skipped.",
        "button": "Cancel the wave",
        "danger": True,
        "done": "Wave “{name}” is cancelled.",
    }
    return _confirm(
        request, pk, form_class=RequiredReasonForm, step=step,
        perform=lambda wave, data: wave_cancel(actor=request.user, wave_id=wave.pk, reason=data["reason"]),
    )  # fmt: skip


# -- decisions -------------------------------------------------------------------------------------------------


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_approve_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    form = ApproveForm(request.POST)
    if form.is_valid():
        try:
            wave = wave_approve(
                actor=request.user, wave_id=wave.pk, reason=form.cleaned_data["reason"],
                acknowledge_warnings=form.cleaned_data["acknowledge_warnings"],
            )  # fmt: skip
        except SoaError as exc:
            form.add_error(None, str(exc))
        else:
            return _done(
                request, wave, f"Your approval of “{wave.name}” is recorded; it is {wave.get_state_display()}."
            )
    return render(request, "soa/wave_detail.html", _detail_context(request, wave, approve_form=form))


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_reject_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    form = RequiredReasonForm(request.POST)
    if form.is_valid():
        try:
            wave = wave_reject(actor=request.user, wave_id=wave.pk, reason=form.cleaned_data["reason"])
        except SoaError as exc:
            form.add_error(None, str(exc))
        else:
            return _done(request, wave, f"Wave “{wave.name}” is rejected.")
    return render(request, "soa/wave_detail.html", _detail_context(request, wave, reject_form=form))
