"""Pilot-wave pages: the list, the create form, and the wave page where members are chosen, pre-flight is run,
the wave is submitted, withdrawn, cancelled, approved or rejected, then started, paused, resumed and watched.
Each POST calls one service; the services enforce every rule, and their refusals are shown to the user."""

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

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
    members_outside_scope,
    wave_add_by_filter,
    wave_add_from_csv,
    wave_add_members,
    wave_remove_members,
)
from soa.services.wave_rollback import ROLLBACK_SOURCE_STATES, wave_rollback_create
from soa.services.wave_run import (
    RETRYABLE_WAVE_STATES,
    wave_member_retry,
    wave_pause,
    wave_resume,
    wave_start,
    window_refusal,
)
from soa.services.waves import wave_cancel, wave_create, wave_preflight, wave_submit, wave_withdraw
from soa.wave_progress import wave_progress

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


# States in which the running controls apply: before them a wave cannot run, after them it never runs again.
RUN_STATES = frozenset({WaveState.APPROVED, WaveState.RUNNING, WaveState.PAUSED})


def _progress_context(request: HttpRequest, wave: PilotWave) -> dict:
    """What the progress partial needs; shared by the full page and the polled partial so both show the same."""
    may_run = may(request.user, Action.WAVE_RUN)
    return {
        "wave": wave,
        # A wave that never started has nothing to show; a cancelled approved wave never started either.
        "progress": wave_progress(user=request.user, wave=wave) if wave.started_at else None,
        "can_retry": may_run and wave.state in RETRYABLE_WAVE_STATES,
    }


def _run_context(request: HttpRequest, wave: PilotWave) -> dict:
    """The running controls the user may use on this wave now, and why Start is not offered when it is not.
    The services check all of it again on POST; this only decides which buttons to show."""
    may_run = may(request.user, Action.WAVE_RUN) and wave.state in RUN_STATES
    outside = members_outside_scope(request.user, wave, Action.WAVE_RUN) if may_run else []
    in_scope = may_run and not outside
    window = window_refusal(wave, timezone.now()) if wave.state in (WaveState.APPROVED, WaveState.PAUSED) else ""
    return {
        **_progress_context(request, wave),
        "scope_refusal": (
            f"{len(outside)} member{'s are' if len(outside) != 1 else ' is'} outside your scope for running waves, "
            "so you cannot start or resume this wave."
        )
        if outside
        else "",
        "window_refusal": window if may_run else "",
        "can_start": in_scope and wave.state == WaveState.APPROVED and not window,
        "can_pause": may_run and wave.state == WaveState.RUNNING,
        "can_resume": in_scope and wave.state == WaveState.PAUSED and not window,
        # wave_cancel refuses a running wave: it must be paused first so no flip is cut short.
        "cancel_needs_pause": may_run and wave.state == WaveState.RUNNING,
    }


def _rollback_context(request: HttpRequest, wave: PilotWave) -> dict:
    """The waves this one reverses or is reversed by, and whether the user may start a rollback of it now (the
    service refuses again, with its reason, when an open rollback exists or a moved mailbox is out of scope)."""
    rollbacks = list(wave.rollbacks.order_by("id"))
    finished = wave.state in ROLLBACK_SOURCE_STATES
    return {
        "rollbacks": rollbacks,
        "can_rollback": finished
        and may(request.user, Action.WAVE_BUILD)
        and not any(rollback.is_open for rollback in rollbacks),
    }


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
        "show_run_columns": wave.started_at is not None,
        **_run_context(request, wave),
        **_rollback_context(request, wave),
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
    direction = wave.get_direction_display()
    facts = {"direction": direction[:1].lower() + direction[1:], "batch": wave.batch_size, "rate": wave.max_rate}
    step = {**step, "title": step["title"].format(name=wave.name), "text": step["text"].format(**facts)}
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


# -- running ---------------------------------------------------------------------------------------------------


@require_GET
@action_required(Action.WAVE_VIEW)
def wave_progress_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The progress partial the wave page polls while the wave runs. When the run has ended (or paused with
    nothing in flight) the partial comes back without its polling trigger, and the page reloads once so its
    state, buttons and member table catch up with what the runner did."""
    wave = _wave_or_404(request, pk)
    if not request.htmx:
        return redirect("wave_detail", pk=wave.pk)  # the full page shows the same numbers
    context = _progress_context(request, wave)
    response = render(request, "soa/wave_detail.html#wave-progress", context)
    if context["progress"] is None or not context["progress"].live:
        response["HX-Refresh"] = "true"
    return response


@action_required(Action.WAVE_RUN)
def wave_start_view(request: HttpRequest, pk: int) -> HttpResponse:
    step = {
        "title": "Start wave “{name}” now?",
        "text": "The Exchange-attribute authority of its members moves {direction}, in batches of {batch} at most "
        "{rate:g} per second; each mailbox's authority changes as soon as it is flipped. Pausing stops the run after "
        "the member being flipped.",
        "button": "Start the wave",
        "done": "Wave “{name}” is running; its first batch is queued.",
    }
    return _confirm(
        request, pk, form_class=forms.Form, step=step,
        perform=lambda wave, data: wave_start(actor=request.user, wave_id=wave.pk),
    )  # fmt: skip


def _refused(request: HttpRequest, wave: PilotWave, exc: SoaError) -> HttpResponse:
    messages.error(request, str(exc))
    return redirect("wave_detail", pk=wave.pk)


@require_POST
@action_required(Action.WAVE_RUN)
def wave_pause_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    form = ReasonForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        wave = wave_pause(actor=request.user, wave_id=wave.pk, reason=reason)
    except SoaError as exc:
        return _refused(request, wave, exc)
    return _done(request, wave, f"Wave “{wave.name}” is paused; the member being flipped finishes first.")


@require_POST
@action_required(Action.WAVE_RUN)
def wave_resume_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    try:
        wave = wave_resume(actor=request.user, wave_id=wave.pk)
    except SoaError as exc:
        return _refused(request, wave, exc)
    return _done(request, wave, f"Wave “{wave.name}” is running again; its next batch is queued.")


@require_POST
@action_required(Action.WAVE_RUN)
def wave_member_retry_view(request: HttpRequest, pk: int, member_id: int) -> HttpResponse:
    wave = _wave_or_404(request, pk)
    if not wave_members(user=request.user, wave_id=wave.pk).filter(pk=member_id).exists():
        raise Http404("No such member in this wave.")
    try:
        member = wave_member_retry(actor=request.user, member_id=member_id)
    except SoaError as exc:
        return _refused(request, wave, exc)
    queued = " and queued" if wave.state == WaveState.RUNNING else "; it runs when the wave is resumed"
    return _done(request, wave, f"{member.mailbox.upn} is pending again{queued}.")


@action_required(Action.WAVE_BUILD)
def wave_rollback_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm, then create a draft wave moving the finished wave's mailboxes back; it opens on the new wave."""
    step = {
        "title": "Create a rollback wave for “{name}”?",
        "text": "A new draft wave takes every mailbox this wave moved and moves it back, with the same approvals and "
        "throttle. Nothing changes until that wave is pre-flighted, submitted, approved by someone else and run. "
        "A mailbox moving back to Active Directory has its Exchange attributes copied from the cloud into AD, and "
        "checked there, before its authority goes back, so edits made in the cloud are kept.",
        "button": "Create rollback wave",
        "done": "Draft wave “{name}” created; run pre-flight, then submit it for approval.",
    }
    return _confirm(
        request, pk, form_class=forms.Form, step=step,
        perform=lambda wave, data: wave_rollback_create(actor=request.user, wave_id=wave.pk),
    )  # fmt: skip
