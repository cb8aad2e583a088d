"""Bulk edit pages: upload a CSV file, read its preview (every bad line by number), confirm with a reason, then watch
the batch's progress (polled) and pause, resume or cancel it.

The file is read line by line from the upload (soa.bulk_csv.text_lines, bounded by BULK_CHANGE_MAX_BYTES) and checked
with nothing written; the confirmation carries the file's text back and the service checks it all again before it
records anything, so the preview only informs. A submission key made when the preview is rendered makes a
confirmation sent twice one batch."""

import uuid

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.limits import REASON_MAX_LENGTH, too_long
from portal.roles import Action, may
from soa.bulk_csv import OPERATION_HELP, BulkInputError, bulk_preview, text_lines
from soa.models import ChangeBatch, ChangeBatchLine
from soa.services import SoaError
from soa.services.change_batches import (
    BulkLinesError,
    batch_control_refusal,
    batch_progress,
    batch_stalled_since,
    batch_visible,
    change_batch_cancel,
    change_batch_create,
    change_batch_pause,
    change_batch_resume,
)
from writeback.jobs.change_batches import STALE_AFTER

PREVIEW_ROWS = 200  # good lines listed on the preview; the counts cover all of them
PROBLEM_ROWS = 100  # bad lines listed; the count covers all of them


class BulkUploadForm(forms.Form):
    file = forms.FileField(label="CSV file", error_messages={"required": "Choose a CSV file to upload."})


class BulkConfirmForm(forms.Form):
    text = forms.CharField(widget=forms.HiddenInput, strip=False)
    file_name = forms.CharField(widget=forms.HiddenInput, required=False, max_length=255)
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)
    reason = forms.CharField(required=False, max_length=REASON_MAX_LENGTH, label="Reason for these changes",
                             widget=forms.Textarea(attrs={"rows": 2}))  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = settings.CHANGE_REASON_REQUIRED
        if settings.CHANGE_REASON_REQUIRED:
            self.fields["reason"].label = "Reason for these changes (required)"
        self.fields["reason"].error_messages["required"] = "Give a reason for these changes; it goes in the history."


def _recent(user) -> list[ChangeBatch]:
    batches = ChangeBatch.objects.select_related("created_by")
    if not may(user, Action.PORTAL_CONFIGURE):
        batches = batches.filter(created_by=user)
    return list(batches[:20])


def _upload_page(request: HttpRequest, **context) -> HttpResponse:
    context.setdefault("form", BulkUploadForm())
    context.update(
        recent=_recent(request.user), can_upload=may(request.user, Action.BULK_EDIT),
        max_lines=settings.BULK_CHANGE_MAX_LINES, max_kb=settings.BULK_CHANGE_MAX_BYTES // 1024,
        operations=OPERATION_HELP,
    )  # fmt: skip
    return render(request, "soa/bulk_upload.html", context)


@login_required
def bulk_upload_view(request: HttpRequest) -> HttpResponse:
    """The upload form (``bulk_edit``: help desk and operators) and the recent batches: the user's own, or
    everyone's for an admin."""
    if not (may(request.user, Action.BULK_EDIT) or may(request.user, Action.PORTAL_CONFIGURE)):
        raise PermissionDenied("Your roles do not allow bulk edits.")
    return _upload_page(request)


def _preview_context(preview, **context) -> dict:
    return {
        "preview": preview,
        "lines": preview.lines[:PREVIEW_ROWS],
        "problems": preview.problems[:PROBLEM_ROWS],
        **context,
    }


@require_POST
@action_required(Action.BULK_EDIT)
def bulk_preview_view(request: HttpRequest) -> HttpResponse:
    form = BulkUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _upload_page(request, form=form)
    upload = form.cleaned_data["file"]
    read: list[str] = []

    def remember(lines):
        for line in lines:
            read.append(line)
            yield line

    try:
        preview = bulk_preview(user=request.user, lines=remember(text_lines(upload)))
    except BulkInputError as exc:
        form.add_error("file", str(exc))
        return _upload_page(request, form=form)
    confirm = BulkConfirmForm(
        initial={"text": "\n".join(read), "file_name": upload.name, "idempotency_key": uuid.uuid4().hex}
    )
    return render(request, "soa/bulk_preview.html", _preview_context(preview, confirm=confirm, file_name=upload.name))


@require_POST
@action_required(Action.BULK_EDIT)
def bulk_confirm_view(request: HttpRequest) -> HttpResponse:
    confirm = BulkConfirmForm(request.POST)
    if not confirm.is_valid():
        text = confirm.data.get("text", "")
        if confirm.errors.keys() - {"reason"} or len(text.encode()) > settings.BULK_CHANGE_MAX_BYTES:
            return _upload_page(request, input_error="The confirmation was incomplete; upload the file again.")
        try:
            preview = bulk_preview(user=request.user, lines=text.splitlines())
        except BulkInputError as exc:
            return _upload_page(request, input_error=str(exc))
        return render(
            request,
            "soa/bulk_preview.html",
            _preview_context(preview, confirm=confirm, file_name=confirm.data.get("file_name")),
        )
    data = confirm.cleaned_data
    if len(data["text"].encode()) > settings.BULK_CHANGE_MAX_BYTES:
        return _upload_page(request, input_error="The file is too large; split it into several files.")
    try:
        batch = change_batch_create(
            actor=request.user, lines=data["text"].splitlines(), file_name=data["file_name"], reason=data["reason"],
            idempotency_key=data["idempotency_key"],
        )  # fmt: skip
    except BulkLinesError as exc:
        messages.error(request, str(exc))
        return render(request, "soa/bulk_preview.html",
                      _preview_context(exc.preview, confirm=confirm, file_name=data["file_name"]))  # fmt: skip
    except SoaError as exc:
        return _upload_page(request, input_error=str(exc))
    messages.success(request, f"Bulk edit #{batch.pk} is queued: {batch.line_count} changes.")
    return redirect("bulk_detail", pk=batch.pk)


def _batch_or_404(request: HttpRequest, pk: int) -> ChangeBatch:
    """The batch, for its owner or an administrator; 404 for anyone else (whether it exists is not said)."""
    batch = ChangeBatch.objects.select_related("created_by").filter(pk=pk).first()
    if batch is None or not batch_visible(request.user, batch):
        raise Http404("No such bulk edit.")
    return batch


def _detail_context(request: HttpRequest, batch: ChangeBatch) -> dict:
    controls = {
        name: batch_control_refusal(request.user, batch, target) is None
        for name, target in (("pause", "PAUSED"), ("resume", "RUNNING"), ("cancel", "CANCELLED"))
    }
    failures = (
        ChangeBatchLine.objects.filter(batch=batch)
        .exclude(error="", request__error="")
        .exclude(error="", request=None)
        .select_related("mailbox", "request")
        .order_by("number")[:100]
    )
    stalled_since = batch_stalled_since(batch, before=timezone.now() - STALE_AFTER)
    return {"batch": batch, "progress": batch_progress(batch), "controls": controls, "failures": failures,
            "stalled_since": stalled_since}  # fmt: skip


@login_required
def bulk_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    batch = _batch_or_404(request, pk)
    template = "soa/bulk_detail.html#batch-progress" if request.htmx else "soa/bulk_detail.html"
    return render(request, template, _detail_context(request, batch))


def _control(service, request: HttpRequest, pk: int, done: str) -> HttpResponse:
    batch = _batch_or_404(request, pk)
    reason = request.POST.get("reason", "")
    if problem := too_long(reason, REASON_MAX_LENGTH, "The reason"):
        return HttpResponseBadRequest(problem, content_type="text/plain; charset=utf-8")
    try:
        service(actor=request.user, batch_id=batch.pk, reason=reason)
        messages.success(request, done)
    except SoaError as exc:
        messages.error(request, str(exc))
    return redirect("bulk_detail", pk=batch.pk)


@require_POST
@login_required
def bulk_pause_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(change_batch_pause, request, pk, "Paused: no new change is made until you resume.")


@require_POST
@login_required
def bulk_resume_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(change_batch_resume, request, pk, "Resumed.")


@require_POST
@login_required
def bulk_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(change_batch_cancel, request, pk, "Cancelled: the remaining lines will not be made.")
