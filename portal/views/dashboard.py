"""The landing page after sign-in: what awaits each of the user's roles, every figure counted for real.

Approvers see the waves awaiting their decision (with how many approvals each has and when it expires) and those
they approved that wait for others; operators their open waves with progress, and those that ended with errors lately;
help desk their open and recent edits; administrators and auditors the tenant's figures, the last import, the job
queues and the audit chain's last verification. A user holding several roles sees each part.
"""

from datetime import timedelta

import django_rq
import redis
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from portal.models import AuditEvent
from portal.roles import Action, granted_actions
from soa.choices import WaveState
from soa.selectors import (
    EXPIRING_SOON,
    changes_requested_by,
    mailbox_counts,
    operator_waves,
    waves_awaiting_decision,
    waves_decided_awaiting_others,
)
from writeback.models import InventoryRun

# Rows a list on the dashboard shows; its heading counts them all and links to the whole list where one exists.
SHOWN = 10


def _queue_lengths() -> dict[str, int] | None:
    try:
        return {name: len(django_rq.get_queue(name)) for name in ("default", "writeback")}
    except redis.RedisError:
        return None


def _approver(user) -> dict:
    awaiting = list(waves_awaiting_decision(user=user))
    soon = timezone.now() + EXPIRING_SOON
    for wave in awaiting:
        wave.expires_soon = wave.approval_expires_at <= soon
    return {
        "awaiting": awaiting[:SHOWN],
        "awaiting_count": len(awaiting),
        "expiring_count": sum(wave.expires_soon for wave in awaiting),
        "decided": list(waves_decided_awaiting_others(user=user)[:SHOWN]),
    }


def _operator(user) -> dict:
    waves = list(operator_waves(user=user))
    counts: dict[str, int] = {}
    for wave in waves:
        counts[wave.state] = counts.get(wave.state, 0) + 1
    by_state = [{"state": state, "label": WaveState(state).label, "count": count} for state, count in counts.items()]
    return {"waves": waves[:SHOWN], "count": len(waves), "by_state": by_state}


def _helpdesk(user) -> dict:
    open_changes = changes_requested_by(user=user, open_only=True)
    return {
        "open": list(open_changes[:SHOWN]),
        "open_count": open_changes.count(),
        "recent": list(changes_requested_by(user=user)[:SHOWN]),
    }


def _tenant() -> dict:
    since = timezone.now() - timedelta(hours=24)
    runs = InventoryRun.objects.order_by("-id")
    return {
        "audit_total": AuditEvent.objects.count(),
        "audit_last_day": AuditEvent.objects.filter(occurred_at__gte=since).count(),
        "last_run": runs.first(),
        "last_done": runs.filter(state=InventoryRun.State.DONE).first(),
        "verified": AuditEvent.objects.filter(action="portal.audit.verified").order_by("-id").first(),
    }


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    user, granted = request.user, granted_actions(request.user)
    context: dict = {"shown": SHOWN}
    if Action.MAILBOX_VIEW in granted:
        context["mailboxes"] = mailbox_counts(user=user)
    if Action.WAVE_APPROVE in granted:
        context["approver"] = _approver(user)
    if Action.WAVE_BUILD in granted or Action.WAVE_RUN in granted:
        context["operator"] = _operator(user)
    if Action.MAILBOX_EDIT in granted or Action.BULK_EDIT in granted:
        context["helpdesk"] = _helpdesk(user)
    if Action.AUDIT_VIEW in granted:
        context["tenant"] = _tenant()
    if Action.JOBS_VIEW in granted:
        context["queues"] = _queue_lengths()
    return render(request, "portal/dashboard.html", context)
