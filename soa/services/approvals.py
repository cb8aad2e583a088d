"""Deciding on submitted waves: approval with quorum, four-eyes and expiry; rejection with a reason; the email
that tells approvers a wave awaits them.

Four-eyes: whoever shaped the wave (created it, changed its settings, added or removed members, submitted it or
withdrew it, in any round) never decides on it, whatever roles they hold (portal rights come from role assignments
only, so an administrator has no way around it). The wave's own columns name its creator, latest submitter and the
members' adders; the audit log, written in the same transaction as each of those acts, names every other hand.
Quorum: ``required_approvals`` distinct approvers of the current submission round; one rejection ends the wave.
Scope: an approver decides only on a wave whose every included member lies inside their approval scope.
"""

import datetime as dt
import logging
import smtplib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mass_mail
from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.models import AuditEvent, User
from portal.roles import Action, may
from soa.choices import Decision, WaveDirection, WaveState
from soa.models import Approval, PilotWave
from soa.services import (
    Refusal,
    SoaError,
    clean_text,
    listing,
    locked_wave,
    refuse,
    require_transition,
    skip_pending_members,
)
from soa.services.wave_members import members_outside_scope

logger = logging.getLogger(__name__)

# The audited acts that shape what a wave moves, and how a refusal names each: their actors never decide on it.
SHAPING_ACTS = {
    "soa.wave.created": "created this wave",
    "soa.wave.updated": "changed this wave's settings",
    "soa.wave.members_added": "chose members of this wave",
    "soa.wave.members_removed": "removed members from this wave",
    "soa.wave.submitted": "submitted this wave",
    "soa.wave.withdrawn": "withdrew this wave to a draft",
}

# Where the wave's page lives, under PORTAL_BASE_URL (the link in the approvers' email).
WAVE_PATH = "/waves/{pk}/"


def approval_refusal(
    user: User, wave: PilotWave, *, decision: str = Decision.APPROVE, now: dt.datetime | None = None
) -> Refusal | None:
    """Why ``user`` may not give ``decision`` on ``wave`` now, or None when they may.

    Used by the services below and by pages (to show, or hide, the decision form with its reason).
    """
    if not may(user, Action.WAVE_APPROVE):
        return Refusal("Your roles do not allow approving or rejecting pilot waves.", Refusal.ROLE)
    if wave.state != WaveState.SUBMITTED:
        return Refusal(
            f"Wave “{wave.name}” is {wave.get_state_display().lower()}; only submitted waves can be approved or "
            "rejected.",
            Refusal.STATE,
        )
    shaped = shaping_act(user, wave)
    if shaped:
        return Refusal(f"You {shaped}; another approver must decide on it.", Refusal.ACTOR)
    if decision == Decision.APPROVE and wave.approval_expired(now):
        return Refusal(
            f"The approval window of wave “{wave.name}” closed on {wave.approval_expires_at:%Y-%m-%d %H:%M} UTC. "
            "Its pre-flight may be out of date: the operator must withdraw it to a draft and submit it again."
        )
    if wave.approvals.filter(round=wave.submission_round, approver=user).exists():
        return Refusal(f"You have already decided on this submission of wave “{wave.name}”.", Refusal.ACTOR)
    outside = members_outside_scope(user, wave, Action.WAVE_APPROVE)
    if outside:
        return Refusal(
            f"Wave “{wave.name}” includes mailboxes outside your approval scope ({listing(outside, limit=10)}); "
            "an approver whose scope covers every member must decide.",
            Refusal.ACTOR,
        )
    return None


def shaping_act(user: User, wave: PilotWave) -> str:
    """How ``user`` shaped ``wave`` (worded for "You ..."), or "" when they never did."""
    if wave.submitted_by_id == user.pk:
        return SHAPING_ACTS["soa.wave.submitted"]
    if wave.created_by_id == user.pk:
        return SHAPING_ACTS["soa.wave.created"]
    if wave.members.filter(added_by=user).exists():
        return SHAPING_ACTS["soa.wave.members_added"]
    # Acts that leave no trace on the wave's rows: removed members, a withdrawal, an earlier round's submission.
    act = (
        AuditEvent.objects.filter(
            object_type=PilotWave._meta.label_lower, object_id=str(wave.pk), actor=user, action__in=SHAPING_ACTS
        )
        .order_by("id")
        .values_list("action", flat=True)
        .first()
    )
    return SHAPING_ACTS[act] if act else ""


@transaction.atomic
def wave_approve(*, actor: User, wave_id: int, reason: str = "", acknowledge_warnings: bool = False) -> PilotWave:
    """Record the actor's approval of a submitted wave; the wave becomes APPROVED when the quorum is reached.

    When the frozen pre-flight report has warnings, the approver must acknowledge them (``acknowledge_warnings``);
    the codes acknowledged are kept on the Approval.
    """
    wave = locked_wave(wave_id)
    refuse(approval_refusal(actor, wave, decision=Decision.APPROVE))
    pending = wave.warnings_to_acknowledge
    if pending and not acknowledge_warnings:
        raise SoaError(
            f"The pre-flight report of wave “{wave.name}” has warnings ({', '.join(pending)}); read them and "
            "acknowledge them to approve."
        )
    reason = clean_text(reason, "The comment")
    before = wave.audit_snapshot()
    Approval.objects.create(
        wave=wave, round=wave.submission_round, approver=actor, decision=Decision.APPROVE, reason=reason,
        acknowledged_warnings=pending,
    )  # fmt: skip
    approvals = wave.approvals.filter(round=wave.submission_round, decision=Decision.APPROVE).count()
    action = "soa.wave.approval_recorded"
    if approvals >= wave.required_approvals:
        require_transition(wave, WaveState.APPROVED, "approved")
        wave.state = WaveState.APPROVED
        action = "soa.wave.approved"
    wave.version += 1
    wave.save(update_fields=["state", "version", "updated_at"])
    after = {**wave.audit_snapshot(), "acknowledged_warnings": pending}
    audit_record(actor=actor, action=action, obj=wave, before=before, after=after, reason=reason)
    return wave


@transaction.atomic
def wave_reject(*, actor: User, wave_id: int, reason: str) -> PilotWave:
    """Reject a submitted wave, with the reason the operator will read. One rejection ends the wave.

    An expired submission may still be rejected (it closes it); members that never started become SKIPPED.
    """
    wave = locked_wave(wave_id)
    refuse(approval_refusal(actor, wave, decision=Decision.REJECT))
    reason = clean_text(reason)
    if not reason:
        raise SoaError("Give a reason for rejecting the wave; the operator needs it to fix the wave.")
    before = wave.audit_snapshot()
    now = timezone.now()
    Approval.objects.create(
        wave=wave, round=wave.submission_round, approver=actor, decision=Decision.REJECT, reason=reason, decided_at=now
    )
    skip_pending_members(wave, f"Wave rejected: {reason}", now)
    require_transition(wave, WaveState.REJECTED, "rejected")
    wave.state = WaveState.REJECTED
    wave.finished_at = now
    wave.version += 1
    wave.save(update_fields=["state", "finished_at", "version", "updated_at"])
    audit_record(
        actor=actor, action="soa.wave.rejected", obj=wave, before=before, after=wave.audit_snapshot(), reason=reason
    )
    return wave


def wave_approvers(wave: PilotWave) -> list:
    """Active users who may approve ``wave`` now (role, scope, four-eyes, not yet decided)."""
    candidates = (
        get_user_model()
        .objects.filter(
            is_active=True,
            role_assignments__role__permissions__codename=Action.WAVE_APPROVE.value,
            role_assignments__role__permissions__content_type__app_label="portal",
        )
        .distinct()
        .order_by("username")
    )
    return [user for user in candidates if approval_refusal(user, wave) is None]


def wave_notify_approvers(*, wave_id: int) -> int:
    """Email each possible approver of a submitted wave a summary and a link. Run after the submission commits;
    a mail server that fails is logged, never allowed to undo the submission. Returns the emails sent."""
    wave = PilotWave.objects.filter(pk=wave_id, state=WaveState.SUBMITTED).select_related("submitted_by").first()
    if wave is None:
        return 0
    recipients = [user.email for user in wave_approvers(wave) if user.email]
    if not recipients:
        logger.warning("Wave %s awaits approval but no approver with an email address may approve it.", wave.pk)
        return 0
    summary = wave.preflight_report.get("summary", {})
    base = settings.PORTAL_BASE_URL.rstrip("/")
    warnings = wave.warnings_to_acknowledge
    body = "\n".join(
        [
            f"{wave.submitted_by.get_username()} submitted the pilot wave “{wave.name}” for approval.",
            "",
            f"Direction: {WaveDirection(wave.direction).label}",
            f"Members: {summary.get('members', 0)} ({summary.get('eligible', 0)} to move, "
            f"{summary.get('blocked', 0)} excluded by pre-flight)",
            f"Pre-flight warnings to acknowledge: {', '.join(warnings) if warnings else 'none'}",
            f"Approvals needed: {wave.required_approvals}",
            f"Approve or reject before: {wave.approval_expires_at:%Y-%m-%d %H:%M} UTC",
            "",
            f"Review the members, the pre-flight report and every difference: {base}{WAVE_PATH.format(pk=wave.pk)}",
        ]
    )
    subject = f"Pilot wave “{wave.name}” awaits your approval"
    messages = [(subject, body, settings.DEFAULT_FROM_EMAIL, [address]) for address in recipients]
    try:
        return send_mass_mail(messages)
    except (OSError, smtplib.SMTPException):
        logger.exception("Could not email the approvers of wave %s.", wave.pk)
        return 0
