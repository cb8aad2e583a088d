"""Pilot waves on the job lifecycle: a batch of a running wave, and the sweep of members whose worker died.

A batch (``wave_run_job``) is a ``Work`` whose steps are the runner's (writeback.wave_jobs): the claim takes up to a
batch of PENDING members, the run flips them at the wave's rate, the member stamped just before each flip being its
heartbeat, and the finish settles the wave (queues the next batch or completes it through wave_complete). When the
run raises, the member being flipped is recorded PENDING with the error (FAILED once MEMBER_RETRY gives up on it),
the members it had not reached are released, and the wave's next batch is scheduled after UNEXPECTED_ERROR_WAIT.

A dead worker (SIGKILL, a lost machine, a job timeout) cannot record anything: while a batch runs, a thread writes a
heartbeat on its members (writeback.wave_heartbeat), and ``wave_watch``, which every worker runs every
WAVE_WATCH_SECONDS (writeback.worker), returns members whose heartbeat is older than WAVE_STALE_SECONDS to PENDING and
queues their wave. A member of a wave cancelled meanwhile is settled instead: Exchange is read again, and the member
is recorded DONE when the flip had landed (its mailbox then under the wave's target authority) or SKIPPED when it had
not, each with its audit event. The periodic sweep (``wave_sweep_job``) does the same, and also queues running waves
whose next batch was lost.
"""

import datetime as dt
import logging
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from portal.audit import audit_record
from soa.choices import MemberState, WaveDirection, WaveState
from soa.jobs import QUEUE, WAVE_RUN_JOB, wave_enqueue
from soa.models import PilotWave, WaveMember
from soa.services import require_member_transition
from soa.services.wave_run import member_audit_snapshot
from writeback import wave_jobs
from writeback.exchange import ExchangeOnlineError
from writeback.jobs.lifecycle import Work, perform
from writeback.jobs.waiting import waiting_keys
from writeback.wave_heartbeat import MemberHeartbeat

logger = logging.getLogger(__name__)

# A running wave with members due and no member activity for this long lost its next batch (a worker died between a
# batch's last member and queueing the next): the sweep queues it again.
SWEEP_AFTER = dt.timedelta(minutes=10)
# After a batch raised an unexpected error (a bug, not an outage: those are transient failures of a member), the
# wave's next batch waits this long.
UNEXPECTED_ERROR_WAIT = dt.timedelta(minutes=1)
# A running wave with members due, none being flipped and nothing done for WAVE_REQUEUE_AFTER_SECONDS, whose batch is
# neither queued nor scheduled in Redis, lost its batch before it reached Redis (Redis was down when the wave started,
# resumed or a batch ended, or it lost its data): the sweep queues it without waiting for SWEEP_AFTER.


def _job_correlation(wave_id: int) -> str:
    from rq import get_current_job

    job = get_current_job()
    return f"wave-{wave_id}-{job.id}" if job is not None else f"wave-{wave_id}"


def _finish(batch: wave_jobs.Batch, counts: dict[str, Any]) -> dict[str, Any]:
    """Settle the wave after its batch: the next batch (at Exchange's retry time, if it asked), or completion."""
    retry_at = counts.pop("retry_at", None)
    counts["settled"] = wave_jobs.settle(batch.wave_id, retry_at=retry_at)
    if retry_at is not None:
        counts["retry_at"] = retry_at.isoformat()
    logger.info("Wave %s batch: %s", batch.wave_id, counts)
    return counts


def _fail(batch: wave_jobs.Batch, error: str) -> dict[str, Any]:
    """Give the batch back, then schedule the wave's next batch after UNEXPECTED_ERROR_WAIT (a bug that fails every
    batch then costs each member at most MEMBER_RETRY.max_attempts claims, slowly, before it is FAILED)."""
    wave_jobs.give_back(batch, error)
    retry_at = timezone.now() + UNEXPECTED_ERROR_WAIT
    batch.counts["settled"] = wave_jobs.settle(batch.wave_id, retry_at=retry_at)
    return batch.counts


def _run(batch: wave_jobs.Batch) -> dict[str, Any]:
    """Flip the batch, beating for its members meanwhile when a worker runs it (a worker can die; a batch run in a
    test's or the shell's own process has no worker to lose)."""
    from rq import get_current_job

    if get_current_job() is None or not batch.members:
        return wave_jobs.flip_batch(batch)
    with MemberHeartbeat(batch.members):
        return wave_jobs.flip_batch(batch)


WAVE_BATCH = Work(
    name="Wave batch",
    claim=wave_jobs.claim,
    run=_run,
    finish=_finish,
    fail=_fail,
)


def wave_run_job(wave_id: int) -> dict[str, Any]:
    """RQ entrypoint: flip one batch of a running wave, then queue the next or complete the wave. Safe to deliver
    twice: members already DONE are never claimed again, and a re-claimed member is read before it is written."""
    return perform(WAVE_BATCH, wave_id, correlation=_job_correlation(wave_id))


def _stalled_waves(cutoff: dt.datetime) -> list[int]:
    """RUNNING waves with members to flip but no member activity since ``cutoff`` and no change to the wave itself
    since then: their next batch was lost (a worker died between a batch's last member and queueing the next)."""
    recent = Q(started_at__gte=cutoff) | Q(finished_at__gte=cutoff) | Q(state=MemberState.RUNNING)
    busy = WaveMember.objects.filter(recent, wave_id=OuterRef("pk"))
    # A member deferred until later is waited for by a scheduled batch; only one overdue by the sweep's margin
    # means that batch was lost.
    due = Q(not_before__isnull=True) | Q(not_before__lt=cutoff)
    waiting = WaveMember.objects.filter(due, wave_id=OuterRef("pk"), state=MemberState.PENDING)
    return list(
        PilotWave.objects.filter(state=WaveState.RUNNING, updated_at__lt=cutoff)
        .filter(Exists(waiting))
        .exclude(Exists(busy))
        .values_list("pk", flat=True)
    )


def _unqueued_waves(cutoff: dt.datetime) -> list[int]:
    """Waves _stalled_waves finds idle since ``cutoff`` whose batch is not waiting in Redis either."""
    idle = _stalled_waves(cutoff)
    if not idle:
        return []
    waiting = waiting_keys(WAVE_RUN_JOB, queue_name=QUEUE)
    return [wave_id for wave_id in idle if wave_id not in waiting]


def _stale(cutoff: dt.datetime):
    """RUNNING members whose batch has not beaten since ``cutoff`` (rows claimed before heartbeats existed count
    from their claim)."""
    return (
        WaveMember.objects.annotate(beat=Coalesce("heartbeat_at", "started_at"))
        .filter(state=MemberState.RUNNING, beat__lt=cutoff)
        .order_by("pk")
    )


def _stale_after() -> dt.timedelta:
    return dt.timedelta(seconds=float(settings.WAVE_STALE_SECONDS))


def return_stale_members(cutoff: dt.datetime) -> tuple[int, set[int]]:
    """Return to PENDING the members of running or paused waves whose heartbeat stopped before ``cutoff``
    (MEMBER_RETRY: a stale member is returned), each with its ``soa.wave.member_swept`` event; queue the running
    waves among theirs again. Returns how many were returned, and their waves."""
    waves: set[int] = set()
    now = timezone.now()
    with transaction.atomic():
        stale = list(
            _stale(cutoff)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("mailbox")
            .filter(wave__state__in=[WaveState.RUNNING, WaveState.PAUSED])
        )
        for member in stale:
            require_member_transition(member.state, MemberState.PENDING)
            before = member_audit_snapshot(member)
            member.state = MemberState.PENDING
            member.last_error = (
                f"Returned: its worker stopped (no heartbeat since {member.beat:%H:%M:%S} UTC, "
                f"{(now - member.beat).total_seconds():.0f} s before it was found)."
            )
            member.save(update_fields=["state", "last_error"])
            audit_record(
                actor=None, action="soa.wave.member_swept", obj=member, before=before,
                after=member_audit_snapshot(member), reason=member.last_error,
            )  # fmt: skip
            waves.add(member.wave_id)
        running = PilotWave.objects.filter(pk__in=waves, state=WaveState.RUNNING).values_list("pk", flat=True)
        for wave_id in sorted(running):
            transaction.on_commit(partial(wave_enqueue, wave_id=wave_id))
    if stale:
        logger.warning("Returned %d member(s) of wave(s) %s whose worker stopped.", len(stale), sorted(waves))
    return len(stale), waves


def settle_stale_members(cutoff: dt.datetime) -> int:
    """Settle the members left RUNNING by a dead worker on a wave that no longer runs (cancelled after a pause):
    read Exchange again for each, outside any transaction, and record it DONE when the flip had landed or SKIPPED
    when it had not (wave_jobs.record, which also moves the mailbox's authority and writes the audit event). A
    member Exchange does not answer for stays RUNNING and is tried again once its heartbeat, touched here, is stale
    again. Returns how many were settled."""
    stale = list(
        _stale(cutoff).exclude(wave__state__in=[WaveState.RUNNING, WaveState.PAUSED]).select_related("mailbox", "wave")
    )
    if not stale:
        return 0
    client = wave_jobs._client()
    settled = 0
    for member in stale:
        target = member.wave.direction == WaveDirection.TO_CLOUD
        try:
            current = client.get_mailbox(wave_jobs._identity(member.mailbox))
        except ExchangeOnlineError as error:
            why = f"Re-reading Exchange to settle this member of a stopped wave failed ({error}); tried again soon."
            WaveMember.objects.filter(pk=member.pk, state=MemberState.RUNNING, started_at=member.started_at).update(
                heartbeat_at=timezone.now(), last_error=why
            )
            logger.warning("Wave %s member %s: %s", member.wave_id, member.pk, why)
            continue
        if current.get("IsExchangeCloudManaged") is target:
            outcome = wave_jobs.Outcome(MemberState.DONE, found_applied=True)
        else:
            outcome = wave_jobs.Outcome(
                MemberState.PENDING,
                f"Its worker stopped mid-flip; the re-read found IsExchangeCloudManaged={not target}, so nothing was "
                "applied.",
            )
        if wave_jobs.record(member, outcome) is not None:
            settled += 1
    if settled:
        logger.warning("Settled %d member(s) of stopped waves left running by a dead worker.", settled)
    return settled


def requeue_lost_batches(cutoff: dt.datetime, *, besides: set[int] = frozenset()) -> list[int]:
    """Queue again the running waves idle since ``cutoff`` (members due, none being flipped, no flip recorded) whose
    batch Redis holds neither queued nor scheduled: a worker died between two batches (after recording a batch's
    last member, before queueing the next), so no member was left RUNNING to be found. Redis is read only when the
    database finds such a wave. ``besides``: waves just queued again by the caller."""
    lost = [wave_id for wave_id in _unqueued_waves(cutoff) if wave_id not in besides]
    for wave_id in lost:
        wave_enqueue(wave_id=wave_id)
    if lost:
        logger.warning("Queued wave(s) %s again: idle since %s UTC with no batch in Redis.", lost, f"{cutoff:%H:%M:%S}")
    return lost


def wave_watch(stale_after: dt.timedelta | None = None) -> int:
    """The quick check every worker runs every WAVE_WATCH_SECONDS (writeback.worker): members whose heartbeat is
    older than ``stale_after`` (WAVE_STALE_SECONDS) are returned, or settled when their wave no longer runs, and a
    running wave idle for as long whose next batch is not in Redis is queued again. Reads the database, Redis only
    for an idle wave, and Exchange only for a stopped wave's members. Returns how many members it returned or
    settled."""
    cutoff = timezone.now() - (stale_after if stale_after is not None else _stale_after())
    returned, waves = return_stale_members(cutoff)
    settled = settle_stale_members(cutoff)
    requeue_lost_batches(cutoff, besides=waves)
    return returned + settled


def wave_sweep_job(older_than_seconds: float | None = None) -> int:
    """Return members left RUNNING by a dead worker to PENDING (heartbeat older than ``older_than_seconds``, by
    default WAVE_STALE_SECONDS; what wave_watch does between sweeps) and queue their waves again, settle a stopped
    wave's members the same way; also queue running waves whose next batch was lost: idle for SWEEP_AFTER, or for
    WAVE_REQUEUE_AFTER_SECONDS when Redis holds no batch of theirs. Returns how many members were returned.

    The returned members are read before they are written on their next claim, so a flip the dead worker had
    already applied is recorded DONE without a second Set-Mailbox. A batch queued twice is harmless (claims skip
    what another worker holds), only faster than the wave's rate for as long as both chains run.
    """
    limit = dt.timedelta(seconds=older_than_seconds) if older_than_seconds is not None else _stale_after()
    now = timezone.now()
    returned, waves = return_stale_members(now - limit)
    settle_stale_members(now - limit)
    unqueued = requeue_lost_batches(now - dt.timedelta(seconds=settings.WAVE_REQUEUE_AFTER_SECONDS), besides=waves)
    # Idle for SWEEP_AFTER: queued again even when Redis seems to hold its batch (a job no worker will take).
    stalled = sorted(set(_stalled_waves(now - SWEEP_AFTER)) - waves - set(unqueued))
    for wave_id in stalled:
        wave_enqueue(wave_id=wave_id)
    if stalled:
        logger.warning("Wave sweep requeued stalled wave(s) %s", stalled)
    return returned
