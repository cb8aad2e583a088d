"""The mailbox page's writeback card: the mailbox's latest writeback task (state, attempts, the directory's message)
and, for a FAILED one, "Retry" behind a confirmation. What is offered comes from the service's own refusal
(writeback.tasks.writeback_task_retry_refusal); the POST is that service, which checks again and audits."""

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render

from portal.limits import REASON_MAX_LENGTH, too_long
from portal.models import User
from portal.roles import Action, OutsideScope
from soa.models import Mailbox
from soa.selectors import mailbox_get
from writeback.models import WritebackTask
from writeback.tasks import WritebackError, writeback_task_retry, writeback_task_retry_refusal

TEMPLATE = "writeback/mailbox_writeback.html"


def writeback_card_context(user: User, mailbox: Mailbox, **given) -> dict:
    """What the card shows: the latest task, whether it may be retried, and why not when a rule refuses."""
    task = WritebackTask.objects.filter(mailbox_id=mailbox.pk).select_related("mailbox").order_by("-pk").first()
    refusal = writeback_task_retry_refusal(task, user) if task is not None and task.state == "FAILED" else None
    # A refusal by role leaves the button out silently; one by a rule (a newer task) is explained.
    rule_refusal = refusal if refusal and not refusal.startswith("Only ") else None
    return {
        "mailbox": mailbox,
        "writeback_task": task,
        "writeback_retryable": task is not None and task.state == "FAILED" and refusal is None,
        "writeback_refusal": rule_refusal,
        "writeback_polling": task is not None and task.is_open,
        **given,
    }


def _mailbox(request: HttpRequest, pk: int) -> Mailbox:
    mailbox = mailbox_get(user=request.user, pk=pk)
    if mailbox is None:
        raise OutsideScope("mailbox", Action.MAILBOX_VIEW)
    return mailbox


def mailbox_writeback_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The card alone (its polling while a task is open), or the mailbox page without JavaScript."""
    mailbox = _mailbox(request, pk)
    if not request.htmx:
        return redirect("mailbox_detail", pk=mailbox.pk)
    return render(request, f"{TEMPLATE}#mailbox-writeback", writeback_card_context(request.user, mailbox))


def writeback_retry_view(request: HttpRequest, pk: int, task_id: int) -> HttpResponse:
    """GET: the confirmation inside the card. POST: the retry (the service refuses what it must, audited)."""
    mailbox = _mailbox(request, pk)
    task = WritebackTask.objects.filter(pk=task_id, mailbox_id=mailbox.pk).first()
    if task is None:
        raise Http404("No such writeback.")
    if request.method != "POST":
        context = writeback_card_context(request.user, mailbox, confirming=True)
        if not request.htmx:
            from soa.views_changes import page_context

            return render(request, "soa/mailbox_detail.html", {**page_context(request, mailbox), **context})
        return render(request, f"{TEMPLATE}#mailbox-writeback", context)
    reason = request.POST.get("reason", "")
    if problem := too_long(reason, REASON_MAX_LENGTH, "The reason"):
        return HttpResponseBadRequest(problem, content_type="text/plain; charset=utf-8")
    try:
        writeback_task_retry(task_id=task.pk, actor=request.user, reason=reason)
    except WritebackError as exc:
        context = writeback_card_context(request.user, mailbox, retry_error=str(exc))
    else:
        context = writeback_card_context(request.user, mailbox, retried=True)
    if not request.htmx:
        return redirect("mailbox_detail", pk=mailbox.pk)
    return render(request, f"{TEMPLATE}#mailbox-writeback", context)
