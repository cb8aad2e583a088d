"""Choosing a draft wave's members on its page: picked from a search, by filter, from a CSV list, and removing them;
and every member's result as CSV.

Each POST calls one service of soa.services.wave_members. A refusal re-renders the wave page with the reason (and a
CSV list's first bad lines, with a count of the rest) and answers 400, 403 or 409 (soa.views_waves.refusal_status).
"""

from django.db import transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST

from portal.audit import audit_record
from portal.csv_stream import csv_lines
from portal.decorators import action_required
from portal.roles import Action
from soa.forms_waves import CsvMembersForm, WaveFilterForm
from soa.models import PilotWave
from soa.selectors import wave_members
from soa.services import SoaError
from soa.services.wave_members import (
    CsvImportError,
    wave_add_by_filter,
    wave_add_by_filter_preview,
    wave_add_from_csv,
    wave_add_members,
    wave_remove_members,
)
from soa.views_waves import detail_context, refusal_status, wave_done, wave_or_404

RESULT_HEADER = ["upn", "display_name", "primary_smtp", "state", "excluded", "attempts", "started_at", "finished_at",
                 "last_error"]  # fmt: skip


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
    """First says how many mailboxes the filters match and asks to confirm; the confirmed form adds them."""
    wave, form = wave_or_404(request, pk), WaveFilterForm(request.POST)
    if not form.is_valid():
        return _member_refusal(request, wave, SoaError("Check the filters."), filter_form=form)
    if request.POST.get("confirmed") != "1":
        try:
            preview = wave_add_by_filter_preview(actor=request.user, wave_id=wave.pk, **form.service_filters())
        except SoaError as exc:
            return _member_refusal(request, wave, exc, filter_form=form)
        return render(request, "soa/wave_detail.html", detail_context(request, wave, filter_form=form,
                                                                         filter_preview=preview))  # fmt: skip
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


@action_required(Action.WAVE_VIEW)
def wave_results_export_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Every member of the wave with its state and result, as CSV, streamed; the export is recorded."""
    wave = wave_or_404(request, pk)
    with transaction.atomic():
        audit_record(actor=request.user, action="soa.wave.exported", obj=wave, after={"members": wave.members.count()})

    def rows():
        for member in wave_members(user=request.user, wave_id=wave.pk).iterator(chunk_size=2000):
            mailbox = member.mailbox
            yield [mailbox.upn, mailbox.display_name, mailbox.primary_smtp, member.state, member.excluded,
                   member.attempts, _when(member.started_at), _when(member.finished_at), member.last_error]  # fmt: skip

    response = StreamingHttpResponse(csv_lines(RESULT_HEADER, rows()), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="soa-wave-{wave.pk}-results-{stamp}.csv"'
    return response


def _when(moment) -> str:
    return moment.isoformat() if moment else ""
