"""Running pilot waves: start, pause, resume, the runner's own moves (pause when the window closes, complete), and
retrying one failed member.

Each service locks the wave, checks the move against soa.choices.WAVE_TRANSITIONS, records its audit event in the
same transaction and, when there is work to do, queues the wave's next batch once the transaction commits. The
flips themselves are done by writeback.wave_jobs, which re-reads the wave between members, so a pause takes
effect within the batch in flight.
"""

import datetime as dt
from functools import partial

from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.models import User
from portal.roles import Action
from soa import jobs
from soa.choices import MEMBER_OPEN_STATES, MemberState, WaveState
from soa.models import PilotWave, WaveMember
from soa.services import (
    Refusal,
    SoaError,
    action_refusal,
    clean_text,
    listing,
    locked_wave,
    refuse,
    require_action,
    require_member_transition,
    require_transition,
    transition_refusal,
)
from soa.services.wave_members import members_outside_scope

# Waves whose failed members may be retried alone. COMPLETED_WITH_ERRORS is final in WAVE_TRANSITIONS (it cannot
# go back to RUNNING), so a retry belongs to a wave that is still running or paused.
RETRYABLE_WAVE_STATES = frozenset({WaveState.RUNNING, WaveState.PAUSED})


def _queue_next_batch(wave_id: int) -> None:
    transaction.on_commit(partial(jobs.wave_enqueue, wave_id=wave_id))


def window_refusal(wave: PilotWave, now: dt.datetime) -> str:
    """Why the wave may not run at ``now`` because of its schedule window, or "" when it may."""
    if wave.window_start and now < wave.window_start:
        return (
            f"Wave “{wave.name}” may run only inside its schedule window, which opens at "
            f"{wave.window_start:%Y-%m-%d %H:%M} UTC."
        )
    if wave.window_end and now >= wave.window_end:
        return (
            f"The schedule window of wave “{wave.name}” closed at {wave.window_end:%Y-%m-%d %H:%M} UTC; "
            "cancel the wave and build a new one."
        )
    return ""


def run_scope_refusal(actor: User, wave: PilotWave, verb: str = "start or resume") -> Refusal | None:
    """Why ``actor`` may not ``verb`` ``wave`` for its members' sake (some lie outside the actor's scope for
    running waves), or None. Start, resume and pause all obey it: stopping another OU's move is as much acting on
    its mailboxes as starting it."""
    outside = members_outside_scope(actor, wave, Action.WAVE_RUN)
    if not outside:
        return None
    count = len(outside)
    return Refusal(
        f"{count} member{'s are' if count != 1 else ' is'} outside your scope for running waves, so you cannot "
        f"{verb} wave “{wave.name}” (these members are outside your scope: {listing(outside)}).",
        Refusal.ACTOR,
    )


def _run_refusal(actor: User, wave: PilotWave, now: dt.datetime) -> Refusal | None:
    """What start and resume both check once the wave's state allows the move: the window, then the scope."""
    window = window_refusal(wave, now)
    return Refusal(window) if window else run_scope_refusal(actor, wave)


def start_refusal(actor: User, wave: PilotWave, now: dt.datetime) -> Refusal | None:
    """Why ``actor`` may not start ``wave`` at ``now``, or None."""
    refusal = action_refusal(actor, Action.WAVE_RUN)
    if refusal:
        return refusal
    if wave.state == WaveState.PAUSED:
        return Refusal(f"Wave “{wave.name}” is paused; resume it instead of starting it.", Refusal.STATE)
    if wave.state == WaveState.RUNNING:
        return Refusal(f"Wave “{wave.name}” is already running.", Refusal.STATE)
    return transition_refusal(wave, WaveState.RUNNING, "started") or _run_refusal(actor, wave, now)


@transaction.atomic
def wave_start(*, actor: User, wave_id: int) -> PilotWave:
    """Start an approved wave inside its schedule window; its first batch is queued when this commits."""
    require_action(actor, Action.WAVE_RUN)
    wave = locked_wave(wave_id)
    now = timezone.now()
    refuse(start_refusal(actor, wave, now))
    _move(wave, WaveState.RUNNING, "started", actor=actor, action="soa.wave.started", started_at=now)
    _queue_next_batch(wave.pk)
    return wave


def pause_refusal(actor: User, wave: PilotWave) -> Refusal | None:
    """Why ``actor`` may not pause ``wave`` now, or None."""
    return (
        action_refusal(actor, Action.WAVE_RUN)
        or transition_refusal(wave, WaveState.PAUSED, "paused")
        or run_scope_refusal(actor, wave, "pause")
    )


def _move(
    wave: PilotWave, target: str, verb: str, *, actor: User | None, action: str, reason: str = "", **extra
) -> PilotWave:
    """Move a locked ``wave`` to ``target`` through the transition table, with its audit event: the one body of
    every runner transition (start, pause, resume, complete), whether a person or the runner makes it. ``extra``
    holds other fields set with the move (started_at, finished_at) and, under ``audit``, facts the event adds."""
    require_transition(wave, target, verb)
    audit_extra = extra.pop("audit", {})
    before = wave.audit_snapshot()
    wave.state = target
    for name, value in extra.items():
        setattr(wave, name, value)
    wave.version += 1
    wave.save(update_fields=["state", "version", "updated_at", *extra])
    audit_record(
        actor=actor, action=action, obj=wave, before=before, after={**wave.audit_snapshot(), **audit_extra},
        reason=(reason or "").strip(),
    )  # fmt: skip
    return wave


@transaction.atomic
def wave_pause(*, actor: User, wave_id: int, reason: str = "") -> PilotWave:
    """Pause a running wave. The member being flipped finishes; the rest of the batch waits for a resume."""
    require_action(actor, Action.WAVE_RUN)
    reason = clean_text(reason)
    wave = locked_wave(wave_id)
    refuse(pause_refusal(actor, wave))
    return _move(wave, WaveState.PAUSED, "paused", actor=actor, action="soa.wave.paused", reason=reason)


@transaction.atomic
def wave_window_pause(*, wave_id: int) -> PilotWave:
    """The runner's pause when the wave's schedule window has closed (actor: the system). Refused while the window
    is still open, or when the wave is not running; the audit event gives the window as the reason."""
    wave = locked_wave(wave_id)
    window = window_refusal(wave, timezone.now())
    if not window:
        raise SoaError(f"The schedule window of wave “{wave.name}” is still open; the runner does not pause it.")
    return _move(wave, WaveState.PAUSED, "paused", actor=None, action="soa.wave.paused", reason=window)


@transaction.atomic
def wave_complete(*, wave_id: int) -> PilotWave:
    """The runner's completion of a running wave once none of its members is left to flip (actor: the system):
    COMPLETED, or COMPLETED_WITH_ERRORS when a member failed. Refused while a member is pending or running."""
    wave = locked_wave(wave_id)
    open_members = wave.members.filter(state__in=MEMBER_OPEN_STATES).count()
    if open_members:
        raise SoaError(f"Wave “{wave.name}” still has {open_members} member(s) to flip; it cannot complete yet.")
    failed = wave.members.filter(state=MemberState.FAILED).count()
    target = WaveState.COMPLETED_WITH_ERRORS if failed else WaveState.COMPLETED
    return _move(
        wave, target, "completed", actor=None, action="soa.wave.completed", finished_at=timezone.now(),
        audit={"failed": failed},
        reason=f"{failed} member(s) failed; retry is no longer possible on a finished wave." if failed else "",
    )  # fmt: skip


def resume_refusal(actor: User, wave: PilotWave, now: dt.datetime) -> Refusal | None:
    """Why ``actor`` may not resume ``wave`` at ``now``, or None."""
    refusal = action_refusal(actor, Action.WAVE_RUN)
    if refusal:
        return refusal
    if wave.state != WaveState.PAUSED:
        return Refusal(
            f"Wave “{wave.name}” is {wave.get_state_display().lower()}; only paused waves can be resumed.",
            Refusal.STATE,
        )
    return transition_refusal(wave, WaveState.RUNNING, "resumed") or _run_refusal(actor, wave, now)


@transaction.atomic
def wave_resume(*, actor: User, wave_id: int) -> PilotWave:
    """Resume a paused wave inside its schedule window; its next batch is queued when this commits."""
    require_action(actor, Action.WAVE_RUN)
    wave = locked_wave(wave_id)
    refuse(resume_refusal(actor, wave, timezone.now()))
    _move(wave, WaveState.RUNNING, "resumed", actor=actor, action="soa.wave.resumed")
    _queue_next_batch(wave.pk)
    return wave


def member_audit_snapshot(member: WaveMember) -> dict:
    """What the audit log records of one member's flip."""
    return {
        "wave": member.wave_id,
        "mailbox": member.mailbox.upn,
        "state": member.state,
        "attempts": member.attempts,
        "last_error": member.last_error,
        "started_at": member.started_at,
        "finished_at": member.finished_at,
    }


def member_retry_refusal(actor: User, wave: PilotWave, member: WaveMember | None = None) -> Refusal | None:
    """Why ``actor`` may not retry ``member`` of ``wave`` now, or None. Without a member, whether any failed member
    of the wave could be retried (the member's own state and scope are then left to the call on one member)."""
    refusal = action_refusal(actor, Action.WAVE_RUN)
    if refusal:
        return refusal
    if wave.state not in RETRYABLE_WAVE_STATES:
        return Refusal(
            f"Wave “{wave.name}” is {wave.get_state_display().lower()}; a member can be retried only while its wave "
            "is running or paused.",
            Refusal.STATE,
        )
    if member is None:
        return None
    if member.state != MemberState.FAILED:
        return Refusal(
            f"{member.mailbox.upn} is {member.get_state_display().lower()} in wave “{wave.name}”; only a failed "
            "member can be retried.",
            Refusal.STATE,
        )
    if member.mailbox.upn in members_outside_scope(actor, wave, Action.WAVE_RUN):
        return Refusal(f"{member.mailbox.upn} is outside your scope for running waves.", Refusal.ACTOR)
    return None


@transaction.atomic
def wave_member_retry(*, actor: User, member_id: int) -> WaveMember:
    """Put one FAILED member of a running or paused wave back in the queue, with its attempts counted afresh."""
    require_action(actor, Action.WAVE_RUN)
    wave_id = WaveMember.objects.filter(pk=member_id).values_list("wave_id", flat=True).first()
    if wave_id is None:
        raise SoaError(f"There is no wave member #{member_id}.")
    wave = locked_wave(wave_id)  # the wave first, then the member: the order every writer of both takes
    member = WaveMember.objects.select_for_update(of=("self",)).select_related("mailbox").get(pk=member_id)
    refuse(member_retry_refusal(actor, wave, member))
    require_member_transition(member.state, MemberState.PENDING)
    before = member_audit_snapshot(member)
    # started_at stays: the runner reads the mailbox before writing to a member that was tried before.
    member.state = MemberState.PENDING
    member.attempts = 0
    member.last_error = ""
    member.finished_at = None
    member.save(update_fields=["state", "attempts", "last_error", "finished_at"])
    audit_record(
        actor=actor, action="soa.wave.member_retried", obj=member, before=before, after=member_audit_snapshot(member)
    )
    if wave.state == WaveState.RUNNING:
        _queue_next_batch(wave.pk)
    return member
