"""Pilot waves: creation and settings, pre-flight, submission, withdrawal and cancellation.

Members are chosen in soa.services.wave_members; decisions are taken in soa.services.approvals; running (start,
pause, resume, completion) belongs to the runner. The legal moves are soa.choices.WAVE_TRANSITIONS.
"""

import datetime as dt
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from portal.audit import audit_record
from portal.limits import DESCRIPTION_MAX_LENGTH
from portal.models import User
from portal.roles import Action, may
from soa import preflight
from soa.choices import WAVE_OPEN_STATES, MemberState, WaveDirection, WaveState
from soa.models import WAVE_MAX_APPROVALS, WAVE_MAX_BATCH_SIZE, WAVE_MAX_RATE, Mailbox, PilotWave, WaveMember
from soa.services import (
    Refusal,
    SoaError,
    action_refusal,
    clean_text,
    listing,
    locked_wave,
    refuse,
    require_action,
    skip_pending_members,
    transition_refusal,
)
from soa.services.approvals import wave_notify_approvers
from soa.services.wave_members import members_outside_scope

_KEEP: Any = object()  # wave_update: leave this field as it is


def _clean_name(name: str, *, other_than: int | None = None) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise SoaError("Give the wave a name.")
    if len(name) > PilotWave._meta.get_field("name").max_length:
        raise SoaError("The wave's name is too long (200 characters at most).")
    if PilotWave.objects.filter(name__iexact=name, state__in=WAVE_OPEN_STATES).exclude(pk=other_than).exists():
        raise SoaError(f"An open wave is already called “{name}”; choose another name.")
    return name


def _check_policy(
    *, required_approvals: int, batch_size: int, max_rate: float, window_start, window_end, now: dt.datetime
) -> None:
    minimum = max(1, settings.WAVE_MIN_APPROVALS)
    if not isinstance(required_approvals, int) or required_approvals < minimum:
        raise SoaError(
            "A wave needs at least one approval."
            if minimum == 1
            else f"This installation requires at least {minimum} distinct approvers per wave."
        )
    if required_approvals > max(WAVE_MAX_APPROVALS, minimum):
        raise SoaError(f"A wave needs at most {max(WAVE_MAX_APPROVALS, minimum)} distinct approvers.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= WAVE_MAX_BATCH_SIZE:
        raise SoaError(f"The batch size must be between 1 and {WAVE_MAX_BATCH_SIZE} mailboxes.")
    if isinstance(max_rate, bool) or not isinstance(max_rate, int | float) or not 0 < max_rate <= WAVE_MAX_RATE:
        raise SoaError(f"The rate must be above 0 and at most {WAVE_MAX_RATE:g} flips per second.")
    if window_start and window_end and window_end <= window_start:
        raise SoaError("The schedule window must end after it starts.")
    if window_end and window_end <= now:
        raise SoaError("The schedule window ends in the past; the wave could never run.")


@transaction.atomic
def wave_create(
    *,
    actor: User,
    name: str,
    direction: str,
    description: str = "",
    required_approvals: int = 1,
    batch_size: int = 50,
    max_rate: float = 5.0,
    window_start: dt.datetime | None = None,
    window_end: dt.datetime | None = None,
    rollback_of: PilotWave | None = None,
) -> PilotWave:
    """Start a draft wave moving authority in ``direction`` (WaveDirection), with its approval policy and throttle.

    ``rollback_of`` is set only by soa.services.wave_rollback, which checks the wave being reversed.
    """
    require_action(actor, Action.WAVE_BUILD)
    description = clean_text(description, "The description", DESCRIPTION_MAX_LENGTH)
    if direction not in WaveDirection.values:
        raise SoaError("Choose the direction: to Exchange Online, or back to Active Directory.")
    now = timezone.now()
    _check_policy(
        required_approvals=required_approvals, batch_size=batch_size, max_rate=max_rate,
        window_start=window_start, window_end=window_end, now=now,
    )  # fmt: skip
    wave = PilotWave.objects.create(
        name=_clean_name(name), direction=direction, description=description, created_by=actor,
        created_at=now, required_approvals=required_approvals, batch_size=batch_size, max_rate=float(max_rate),
        window_start=window_start, window_end=window_end, rollback_of=rollback_of,
    )  # fmt: skip
    audit_record(actor=actor, action="soa.wave.created", obj=wave, before=None, after=wave.audit_snapshot())
    return wave


def update_refusal(actor: User, wave: PilotWave) -> Refusal | None:
    """Why ``actor`` may not change ``wave``'s settings now, or None (the new values are checked by wave_update)."""
    refusal = action_refusal(actor, Action.WAVE_BUILD)
    if refusal:
        return refusal
    if wave.state != WaveState.DRAFT:
        return Refusal(
            f"Wave “{wave.name}” is {wave.get_state_display().lower()}; only a draft can be changed"
            + (" (withdraw it to a draft first)." if wave.state == WaveState.SUBMITTED else "."),
            Refusal.STATE,
        )
    return None


@transaction.atomic
def wave_update(
    *,
    actor: User,
    wave_id: int,
    name: str = _KEEP,
    description: str = _KEEP,
    required_approvals: int = _KEEP,
    batch_size: int = _KEEP,
    max_rate: float = _KEEP,
    window_start: dt.datetime | None = _KEEP,
    window_end: dt.datetime | None = _KEEP,
) -> PilotWave:
    """Change a draft wave's name, description, approval policy, throttle or schedule (omitted fields stay)."""
    require_action(actor, Action.WAVE_BUILD)
    wave = locked_wave(wave_id)
    refuse(update_refusal(actor, wave))
    before = wave.audit_snapshot()
    given = {
        "name": name, "description": description, "required_approvals": required_approvals,
        "batch_size": batch_size, "max_rate": max_rate, "window_start": window_start, "window_end": window_end,
    }  # fmt: skip
    changes = {field: value for field, value in given.items() if value is not _KEEP}
    merged = {field: changes.get(field, getattr(wave, field)) for field in given}
    _check_policy(
        required_approvals=merged["required_approvals"], batch_size=merged["batch_size"],
        max_rate=merged["max_rate"], window_start=merged["window_start"], window_end=merged["window_end"],
        now=timezone.now(),
    )  # fmt: skip
    if "name" in changes:
        changes["name"] = _clean_name(changes["name"], other_than=wave.pk)
    if "description" in changes:
        changes["description"] = clean_text(changes["description"], "The description", DESCRIPTION_MAX_LENGTH)
    for field, value in changes.items():
        setattr(wave, field, value)
    wave.version += 1
    wave.save(update_fields=[*changes, "version", "updated_at"])
    audit_record(actor=actor, action="soa.wave.updated", obj=wave, before=before, after=wave.audit_snapshot())
    return wave


def preflight_refusal(actor: User, wave: PilotWave) -> Refusal | None:
    """Why ``actor`` may not compute ``wave``'s pre-flight now, or None."""
    refusal = action_refusal(actor, Action.WAVE_VIEW)
    if refusal:
        return refusal
    if not wave.is_open:
        return Refusal(
            f"Wave “{wave.name}” is {wave.get_state_display().lower()}; its frozen report is final.", Refusal.STATE
        )
    return None


def wave_preflight(*, actor: User, wave_id: int) -> preflight.Report:
    """Compute the pre-flight of an open wave's members as they are now. Reads only: nothing is frozen or saved."""
    require_action(actor, Action.WAVE_VIEW)
    wave = PilotWave.objects.filter(pk=wave_id).first()
    if wave is None:
        raise SoaError(f"There is no pilot wave #{wave_id}.")
    refuse(preflight_refusal(actor, wave))
    mailboxes = Mailbox.objects.filter(pk__in=Subquery(wave.members.values("mailbox_id"))).order_by("pk")
    return preflight.evaluate(mailboxes.iterator(chunk_size=2000), preflight.build_context(wave))


def _snapshot(mailbox: Mailbox, taken_at: dt.datetime) -> dict[str, Any]:
    """Both sides' Exchange attributes as the portal knew them at submission: what a rollback starts from."""
    return {
        "taken_at": taken_at.isoformat(),
        "authority": mailbox.authority,
        "mailbox_version": mailbox.version,
        "exo": mailbox.exo_values,
        "ad": mailbox.ad_values,
        "exo_read_at": mailbox.exo_read_at.isoformat() if mailbox.exo_read_at else None,
        "ad_read_at": mailbox.ad_read_at.isoformat() if mailbox.ad_read_at else None,
    }


def submit_refusal(actor: User, wave: PilotWave) -> Refusal | None:
    """Why ``actor`` may not submit ``wave`` now, or None. Pre-flight, which wave_submit runs, may still refuse the
    submission (every member blocked, the tenant's ceiling): only running it tells."""
    refusal = action_refusal(actor, Action.WAVE_BUILD) or transition_refusal(wave, WaveState.SUBMITTED, "submitted")
    if refusal:
        return refusal
    if not wave.members.exists():
        return Refusal(f"Wave “{wave.name}” has no members; add mailboxes before submitting it.")
    outside = members_outside_scope(actor, wave, Action.WAVE_BUILD, include_excluded=True)
    if outside:
        return Refusal(
            f"You cannot submit wave “{wave.name}”: these members are outside your wave-building scope: "
            f"{listing(outside)}.",
            Refusal.ACTOR,
        )
    return None


@transaction.atomic
def wave_submit(*, actor: User, wave_id: int) -> PilotWave:
    """Send a draft wave for approval: run pre-flight, freeze its report and both sides' values, exclude blocked
    members, open the approval window and email the approvers (after commit).

    The members' mailbox rows stay locked until commit, so two overlapping waves submitted at once cannot both
    claim a mailbox: the second sees the first (IN_OTHER_WAVE).
    """
    require_action(actor, Action.WAVE_BUILD)
    wave = locked_wave(wave_id)
    refuse(submit_refusal(actor, wave))
    members = {member.mailbox_id: member for member in wave.members.all()}
    now = timezone.now()
    mailboxes = list(
        Mailbox.objects.select_for_update().filter(pk__in=Subquery(wave.members.values("mailbox_id"))).order_by("pk")
    )
    report = preflight.evaluate(mailboxes, preflight.build_context(wave, now=now))
    if report.wave.blocking:
        raise SoaError(" ".join(finding.message for finding in report.wave.blocking), Refusal.STATE)
    if report.eligible == 0:
        codes = ", ".join(f"{code} ×{count}" for code, count in report.summary()["blocking"].items())
        raise SoaError(
            f"Every member of wave “{wave.name}” is blocked by pre-flight ({codes}), so nothing would move. "
            "Remove them or resolve the findings, then submit again.",
            Refusal.STATE,
        )
    before = wave.audit_snapshot()
    for mailbox in mailboxes:
        member, findings = members[mailbox.pk], report.members[mailbox.pk]
        member.preflight = findings.as_json()
        member.excluded = findings.blocked
        member.state = MemberState.SKIPPED if findings.blocked else MemberState.PENDING
        member.last_error = (
            "Excluded by pre-flight: " + ", ".join(f.code for f in findings.blocking) if findings.blocked else ""
        )
        member.snapshot = _snapshot(mailbox, now)
    WaveMember.objects.bulk_update(
        members.values(), ["preflight", "excluded", "state", "last_error", "snapshot"], batch_size=500
    )
    days = settings.WAVE_APPROVAL_DAYS
    wave.state = WaveState.SUBMITTED
    wave.submitted_by = actor
    wave.submitted_at = now
    wave.approval_expires_at = now + dt.timedelta(days=days)
    wave.submission_round += 1
    wave.preflight_report = report.as_json()
    wave.version += 1
    wave.save()
    audit_record(actor=actor, action="soa.wave.submitted", obj=wave, before=before, after=wave.audit_snapshot())
    transaction.on_commit(partial(wave_notify_approvers, wave_id=wave.pk))
    return wave


def withdraw_refusal(actor: User, wave: PilotWave) -> Refusal | None:
    """Why ``actor`` may not withdraw ``wave`` to a draft now, or None."""
    return action_refusal(actor, Action.WAVE_BUILD) or transition_refusal(wave, WaveState.DRAFT, "withdrawn to draft")


@transaction.atomic
def wave_withdraw(*, actor: User, wave_id: int, reason: str = "") -> PilotWave:
    """Take a submitted wave back to draft (to change it, or because its approval window closed).

    The frozen report, snapshots and exclusions are dropped; decisions already given stay on record under their
    round and no longer count: the next submission is a new round with a fresh pre-flight.
    """
    require_action(actor, Action.WAVE_BUILD)
    reason = clean_text(reason)
    wave = locked_wave(wave_id)
    refuse(withdraw_refusal(actor, wave))
    before = wave.audit_snapshot()
    wave.members.update(
        state=MemberState.PENDING, excluded=False, preflight={}, snapshot={}, last_error="", finished_at=None
    )
    wave.state = WaveState.DRAFT
    wave.submitted_by = None
    wave.submitted_at = None
    wave.approval_expires_at = None
    wave.preflight_report = {}
    wave.version += 1
    wave.save()
    audit_record(
        actor=actor, action="soa.wave.withdrawn", obj=wave, before=before, after=wave.audit_snapshot(), reason=reason
    )
    return wave


def cancel_refusal(actor: User, wave: PilotWave) -> Refusal | None:
    """Why ``actor`` may not cancel ``wave`` now, or None (wave_cancel still requires a reason).

    A draft or submitted wave is cancelled by wave builders, an approved or paused one by wave runners; a running
    wave must be paused first, so no flip is cut short.
    """
    if not (may(actor, Action.WAVE_BUILD) or may(actor, Action.WAVE_RUN)):
        return Refusal("Your roles do not allow cancelling pilot waves.", Refusal.ROLE)
    if wave.state == WaveState.RUNNING:
        return Refusal(
            f"Wave “{wave.name}” is running; pause it first, then cancel it once the batch in flight ends.",
            Refusal.STATE,
        )
    action = Action.WAVE_BUILD if wave.state in (WaveState.DRAFT, WaveState.SUBMITTED) else Action.WAVE_RUN
    refusal = transition_refusal(wave, WaveState.CANCELLED, "cancelled") or action_refusal(actor, action)
    if refusal:
        return refusal
    # Cancelling stops the move of every member: someone scoped to one OU may not stop another OU's mailboxes.
    outside = members_outside_scope(actor, wave, action)
    if outside:
        count = len(outside)
        return Refusal(
            f"{count} member{'s are' if count != 1 else ' is'} outside your scope, so you cannot cancel wave "
            f"“{wave.name}” (these members are outside your scope: {listing(outside)}).",
            Refusal.ACTOR,
        )
    return None


@transaction.atomic
def wave_cancel(*, actor: User, wave_id: int, reason: str) -> PilotWave:
    """Stop a wave for good: a draft or submitted one (wave builders), an approved or paused one (wave runners).

    A running wave is paused first, so no flip is cut short; members that never started are marked SKIPPED.
    """
    reason = clean_text(reason)
    if not (may(actor, Action.WAVE_BUILD) or may(actor, Action.WAVE_RUN)):
        raise SoaError("Your roles do not allow cancelling pilot waves.", Refusal.ROLE)
    wave = locked_wave(wave_id)
    refuse(cancel_refusal(actor, wave))
    if not reason:
        raise SoaError("Give a reason for cancelling the wave; it goes into the audit log.")
    before = wave.audit_snapshot()
    now = timezone.now()
    skip_pending_members(wave, f"Wave cancelled: {reason}", now)
    wave.state = WaveState.CANCELLED
    wave.finished_at = now
    wave.version += 1
    wave.save()
    audit_record(
        actor=actor, action="soa.wave.cancelled", obj=wave, before=before, after=wave.audit_snapshot(), reason=reason
    )
    return wave
