"""Pilot-wave pages: the list, the create form, and the wave page where members are chosen, pre-flight is run,
the wave is submitted, withdrawn, cancelled, approved or rejected, then started, paused, resumed and watched (its
members are chosen in soa.views_wave_members).

Which actions the page offers, and why it withholds the others, comes from soa.wave_actions, built on the refusal
functions the services raise on. Each POST calls one service and shows its refusal with the status that says what
kind it is (refusal_status): never a 200 for an action that was not taken. Confirmations and outcomes are worded in
soa/wave_confirm.html and soa/wave_messages.html."""

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from portal.decorators import action_required
from portal.roles import Action, may
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
from soa.selectors import mailbox_search, wave_approvals, wave_get, wave_history, wave_list, wave_members
from soa.services import Refusal, SoaError
from soa.services.approvals import wave_approve, wave_reject
from soa.services.wave_rollback import wave_rollback_create
from soa.services.wave_run import wave_member_retry, wave_pause, wave_resume, wave_start
from soa.services.waves import wave_cancel, wave_create, wave_preflight, wave_submit, wave_withdraw
from soa.wave_actions import wave_actions
from soa.wave_progress import wave_progress

MEMBER_ROWS = 500  # members shown on the page; the counts cover all of them
HISTORY_ROWS = 200  # the wave's own events shown in its history
PICK_ROWS = 50  # search results offered for picking


def wave_or_404(request: HttpRequest, pk: int) -> PilotWave:
    wave = wave_get(user=request.user, pk=pk)
    if wave is None:
        raise Http404("No such wave.")
    return wave


def wave_done(request: HttpRequest, wave: PilotWave, outcome: str, **facts) -> HttpResponse:
    """Say what just happened (worded by the ``outcome`` partial of soa/wave_messages.html) on the wave's page."""
    text = render_to_string(f"soa/wave_messages.html#{outcome}", {"wave": wave, **facts}, request=request)
    messages.success(request, " ".join(text.split()))
    return redirect("wave_detail", pk=wave.pk)


def refusal_status(exc: SoaError) -> int:
    """The status of a refused service call: 403 when the user may not (their roles, or a rule about them: scope,
    four-eyes), 409 when the wave's state or a rule of the action stops it now, 400 when what was sent is wrong."""
    return {Refusal.ROLE: 403, Refusal.ACTOR: 403, Refusal.STATE: 409, Refusal.RULE: 409}.get(exc.kind, 400)


def _refused(request: HttpRequest, wave: PilotWave, exc: SoaError) -> HttpResponse:
    """The wave page as it is now, with the refusal on top, under the refusal's status."""
    messages.error(request, str(exc))
    wave.refresh_from_db()
    return render(request, "soa/wave_detail.html", detail_context(request, wave), status=refusal_status(exc))


# -- list and create -------------------------------------------------------------------------------------------


@action_required(Action.WAVE_VIEW)
def wave_list_view(request: HttpRequest) -> HttpResponse:
    form = WaveStateFilterForm(request.GET or None)
    valid = form.is_bound and form.is_valid()
    state = form.cleaned_data["state"] if valid else ""
    mine = form.cleaned_data["mine"] if valid else False
    context = {
        "form": form,
        "waves": wave_list(user=request.user, state=state, mine=mine),
        "filtered": bool(state or mine),
        "can_build": may(request.user, Action.WAVE_BUILD),
    }
    template = "soa/wave_list.html#wave-results" if request.htmx else "soa/wave_list.html"
    return render(request, template, context)


@action_required(Action.WAVE_BUILD)
def wave_create_view(request: HttpRequest) -> HttpResponse:
    form, status = WaveCreateForm(request.POST or None), 200
    if request.method == "POST" and form.is_valid():
        try:
            wave = wave_create(actor=request.user, **form.cleaned_data)
        except SoaError as exc:
            form.add_error(None, str(exc))
            status = refusal_status(exc)
        else:
            return wave_done(request, wave, "created")
    return render(request, "soa/wave_create.html", {"form": form}, status=status)


# -- the wave page ---------------------------------------------------------------------------------------------


def _member_rows(members, live: dict | None) -> list[dict]:
    """Each member with its findings: the live pre-flight's when one was just run, else the frozen ones."""
    return [{"member": m, "findings": (m.preflight if live is None else live.get(m.mailbox_id)) or {}} for m in members]


def _progress(request: HttpRequest, wave: PilotWave):
    # A wave that never started has nothing to show; a cancelled approved wave never started either.
    return wave_progress(user=request.user, wave=wave) if wave.started_at else None


def detail_context(request: HttpRequest, wave: PilotWave, *, live_report=None, **given) -> dict:
    user = request.user
    members = wave_members(user=user, wave_id=wave.pk)
    actions = wave_actions(user=user, wave=wave)
    live, report = None, wave.preflight_report or None
    if live_report is not None:
        live = {pk: findings.as_json() for pk, findings in live_report.members.items()}
        report = live_report.as_json()
    search = MemberSearchForm(request.GET if actions["edit_members"] and "q" in request.GET else None)
    history = list(wave_history(user=user, wave_id=wave.pk)[: HISTORY_ROWS + 1])
    picks = None
    if search.is_bound and search.is_valid():
        picks = list(mailbox_search(user=user, **search.selector_filters()).order_by("display_name", "id")[:PICK_ROWS])
    context = {
        "wave": wave,
        "actions": actions,
        "progress": _progress(request, wave),
        "rollbacks": list(wave.rollbacks.order_by("id")),
        "member_total": members.count(),
        "member_rows": _member_rows(members[:MEMBER_ROWS], live),
        "member_limit": MEMBER_ROWS,
        "approvals": wave_approvals(user=user, wave_id=wave.pk),
        "history": history[:HISTORY_ROWS],
        "history_more": len(history) > HISTORY_ROWS,
        "report": report,
        "report_is_live": live_report is not None,
        "search_form": search,
        "picks": picks,
        "filter_form": WaveFilterForm(),
        "csv_form": CsvMembersForm(),
        "approve_form": ApproveForm(),
        "reject_form": RequiredReasonForm(),
    }
    return {**context, **given}


@action_required(Action.WAVE_VIEW)
def wave_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave = wave_or_404(request, pk)
    template = "soa/wave_detail.html#picker-results" if request.htmx else "soa/wave_detail.html"
    return render(request, template, detail_context(request, wave))


@action_required(Action.WAVE_VIEW)
def wave_preflight_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Run pre-flight on the wave as it is now (reads only) and show it with each member's findings."""
    wave = wave_or_404(request, pk)
    try:
        report = wave_preflight(actor=request.user, wave_id=wave.pk)
    except SoaError as exc:
        return _refused(request, wave, exc)
    template = "soa/wave_detail.html#wave-members" if request.htmx else "soa/wave_detail.html"
    return render(request, template, detail_context(request, wave, live_report=report))


# -- steps with a confirmation page ------------------------------------------------------------------------------


def _confirm(request: HttpRequest, pk: int, step: str, form_class: type[forms.Form], service) -> HttpResponse:
    """GET shows the confirmation of ``step`` (a wave_actions name), or why it cannot be taken now; POST calls
    ``service`` with the form's fields and returns to the wave it gives back (a rollback opens the new wave)."""
    wave, status = wave_or_404(request, pk), 200
    form = form_class(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            wave = service(actor=request.user, wave_id=wave.pk, **form.cleaned_data)
        except SoaError as exc:
            form.add_error(None, str(exc))
            status = refusal_status(exc)
        else:
            return wave_done(request, wave, step)
    context = {"wave": wave, "form": form, "step": step, "refusal": "", "summary": None, "summary_error": None}
    if request.method == "GET":
        allowed = wave_actions(user=request.user, wave=wave, only=[step])[step]
        context["refusal"] = allowed.reason
        if step == "submit" and allowed:  # what the frozen report would say, before committing to it
            try:
                context["summary"] = wave_preflight(actor=request.user, wave_id=wave.pk).summary()
            except SoaError as exc:
                context["summary_error"] = str(exc)
    return render(request, "soa/wave_confirm.html", context, status=status)


@action_required(Action.WAVE_BUILD)
def wave_submit_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirm(request, pk, "submit", forms.Form, wave_submit)


@action_required(Action.WAVE_BUILD)
def wave_withdraw_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirm(request, pk, "withdraw", ReasonForm, wave_withdraw)


@action_required(Action.WAVE_VIEW)  # builders cancel drafts and submissions, runners approved and paused waves
def wave_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirm(request, pk, "cancel", RequiredReasonForm, wave_cancel)


@action_required(Action.WAVE_RUN)
def wave_start_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirm(request, pk, "start", forms.Form, wave_start)


@action_required(Action.WAVE_BUILD)
def wave_rollback_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm, then create a draft wave moving the finished wave's mailboxes back; it opens on the new wave."""
    return _confirm(request, pk, "rollback", forms.Form, wave_rollback_create)


# -- decisions -------------------------------------------------------------------------------------------------


def _decide(request: HttpRequest, pk: int, form_name: str, form_class, service, outcome: str) -> HttpResponse:
    """Record a decision through ``service``; a refusal shows on the wave page, in the form that was sent."""
    wave, form, status = wave_or_404(request, pk), form_class(request.POST), 200
    if form.is_valid():
        try:
            wave = service(actor=request.user, wave_id=wave.pk, **form.cleaned_data)
        except SoaError as exc:
            form.add_error(None, str(exc))
            status = refusal_status(exc)
        else:
            return wave_done(request, wave, outcome)
    return render(request, "soa/wave_detail.html", detail_context(request, wave, **{form_name: form}), status=status)


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_approve_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "approve_form", ApproveForm, wave_approve, "approved")


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_reject_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "reject_form", RequiredReasonForm, wave_reject, "rejected")


# -- running ---------------------------------------------------------------------------------------------------


@require_GET
@action_required(Action.WAVE_VIEW)
def wave_progress_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The progress partial the wave page polls while the wave runs. When the run has ended (or paused with
    nothing in flight) the partial comes back without its polling trigger, and the page reloads once so its
    state, buttons and member table catch up with what the runner did."""
    wave = wave_or_404(request, pk)
    if not request.htmx:
        return redirect("wave_detail", pk=wave.pk)  # the full page shows the same numbers
    progress, actions = _progress(request, wave), wave_actions(user=request.user, wave=wave, only=["retry_member"])
    response = render(
        request, "soa/wave_detail.html#wave-progress", {"wave": wave, "progress": progress, "actions": actions}
    )
    if progress is None or not progress.live:
        response["HX-Refresh"] = "true"
    return response


@require_GET
@action_required(Action.WAVE_VIEW)
def wave_members_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The members table the wave page polls while the wave runs (every MEMBERS_POLL seconds), so each member's state
    and last error follow the run."""
    wave = wave_or_404(request, pk)
    if not request.htmx:
        return redirect("wave_detail", pk=wave.pk)
    return render(request, "soa/wave_detail.html#wave-members", detail_context(request, wave))


def _run_step(request: HttpRequest, pk: int, service, outcome: str, **fields) -> HttpResponse:
    wave = wave_or_404(request, pk)
    try:
        wave = service(actor=request.user, wave_id=wave.pk, **fields)
    except SoaError as exc:
        return _refused(request, wave, exc)
    return wave_done(request, wave, outcome)


@require_POST
@action_required(Action.WAVE_RUN)
def wave_pause_view(request: HttpRequest, pk: int) -> HttpResponse:
    form = ReasonForm(request.POST)
    if not form.is_valid():
        wave = wave_or_404(request, pk)
        return _refused(request, wave, SoaError(" ".join(e for errors in form.errors.values() for e in errors)))
    return _run_step(request, pk, wave_pause, "paused", reason=form.cleaned_data["reason"])


@require_POST
@action_required(Action.WAVE_RUN)
def wave_resume_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _run_step(request, pk, wave_resume, "resumed")


@require_POST
@action_required(Action.WAVE_RUN)
def wave_member_retry_view(request: HttpRequest, pk: int, member_id: int) -> HttpResponse:
    wave = wave_or_404(request, pk)
    if not wave_members(user=request.user, wave_id=wave.pk).filter(pk=member_id).exists():
        raise Http404("No such member in this wave.")
    try:
        member = wave_member_retry(actor=request.user, member_id=member_id)
    except SoaError as exc:
        return _refused(request, wave, exc)
    return wave_done(request, wave, "retried", member=member)
