"""The landing page after sign-in: real counts for what the user's roles cover."""

from datetime import timedelta

import django_rq
import redis
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from portal.models import AuditEvent
from portal.roles import Action, granted_actions
from soa.selectors import mailbox_counts


def _queue_lengths() -> dict[str, int] | None:
    try:
        return {name: len(django_rq.get_queue(name)) for name in ("default", "writeback")}
    except redis.RedisError:
        return None


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    granted = granted_actions(request.user)
    context: dict = {}
    if Action.MAILBOX_VIEW in granted:
        context["mailboxes"] = mailbox_counts(user=request.user)
    if Action.AUDIT_VIEW in granted:
        since = timezone.now() - timedelta(hours=24)
        context["audit"] = {
            "total": AuditEvent.objects.count(),
            "last_day": AuditEvent.objects.filter(occurred_at__gte=since).count(),
        }
    if Action.JOBS_VIEW in granted:
        context["queues"] = _queue_lengths()
    return render(request, "portal/dashboard.html", context)
