"""Choosing a draft wave's members on its page: picked from a search, by filter, from a CSV list, and removing them.

Each POST calls one service of soa.services.wave_members. A refusal re-renders the wave page with the reason (and a
CSV list's first bad lines, with a count of the rest) and answers 400, 403 or 409 (soa.views_waves.refusal_status).
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.roles import Action
from soa.forms_waves import CsvMembersForm, WaveFilterForm
from soa.models import PilotWave
from soa.services import SoaError
from soa.services.wave_members import (
    CsvImportError,
    wave_add_by_filter,
    wave_add_from_csv,
    wave_add_members,
    wave_remove_members,
)
from soa.views_waves import detail_context, refusal_status, wave_done, wave_or_404


def _member_refusal(request: HttpRequest, wave: PilotWave, exc: SoaError, **forms_given) -> HttpResponse:
    wave.refresh_from_db()
    if isinstance(exc, CsvImportError):  # the lines are listed in a table under a one-line summary
        error, problems, problem_count = f"{exc.summary}.", exc.problems, exc.problem_count
    else:
        error, problems, problem_count = str(exc), None, 0
    context = detail_context(
        request, wave, member_error=error, csv_problems=problems, csv_problem_count=problem_count, **forms_given
    )
    return render(request, "soa/wave_detail.html", context, status=refusal_status(exc))


def _change_members(
    request: HttpRequest, wave: PilotWave, service, outcome: str, fields: dict, **forms_given
) -> HttpResponse:
    try:
        change = service(actor=request.user, wave_id=wave.pk, **fields)
    except SoaError as exc:
        return _member_refusal(request, wave, exc, **forms_given)
    return wave_done(request, wave, outcome, change=change)


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_add_members_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave, ids = wave_or_404(request, pk), request.POST.getlist("mailbox")
    return _change_members(request, wave, wave_add_members, "added", {"mailbox_ids": ids})


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_add_by_filter_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave, form = wave_or_404(request, pk), WaveFilterForm(request.POST)
    if not form.is_valid():
        return _member_refusal(request, wave, SoaError("Check the filters."), filter_form=form)
    return _change_members(request, wave, wave_add_by_filter, "added", form.service_filters(), filter_form=form)


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_add_from_csv_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave, form = wave_or_404(request, pk), CsvMembersForm(request.POST, request.FILES)
    if not form.is_valid():
        errors = [*form.non_field_errors(), *(e for field in form.errors.values() for e in field)]
        return _member_refusal(request, wave, SoaError(" ".join(dict.fromkeys(errors))), csv_form=form)
    return _change_members(request, wave, wave_add_from_csv, "added", {"text": form.lines()}, csv_form=form)


@require_POST
@action_required(Action.WAVE_VIEW)
def wave_remove_members_view(request: HttpRequest, pk: int) -> HttpResponse:
    wave, ids = wave_or_404(request, pk), request.POST.getlist("mailbox")
    return _change_members(request, wave, wave_remove_members, "removed", {"mailbox_ids": ids})
