"""Undo from history: the confirm page of an undo (what it restores, and where the value moved on since), and its
submission, which makes new change requests through soa.services.undo (history itself is never changed)."""

import secrets

from django import forms
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from portal.limits import REASON_MAX_LENGTH
from portal.roles import Action, may
from soa.services import SoaError
from soa.services.changes import ChangeConflict, ChangeValidationError
from soa.services.undo import UndoDenied, undo_plans, undo_request_create


class UndoForm(forms.Form):
    reason = forms.CharField(max_length=REASON_MAX_LENGTH, label="Reason")
    acknowledge_conflicts = forms.BooleanField(required=False, label="Restore these values anyway")
    idempotency_key = forms.CharField(max_length=64, widget=forms.HiddenInput)


def _may_undo(request: HttpRequest) -> None:
    if not (may(request.user, Action.PORTAL_CONFIGURE) or may(request.user, Action.MAILBOX_EDIT)):
        raise PermissionDenied("Your roles do not allow undoing edits: that needs mailbox edit, or the admin role.")


def _versions(request: HttpRequest) -> dict[int, int]:
    found = {}
    for name, value in request.POST.items():
        mailbox, number = name.removeprefix("version-"), value.strip()
        if name.startswith("version-") and mailbox.isdigit() and number.isdigit() and len(number) < 12:
            found[int(mailbox)] = int(number)
    return found


def _undo(request: HttpRequest, *, event_id: int | None = None, correlation_id: str = "") -> HttpResponse:
    _may_undo(request)
    target = {"event_id": event_id, "correlation_id": correlation_id}
    context: dict = {"target": target, "errors": []}
    status = 200
    form = UndoForm(request.POST or None, initial={"idempotency_key": secrets.token_urlsafe(24)})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            requests = undo_request_create(
                actor=request.user, event_id=event_id, correlation_id=correlation_id, versions=_versions(request),
                reason=data["reason"], idempotency_key=data["idempotency_key"],
                acknowledge_conflicts=data["acknowledge_conflicts"],
            )  # fmt: skip
        except UndoDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        except ChangeValidationError as exc:
            context["errors"] = [error.message for error in exc.errors]
            status = 400
        except ChangeConflict as exc:
            context["errors"] = [str(exc)]
            status = 409
        except SoaError as exc:
            context["errors"] = [str(exc)]
            status = 400
        else:
            return render(request, "portal/audit_undo.html", {**context, "requests": requests})
    elif request.method == "POST":
        status = 400
    try:
        context["plans"] = undo_plans(actor=request.user, event_id=event_id, correlation_id=correlation_id)
    except UndoDenied as exc:
        raise PermissionDenied(str(exc)) from exc
    except SoaError as exc:
        context["errors"].append(str(exc))
        status = 404 if request.method == "GET" else status
    context["form"] = form
    context["conflicts"] = any(plan.conflicts and plan.operations for plan in context.get("plans", []))
    context["nothing"] = bool(context.get("plans")) and not any(plan.operations for plan in context["plans"])
    return render(request, "portal/audit_undo.html", context, status=status)


@require_http_methods(["GET", "POST"])
def audit_undo(request: HttpRequest, event_id: int) -> HttpResponse:
    """Undo one applied edit (an audit event ``soa.change.applied``)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    return _undo(request, event_id=event_id)


@require_http_methods(["GET", "POST"])
def audit_undo_correlation(request: HttpRequest, correlation_id: str) -> HttpResponse:
    """Undo every edit one correlation id applied (a page's edits, or a bulk edit's lines)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if len(correlation_id) > 64:
        return HttpResponse("Not a correlation id.", status=400, content_type="text/plain")
    return _undo(request, correlation_id=correlation_id)
