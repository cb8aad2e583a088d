"""Running pilot waves: start, pause, resume, and retrying one failed member.

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
from portal.roles import Action
from soa import jobs
from soa.choices import MemberState, WaveState
from soa.models import PilotWave, WaveMember
from soa.services import SoaError, listing, locked_wave, require_action, require_transition
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


def _require_scope(actor, wave: PilotWave) -> None:
    outside = members_outside_scope(actor, wave, Action.WAVE_RUN)
    if outside:
        raise SoaError(f"You cannot run wave “{wave.name}”: these members are outside your scope: {listing(outside)}.")


@transaction.atomic
def wave_start(*, actor, wave_id: int) -> PilotWave:
    """Start an approved wave inside its schedule window; its first batch is queued when this commits."""
    require_action(actor, Action.WAVE_RUN)
    wave = locked_wave(wave_id)
    if wave.state == WaveState.PAUSED:
        raise SoaError(f"Wave “{wave.name}” is paused; resume it instead of starting it.")
    if wave.state == WaveState.RUNNING:
        raise SoaError(f"Wave “{wave.name}” is already running.")
    require_transition(wave, WaveState.RUNNING, "started")
    now = timezone.now()
    refusal = window_refusal(wave, now)
    if refusal:
        raise SoaError(refusal)
    _require_scope(actor, wave)
    before = wave.audit_snapshot()
    wave.state = WaveState.RUNNING
    wave.started_at = now
    wave.version += 1
    wave.save(update_fields=["state", "started_at", "version", "updated_at"])
    audit_record(actor=actor, action="soa.wave.started", obj=wave, before=before, after=wave.audit_snapshot())
    _queue_next_batch(wave.pk)
    return wave


@transaction.atomic
def wave_pause(*, actor, wave_id: int, reason: str = "") -> PilotWave:
    """Pause a running wave. The member being flipped finishes; the rest of the batch waits for a resume."""
    require_action(actor, Action.WAVE_RUN)
    wave = locked_wave(wave_id)
    require_transition(wave, WaveState.PAUSED, "paused")
    before = wave.audit_snapshot()
    wave.state = WaveState.PAUSED
    wave.version += 1
    wave.save(update_fields=["state", "version", "updated_at"])
    audit_record(
        actor=actor, action="soa.wave.paused", obj=wave, before=before, after=wave.audit_snapshot(),
        reason=(reason or "").strip(),
    )  # fmt: skip
    return wave


@transaction.atomic
def wave_resume(*, actor, wave_id: int) -> PilotWave:
    """Resume a paused wave inside its schedule window; its next batch is queued when this commits."""
    require_action(actor, Action.WAVE_RUN)
    wave = locked_wave(wave_id)
    if wave.state != WaveState.PAUSED:
        raise SoaError(f"Wave “{wave.name}” is {wave.get_state_display().lower()}; only paused waves can be resumed.")
    require_transition(wave, WaveState.RUNNING, "resumed")
    refusal = window_refusal(wave, timezone.now())
    if refusal:
        raise SoaError(refusal)
    _require_scope(actor, wave)
    before = wave.audit_snapshot()
    wave.state = WaveState.RUNNING
    wave.version += 1
    wave.save(update_fields=["state", "version", "updated_at"])
    audit_record(actor=actor, action="soa.wave.resumed", obj=wave, before=before, after=wave.audit_snapshot())
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


@transaction.atomic
def wave_member_retry(*, actor, member_id: int) -> WaveMember:
    """Put one FAILED member of a running or paused wave back in the queue, with its attempts counted afresh."""
    require_action(actor, Action.WAVE_RUN)
    wave_id = WaveMember.objects.filter(pk=member_id).values_list("wave_id", flat=True).first()
    if wave_id is None:
        raise SoaError(f"There is no wave member #{member_id}.")
    wave = locked_wave(wave_id)  # the wave first, then the member: the order every writer of both takes
    member = WaveMember.objects.select_for_update(of=("self",)).select_related("mailbox").get(pk=member_id)
    if wave.state not in RETRYABLE_WAVE_STATES:
        raise SoaError(
            f"Wave “{wave.name}” is {wave.get_state_display().lower()}; a member can be retried only while its wave "
            "is running or paused."
        )
    if member.state != MemberState.FAILED:
        raise SoaError(
            f"{member.mailbox.upn} is {member.get_state_display().lower()} in wave “{wave.name}”; only a failed "
            "member can be retried."
        )
    if member.mailbox.upn in members_outside_scope(actor, wave, Action.WAVE_RUN):
        raise SoaError(f"{member.mailbox.upn} is outside your scope for running waves.")
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
