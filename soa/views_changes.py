"""Editing on the mailbox page: the help desk's edit of one attribute row (editor, preview, confirmation), and the
page's "Changes" card where requests are followed, approved, rejected or cancelled.

Each edit goes editor (GET) -> preview (POST, writes nothing: soa.change_preview) -> confirmation (POST, one call of
change_request_create). The editor opens inside its attribute's row, so every step answers with the attributes card
(``soa/mailbox_detail.html#exchange-attributes``) or, without JavaScript, the whole page from the same context. The
Changes card (``#mailbox-changes``) polls while a request is open; forms in it are reached by a GET step that stops
the polling, so a poll never wipes a reason being typed. Who may do what is the services' answer (``may`` for the
editor, the ``*_refusal`` functions for decisions and cancelling); a refused POST is refused by the service itself.
"""

import contextlib
import secrets
from typing import NoReturn
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.roles import Action, OutsideScope, may
from portal.views.writeback import writeback_card_context
from soa.attributes import BY_EXO, EXCHANGE_ATTRIBUTES, IDENTITY_ATTRIBUTES
from soa.change_preview import change_preview, preview_rows
from soa.choices import CHANGE_OPEN_STATES, Authority, ChangeOperation, ChangeState
from soa.forms_changes import EDIT_FIELDS, ChangeForm, DecisionForm
from soa.models import ChangeRequest, Mailbox
from soa.selectors import change_requests_for, mailbox_get
from soa.services import Refusal, SoaError
from soa.services.changes import (
    ChangeConflict,
    ChangeValidationError,
    change_cancel_refusal,
    change_decision_refusal,
    change_request_approve,
    change_request_cancel,
    change_request_create,
    change_request_reject,
)
from soa.validation import EMAIL_ADDRESSES, PRIMARY_ADDRESS
from writeback.models import WritebackTask
from writeback.selectors import writeback_tasks_of

CHANGE_ROWS = 20  # requests listed on the page, newest first
# What a request's results call each system (the apply job's keys).
SYSTEMS = {"exchange": "Exchange Online", "directory": "Active Directory"}
# Sent with every answer that changes what the page shows elsewhere: the card and the attributes refresh themselves.
CHANGES_UPDATED = "changes-updated"
MAILBOX_UPDATED = "mailbox-updated"


# -- the page's context --------------------------------------------------------------------------------------------


def _rows(mailbox: Mailbox, attributes, *, editable: bool) -> list[dict]:
    """Each attribute's two sides (Exchange Online first); an edit starts from the side holding authority."""
    cloud_holds = mailbox.authority == Authority.CLOUD
    rows = []
    for attribute in attributes:
        cloud, ad = mailbox.exo_values.get(attribute.exo), mailbox.ad_values.get(attribute.exo)
        rows.append({
            "attribute": attribute, "cloud": cloud, "ad": ad, "drift": attribute.exo in mailbox.drift,
            "edit": editable and attribute.editable, "current": cloud if cloud_holds else ad,
            "sides": [
                {"label": "Exchange Online", "value": cloud, "authoritative": cloud_holds},
                {"label": "Active Directory", "value": ad, "authoritative": not cloud_holds},
            ],
        })  # fmt: skip
    return rows


def _shown(refusal: Refusal | None) -> str | None:
    """A refusal by rule is explained; one by role or state leaves the action out (as the wave pages do)."""
    return str(refusal) if refusal and refusal.kind == Refusal.RULE else None


def _writeback_state(task: WritebackTask | None) -> tuple[str, str]:
    """The AD writeback a cloud-managed request asked for, as its task stands (state, the directory's message)."""
    if task is None:
        return "writeback requested", ""
    state = task.State
    if task.state == state.DONE:
        return ("written", "") if task.applied else ("written", "AD already held these values.")
    if task.state == state.FAILED:
        return "failed", task.error
    if task.state == state.SUPERSEDED:
        return "superseded", "A later writeback of this mailbox carries these values."
    if task.state == state.RUNNING:
        return "being written", ""
    return "queued", (f"Will try again: {task.error}" if task.error else "")


def _results(change: ChangeRequest, tasks: dict[int, WritebackTask]) -> list[dict]:
    """Each system's answer as the apply job recorded it (``results["exchange"]``, ``results["directory"]``): whether
    it was written, and the job's note about it; for a cloud-managed request, AD's line is the state of the writeback
    it asked for (``results["directory"]["writeback_task"]``). A note on the request as a whole (the route changed)
    comes last."""
    results = change.results or {}
    shown = []
    for system, label in SYSTEMS.items():
        result = results.get(system)
        if not isinstance(result, dict):
            continue
        written = result.get("written")
        state = "written" if written else ("nothing written" if written is False else "")
        message = str(result.get("note") or "")
        if result.get("writeback_task") is not None:
            state, message = _writeback_state(tasks.get(_task_id(result)))
        shown.append({"system": label, "state": state, "message": message})
    if results.get("note"):
        shown.append({"system": "Note", "state": "", "message": str(results["note"])})
    return shown


def _task_id(result: dict) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(result.get("writeback_task"))
    return None


def _describe(operation: dict) -> str:
    """One operation as the person asked for it: "Add an address: smtp:ann@contoso.com"."""
    label = ChangeOperation(operation["op"]).label if operation.get("op") in ChangeOperation.values else "Change"
    if "address" in operation:
        return f"{label}: {operation['address']}"
    if "attribute" in operation:
        value = f" = “{operation['value']}”" if "value" in operation else ""
        return f"{label}: {operation['attribute']}{value}"
    return label


def _change_rows(user, mailbox: Mailbox, changes: list[ChangeRequest]) -> list[dict]:
    directory = [(change.results or {}).get("directory") for change in changes]
    tasks = writeback_tasks_of(user=user, mailbox=mailbox, task_ids=[
        task_id for result in directory if isinstance(result, dict) and (task_id := _task_id(result)) is not None
    ])  # fmt: skip
    rows = []
    for change, result in zip(changes, directory, strict=True):
        task = tasks.get(_task_id(result)) if isinstance(result, dict) else None
        row = {"change": change, "results": _results(change, tasks), "approve": None, "reject": None, "cancel": None,
               "writing": _being_written(task),
               "operations": [_describe(operation) for operation in change.operations],
               "diff": preview_rows(change.before or {}, change.desired or {})}  # fmt: skip
        if change.state == ChangeState.PENDING_APPROVAL:
            approve = change_decision_refusal(user, change)
            reject = change_decision_refusal(user, change, approve=False)
            row.update(approve=approve is None, reject=reject is None, decision_refusal=_shown(approve or reject))
        if change.is_open:
            row["cancel"] = change_cancel_refusal(user, change) is None
        rows.append(row)
    return rows


def _being_written(task: WritebackTask | None) -> bool:
    """Whether an applied request's writeback will move without anyone asking: running, or queued for a worker now (a
    retry scheduled minutes ahead is shown as such and not polled for)."""
    if task is None:
        return False
    return task.state == task.State.RUNNING or (task.state == task.State.QUEUED and task.retry_at is None)


def page_context(request: HttpRequest, mailbox: Mailbox, **given) -> dict:
    """Everything the mailbox page shows, for the whole page and each of its partials alike."""
    user = request.user
    changes = change_requests_for(user=user, mailbox=mailbox)
    open_change = changes.filter(state__in=CHANGE_OPEN_STATES).first()
    # One open request per mailbox: while one is open the page offers no edit, and says why.
    can_edit = may(user, Action.MAILBOX_EDIT, dn=mailbox.dn)
    editable = can_edit and open_change is None
    rows = _change_rows(user, mailbox, list(changes[:CHANGE_ROWS]))
    context = {
        "mailbox": mailbox,
        "can_edit": can_edit,
        "editable": editable,
        "open_change": open_change,
        "exchange_rows": _rows(mailbox, EXCHANGE_ATTRIBUTES, editable=editable),
        "identity_rows": _rows(mailbox, IDENTITY_ATTRIBUTES, editable=False),
        "change_rows": rows,
        # Open requests move by themselves, and so does the AD writeback an applied cloud-managed request queued.
        "polling": (open_change is not None or any(row["writing"] for row in rows)) and "deciding" not in given,
        "reason_required": settings.CHANGE_REASON_REQUIRED,
    }
    return {**context, **writeback_card_context(user, mailbox), **given}


def _refuse(request: HttpRequest, pk: int, action: Action) -> NoReturn:
    """Refuse ``action`` on mailbox ``pk``, which mailbox_get did not return for it.

    A mailbox the user can see gets 403 with the reason: saying why reveals nothing they do not know. Otherwise,
    outside the user's scope looks exactly like absent (404): a 403 would confirm that the mailbox exists.
    """
    if action != Action.MAILBOX_VIEW and mailbox_get(user=request.user, pk=pk) is not None:
        if may(request.user, action):
            raise PermissionDenied("You may see this mailbox, but it is outside the OUs where your roles allow edits.")
        raise PermissionDenied("You may see this mailbox, but your roles do not allow editing mailboxes.")
    raise OutsideScope("mailbox", action)


def _mailbox_or_404(request: HttpRequest, pk: int, action: Action = Action.MAILBOX_VIEW) -> Mailbox:
    mailbox = mailbox_get(user=request.user, pk=pk, action=action)
    if mailbox is None:
        _refuse(request, pk, action)
    return mailbox


def _attributes(request: HttpRequest, mailbox: Mailbox, **given) -> HttpResponse:
    template = "soa/mailbox_detail.html#exchange-attributes" if request.htmx else "soa/mailbox_detail.html"
    return render(request, template, page_context(request, mailbox, **given))


def _changes(request: HttpRequest, mailbox: Mailbox, **given) -> HttpResponse:
    template = "soa/mailbox_detail.html#mailbox-changes" if request.htmx else "soa/mailbox_detail.html"
    return render(request, template, page_context(request, mailbox, **given))


# -- one edit: editor, preview, confirmation -----------------------------------------------------------------------


def _op_or_404(op: str) -> str:
    if op not in EDIT_FIELDS:
        raise Http404("No such edit.")
    return op


def _again(form: ChangeForm, version: int) -> str:
    """The query string that opens this edit's editor again with what was typed, on ``version`` of the mailbox."""
    fields = {name: form.data.get(name, "") for name in EDIT_FIELDS[form.op]}
    return urlencode({**fields, "version": version})


def _conflict(request: HttpRequest, mailbox: Mailbox, form: ChangeForm, exc: ChangeConflict) -> HttpResponse:
    """The mailbox changed under the page: show the values the edit's row holds now, and offer to make it again."""
    names = [form.row, PRIMARY_ADDRESS] if form.row == EMAIL_ADDRESSES else [form.row]
    current = [{"label": BY_EXO[name].label, "value": exc.current.get(name)} for name in names if name in BY_EXO]
    again = _again(form, exc.version)
    editor = {"stage": "conflict", "form": form, "conflict": exc, "current": current, "again": again}
    return _attributes(request, mailbox, editor=editor)


def _preview_step(request: HttpRequest, mailbox: Mailbox, form: ChangeForm) -> HttpResponse:
    """Show what the edit would change, or the editor again with what is wrong (nothing is written either way)."""
    data = form.cleaned_data
    try:
        preview = change_preview(
            user=request.user, mailbox=mailbox, operations=form.operations(), base_version=data["base_version"]
        )
    except ChangeConflict as exc:
        return _conflict(request, mailbox, form, exc)
    except ChangeValidationError as exc:
        form.add_field_errors(exc.errors)
    except SoaError as exc:
        form.add_error(None, str(exc))
    else:
        # Made when the confirmation is first shown and kept through its corrections: one form, one request.
        key = data.get("idempotency_key") or secrets.token_urlsafe(24)
        editor = {"stage": "preview", "form": form, "preview": preview, "key": key,
                  "again": _again(form, data["base_version"])}  # fmt: skip
        return _attributes(request, mailbox, editor=editor)
    return _attributes(request, mailbox, editor={"stage": "edit", "form": form})


@action_required(Action.MAILBOX_VIEW)
def change_edit_view(request: HttpRequest, pk: int, op: str) -> HttpResponse:
    """The editor of one edit, opened in its attribute's row, prefilled from the link that opened it."""
    mailbox, op = _mailbox_or_404(request, pk, Action.MAILBOX_EDIT), _op_or_404(op)
    initial = {name: request.GET.get(name, "") for name in ("address", "attribute", "value")}
    initial["base_version"] = request.GET.get("version") or mailbox.version
    return _attributes(request, mailbox, editor={"stage": "edit", "form": ChangeForm(op, initial=initial)})


@require_POST
@action_required(Action.MAILBOX_VIEW)
def change_preview_view(request: HttpRequest, pk: int, op: str) -> HttpResponse:
    mailbox, op = _mailbox_or_404(request, pk, Action.MAILBOX_EDIT), _op_or_404(op)
    form = ChangeForm(op, request.POST)
    if not form.is_valid():
        return _attributes(request, mailbox, editor={"stage": "edit", "form": form})
    return _preview_step(request, mailbox, form)


def _submitted_operations(form: ChangeForm) -> list[dict]:
    """The operation as sent, valid or not: what a refused attempt is recorded with."""
    return [{"op": form.op, **{name: form.data.get(name, "") for name in EDIT_FIELDS[form.op]}}]


@require_POST
@action_required(Action.MAILBOX_VIEW)
def change_confirm_view(request: HttpRequest, pk: int, op: str) -> HttpResponse:
    """Ask for the previewed edit: the one call of change_request_create."""
    op = _op_or_404(op)
    form = ChangeForm(op, request.POST, require_reason=settings.CHANGE_REASON_REQUIRED)
    mailbox = mailbox_get(user=request.user, pk=pk, action=Action.MAILBOX_EDIT)
    if mailbox is None:
        # Crafted, or the person's scope changed: the service refuses it and records the attempt
        # (soa.change.denied); the page answers as it does for a mailbox that does not exist.
        with contextlib.suppress(SoaError):
            change_request_create(
                actor=request.user, mailbox_id=pk, operations=_submitted_operations(form),
                reason=form.data.get("reason", ""), base_version=-1,
                idempotency_key=form.data.get("idempotency_key") or secrets.token_urlsafe(24),
            )  # fmt: skip
        _refuse(request, pk, Action.MAILBOX_EDIT)
    if not form.is_valid():
        if form.edit_errors_only_on_reason():
            return _preview_step(request, mailbox, form)
        return _attributes(request, mailbox, editor={"stage": "edit", "form": form})
    data = form.cleaned_data
    try:
        created = change_request_create(
            actor=request.user, mailbox_id=mailbox.pk, operations=form.operations(), reason=data["reason"],
            base_version=data["base_version"], idempotency_key=data["idempotency_key"],
        )  # fmt: skip
    except ChangeConflict as exc:
        return _conflict(request, mailbox, form, exc)
    except ChangeValidationError as exc:
        form.add_field_errors(exc.errors)
        if form.edit_errors_only_on_reason():
            return _preview_step(request, mailbox, form)
    except SoaError as exc:
        form.add_error(None, str(exc))
    else:
        response = _attributes(request, mailbox, created=created)
        response["HX-Trigger"] = CHANGES_UPDATED
        return response
    return _attributes(request, mailbox, editor={"stage": "edit", "form": form})


# -- the Changes card --------------------------------------------------------------------------------------------


@action_required(Action.MAILBOX_VIEW)
def mailbox_changes_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The Changes card, polled while a request is open. When the request it was watching has finished, the
    attributes card is told to refresh (its values, and the edits offered again)."""
    mailbox = _mailbox_or_404(request, pk)
    response = _changes(request, mailbox)
    watching = request.GET.get("watching", "")
    # isdigit() also takes other scripts' digits and any length; an id is at most 18 ASCII digits.
    valid = watching.isascii() and watching.isdigit() and len(watching) <= 18
    if valid and not ChangeRequest.objects.filter(pk=int(watching), state__in=CHANGE_OPEN_STATES).exists():
        response["HX-Trigger"] = MAILBOX_UPDATED
    return response


def _change_or_404(mailbox: Mailbox, change_id: int) -> ChangeRequest:
    change = ChangeRequest.objects.filter(pk=change_id, mailbox=mailbox).first()
    if change is None:
        raise Http404("No such change request.")
    return change


def _decide(request: HttpRequest, pk: int, change_id: int, kind: str) -> HttpResponse:
    """GET: the card with this decision's form (and no polling); POST: the decision, by its one service call."""
    mailbox = _mailbox_or_404(request, pk)
    change = _change_or_404(mailbox, change_id)
    form = DecisionForm(request.POST if request.method == "POST" else None, require_reason=kind == "reject")
    deciding = {"change": change, "kind": kind, "form": form, "url": f"change_{kind}"}
    if request.method != "POST" or not form.is_valid():
        return _changes(request, mailbox, deciding=deciding)
    service = {"approve": change_request_approve, "reject": change_request_reject, "cancel": change_request_cancel}
    try:
        done = service[kind](actor=request.user, request_id=change.pk, reason=form.cleaned_data["reason"])
    except SoaError as exc:
        form.add_error(None, str(exc))
        return _changes(request, mailbox, deciding=deciding)
    response = _changes(request, mailbox, decided=done)
    response["HX-Trigger"] = MAILBOX_UPDATED
    return response


@action_required(Action.MAILBOX_VIEW)
def change_approve_view(request: HttpRequest, pk: int, change_id: int) -> HttpResponse:
    return _decide(request, pk, change_id, "approve")


@action_required(Action.MAILBOX_VIEW)
def change_reject_view(request: HttpRequest, pk: int, change_id: int) -> HttpResponse:
    return _decide(request, pk, change_id, "reject")


@action_required(Action.MAILBOX_VIEW)
def change_cancel_view(request: HttpRequest, pk: int, change_id: int) -> HttpResponse:
    return _decide(request, pk, change_id, "cancel")
