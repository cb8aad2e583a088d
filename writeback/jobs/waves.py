"""Pilot waves on the job lifecycle: a batch of a running wave, and the sweep of members whose worker died.

A batch (``wave_run_job``) is a ``Work`` whose steps are the runner's (writeback.wave_jobs): the claim takes up to a
batch of PENDING members, the run flips them at the wave's rate, the member stamped just before each flip being its
heartbeat, and the finish settles the wave (queues the next batch or completes it through wave_complete). When the
run raises, the member being flipped is recorded PENDING with the error (FAILED once MEMBER_RETRY gives up on it),
the members it had not reached are released, and the wave's next batch is scheduled after UNEXPECTED_ERROR_WAIT.
"""

import datetime as dt
import logging
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from portal.audit import audit_record
from soa.choices import MemberState, WaveState
from soa.jobs import QUEUE, WAVE_RUN_JOB, wave_enqueue
from soa.models import PilotWave, WaveMember
from soa.services import require_member_transition
from soa.services.wave_run import member_audit_snapshot
from writeback import wave_jobs
from writeback.jobs.lifecycle import Work, perform
from writeback.jobs.waiting import waiting_keys

logger = logging.getLogger(__name__)

# A member RUNNING for longer than this without its worker touching it belongs to a dead worker. The runner
# stamps started_at just before each flip, so only a single flip (retries and Retry-After waits included) must
# fit in it, not a whole batch.
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


WAVE_BATCH = Work(
    name="Wave batch",
    claim=wave_jobs.claim,
    run=lambda batch: wave_jobs.flip_batch(batch),
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


def wave_sweep_job(older_than_seconds: float | None = None) -> int:
    """Return members left RUNNING by a dead worker to PENDING (MEMBER_RETRY: a stale member is returned) and queue
    their waves again; also queue running waves whose next batch was lost: idle for SWEEP_AFTER, or for
    WAVE_REQUEUE_AFTER_SECONDS when Redis holds no batch of theirs. Returns how many members were returned.

    The returned members are read before they are written on their next claim, so a flip the dead worker had
    already applied is recorded DONE without a second Set-Mailbox. A batch queued twice is harmless (claims skip
    what another worker holds), only faster than the wave's rate for as long as both chains run.
    """
    limit = dt.timedelta(seconds=older_than_seconds) if older_than_seconds is not None else SWEEP_AFTER
    cutoff = timezone.now() - limit
    waves: set[int] = set()
    # Reads Redis: before the transaction, not inside it.
    unqueued = _unqueued_waves(timezone.now() - dt.timedelta(seconds=settings.WAVE_REQUEUE_AFTER_SECONDS))
    with transaction.atomic():
        stale = list(
            WaveMember.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("mailbox")
            .filter(state=MemberState.RUNNING, started_at__lt=cutoff)
            .filter(wave__state__in=[WaveState.RUNNING, WaveState.PAUSED])
            .order_by("pk")
        )
        for member in stale:
            require_member_transition(member.state, MemberState.PENDING)
            before = member_audit_snapshot(member)
            member.state = MemberState.PENDING
            member.last_error = (
                f"Returned by the sweep: its worker stopped (running since {member.started_at:%H:%M:%S} UTC)."
            )
            member.save(update_fields=["state", "last_error"])
            audit_record(
                actor=None, action="soa.wave.member_swept", obj=member, before=before,
                after=member_audit_snapshot(member), reason=member.last_error,
            )  # fmt: skip
            waves.add(member.wave_id)
        stalled = sorted(set(_stalled_waves(cutoff)) | set(unqueued))
        running = PilotWave.objects.filter(pk__in=waves, state=WaveState.RUNNING).values_list("pk", flat=True)
        for wave_id in sorted(set(running) | set(stalled)):
            transaction.on_commit(partial(wave_enqueue, wave_id=wave_id))
    if stale or stalled:
        logger.warning(
            "Wave sweep returned %d member(s) of wave(s) %s; requeued stalled wave(s) %s",
            len(stale), sorted(waves), stalled,
        )  # fmt: skip
    return len(stale)
