"""The pilot-wave runner: the steps that flip IsExchangeCloudManaged for a running wave's members, batch by batch.
Its RQ entrypoints (a batch, the member sweep) are in writeback.jobs.waves, on the job lifecycle.

Member rows are the truth, and every change of a member's state obeys soa.choices.MEMBER_TRANSITIONS
(soa.services.require_member_transition). A batch is claimed (PENDING -> RUNNING,
``select_for_update(skip_locked=True)``) in a short transaction; each flip is ``Set-Mailbox
-IsExchangeCloudManaged`` with a confirming re-read, made outside any transaction at the wave's rate; each result
and its audit event are recorded in a second short transaction.
The wave is re-read between members, so a pause or a closed window stops the batch in flight after the member
being flipped. A member that was claimed before (a dead worker, a transient failure, a retry) is read first and,
when Exchange already shows the target state, recorded DONE without a second Set-Mailbox. The sweep
(writeback.jobs.waves.wave_sweep_job) returns members left RUNNING by a dead worker to PENDING and queues their
waves again. The wave's own moves, the pause when its window closes and its completion, are the services
wave_window_pause and wave_complete (soa.services.wave_run).

No worker waits for Exchange longer than the client's cap. When Exchange asks for a longer wait (Retry-After,
ExoRetryLater), the batch gives its members back and the wave's next batch is scheduled for that time; a mailbox
that answers 404 is given back with a growing delay until EXO_NOT_FOUND_RETRY_SECONDS after its first 404
(replication lag after a recent write, exchange-facts §4.3), then fails. Either way the member's ``not_before``
keeps it from being claimed early, and the attempt does not count against the retry policy's attempts
(writeback.jobs.lifecycle.MEMBER_RETRY).

To the cloud, the quiet period (soa.preflight.quiet_period_end, the rule pre-flight applied at submission) is
checked again just before each flip, because a wave can wait days for approval: with the WhenChangedUTC of the
pre-flip read and AD's own change time of the user. A member inside it is deferred, not failed
(writeback.wave_quiet_period says why).

With WAVE_PARALLEL_BATCHES above 1, several batches of one wave run at once on different workers, at the wave's rate
in all (writeback.wave_spread).

Back to AD, each flip is preceded by the copy of the mailbox's cloud Exchange attributes into AD
(writeback.wave_revert), so the sync that follows loses nothing.
"""

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max, Min, Q
from django.utils import timezone

from portal.audit import audit_record
from soa.choices import TARGET_AUTHORITY, MemberState, WaveDirection, WaveState
from soa.jobs import QUEUE as QUEUE  # the runner's queue, where the sweep schedule and the tests look for it
from soa.jobs import wave_enqueue
from soa.models import Mailbox, PilotWave, WaveMember
from soa.services import require_member_transition
from soa.services.wave_run import member_audit_snapshot, wave_complete, wave_window_pause, window_refusal
from soa.values import drifted_attributes, exo_values, refresh_drift
from writeback.directory import DirectoryClient, DirectoryConfig, DirectoryError
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient, ExchangeOnlineError, ExoNotFound, ExoRetryLater
from writeback.jobs.lifecycle import MEMBER_RETRY
from writeback.wave_quiet_period import quiet_period_deferral
from writeback.wave_revert import Copy, RevertNotVerified, copy_cloud_to_ad
from writeback.wave_spread import WaveSlots, parallel_batches, spread

logger = logging.getLogger(__name__)

# Delay before asking again for a mailbox that answered 404: the time since its first 404, kept within these
# bounds (so 15 s, 15 s, 30 s, 60 s, 60 s...), and never past the end of EXO_NOT_FOUND_RETRY_SECONDS.
NOT_FOUND_BACKOFF_MIN = 15.0
NOT_FOUND_BACKOFF_MAX = 60.0


@dataclass(frozen=True)
class Outcome:
    state: str  # DONE, FAILED, or PENDING (released after a transient failure)
    error: str = ""
    sent: bool = False  # whether a Set-Mailbox was sent
    changed: bool = False  # whether Exchange reported a change (False: it already held the value)
    copied: Copy | None = None  # back to AD: what was written into AD before the flag went back
    retry_at: dt.datetime | None = None  # Exchange asked to be called again at this time (PENDING)
    quiet_until: dt.datetime | None = None  # inside the quiet period until then (PENDING)
    not_found: bool = False  # Exchange answered 404 for the mailbox (PENDING until the bound, then FAILED)
    found_applied: bool = False  # the re-read before writing found the flip already applied by an earlier attempt

    @property
    def transient(self) -> bool:
        """A retryable failure, not a wait Exchange or the quiet period asked for: tried after MEMBER_RETRY's delay."""
        return self.state == MemberState.PENDING and not (self.retry_at or self.quiet_until or self.not_found)


def _client() -> ExchangeOnlineClient:
    return ExchangeOnlineClient(ExchangeConfig.from_settings())


# -- claim ---------------------------------------------------------------------------------------------------


def claim_batch(wave_id: int) -> list[WaveMember]:
    """Claim up to batch_size PENDING members of a RUNNING wave (PENDING -> RUNNING, one ``soa.wave.batch_claimed``
    event naming them). Other workers' rows are skipped, never waited for. Each claim counts as an attempt."""
    with transaction.atomic():
        wave = PilotWave.objects.filter(pk=wave_id).first()
        if wave is None or wave.state != WaveState.RUNNING:
            return []
        now = timezone.now()
        members = list(
            WaveMember.objects.select_for_update(skip_locked=True)
            .filter(wave_id=wave_id, state=MemberState.PENDING)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .order_by("pk")[: wave.batch_size]
        )
        if not members:
            return []
        for member in members:
            require_member_transition(member.state, MemberState.RUNNING)
        WaveMember.objects.filter(pk__in=[m.pk for m in members]).update(
            state=MemberState.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1
        )
        after = {"members": [m.pk for m in members], "state": MemberState.RUNNING, "started_at": now}
        audit_record(actor=None, action="soa.wave.batch_claimed", obj=wave, after=after)
    claimed = list(WaveMember.objects.select_related("mailbox", "wave").filter(pk__in=[m.pk for m in members]))
    # Whether each was tried before (its earlier claim may have applied the flip): remembered from before this one.
    tried_before = {m.pk: m.started_at is not None for m in members}
    for member in claimed:
        member.tried_before = tried_before[member.pk]
    return sorted(claimed, key=lambda m: m.pk)


# -- one flip --------------------------------------------------------------------------------------------------


def _identity(mailbox: Mailbox) -> str:
    return str(mailbox.exo_object_id) if mailbox.exo_object_id else mailbox.upn


def _merge(first: Copy, second: Copy) -> Copy:
    """Two copies of one mailbox as one: AD's values before the first, everything written, AD as last read."""
    return Copy(
        before={**second.before, **first.before},
        after={**first.after, **second.after},
        ad_values=second.ad_values,
        exo_values=second.exo_values,
    )


def flip(
    client: ExchangeOnlineClient,
    member: WaveMember,
    *,
    directory: DirectoryClient | None = None,
    copy_to_ad: bool = True,
) -> Outcome:
    """Move one mailbox to the wave's target state in Exchange Online. No transaction is open here.

    Back to AD, the mailbox's cloud Exchange attributes are first copied into AD and verified there
    (writeback.wave_revert); the flag goes back only after that. ``copy_to_ad=False`` exists for the test that
    shows what the copy prevents; nothing else passes it.
    """
    target = member.wave.direction == WaveDirection.TO_CLOUD
    mailbox = member.mailbox
    identity = _identity(mailbox)
    sent = False
    copied = None
    try:
        # Always read first, except back to AD without the copy (the test that shows what the copy prevents).
        current = client.get_mailbox(identity) if target or member.tried_before or copy_to_ad else None
        if member.tried_before and current.get("IsExchangeCloudManaged") is target:
            # An earlier claim applied the flip (and, back to AD, the copy that comes before it).
            return Outcome(MemberState.DONE, found_applied=True)
        if target:
            deferral = quiet_period_deferral(mailbox, current, directory)
            if deferral is not None:
                return Outcome(MemberState.PENDING, deferral[1], quiet_until=deferral[0])
        if not target and copy_to_ad:
            if mailbox.ad_guid is None:
                return Outcome(
                    MemberState.FAILED,
                    "Its AD user is not known to the portal, so its cloud values cannot be copied into AD first; "
                    "run an inventory import and retry.",
                )
            copied = copy_cloud_to_ad(directory, mailbox.ad_guid, current)
        sent = True
        result = client.set_mailbox(identity, IsExchangeCloudManaged=target, verify=True)
        reread = result.mailbox if copied is not None else None
        if reread is not None and drifted_attributes(exo_values(reread), exo_values(current)):
            # A cloud edit landed between the copy and the flip. The flag is now false, so the cloud's Exchange
            # attributes no longer change until the next sync: copy once more and nothing is lost.
            copied = _merge(copied, copy_cloud_to_ad(directory, mailbox.ad_guid, reread))
    except ExoRetryLater as error:
        return Outcome(MemberState.PENDING, str(error), sent=sent, copied=copied, retry_at=error.retry_at)
    except ExoNotFound as error:
        return Outcome(MemberState.PENDING, f"ExoNotFound: {error}", sent=sent, copied=copied, not_found=True)
    except ExchangeOnlineError as error:
        state = MemberState.PENDING if MEMBER_RETRY.retryable(error) else MemberState.FAILED
        return Outcome(state, f"{error.__class__.__name__}: {error}", sent=sent, copied=copied)
    except DirectoryError as error:
        state = MemberState.PENDING if MEMBER_RETRY.retryable(error) else MemberState.FAILED
        what = "Reading the user's change time in AD" if target else "Copying the cloud values into AD"
        return Outcome(state, f"{what} failed: {error}", sent=sent, copied=copied)
    except RevertNotVerified as error:
        return Outcome(MemberState.FAILED, str(error), sent=sent, copied=copied)
    return Outcome(MemberState.DONE, sent=True, changed=result.changed, copied=copied)


def _stamp(member: WaveMember) -> bool:
    """Refresh the claim just before flipping (the sweep's heartbeat); False when the member is no longer ours."""
    now = timezone.now()
    mine = WaveMember.objects.filter(pk=member.pk, state=MemberState.RUNNING, started_at=member.started_at).update(
        started_at=now, heartbeat_at=now
    )
    if mine:
        member.started_at = now
    return bool(mine)


def record(member: WaveMember, outcome: Outcome) -> str | None:
    """Record one member's result and its audit event in one short transaction; returns the state recorded, or
    None when the row was taken from this worker meanwhile (swept): its new owner reads the mailbox first."""
    with transaction.atomic():
        row = WaveMember.objects.select_for_update(of=("self",)).select_related("mailbox", "wave").get(pk=member.pk)
        if row.state != MemberState.RUNNING or row.started_at != member.started_at:
            return None
        before = member_audit_snapshot(row)
        now = timezone.now()
        state, error = outcome.state, outcome.error
        deferred = outcome.retry_at is not None or outcome.quiet_until is not None or outcome.not_found
        row.not_before = None
        if outcome.retry_at is not None or outcome.quiet_until is not None:
            row.not_before = outcome.retry_at or outcome.quiet_until
        elif outcome.not_found:
            state, error, row.not_before = _not_found_rule(row, now, error)
        else:
            row.not_found_since = None  # found (or failed for another reason): a later 404 starts a new count
        if state == MemberState.PENDING and row.wave.state == WaveState.CANCELLED:
            # Given back on a cancelled wave: SKIPPED, as cancel skips the pending ones (it will never run again).
            state, error, row.not_before = MemberState.SKIPPED, f"Wave cancelled; not flipped. {error}".strip(), None
        elif deferred and state == MemberState.PENDING:
            row.attempts -= 1  # waiting for Exchange is not the member's failure
        elif state == MemberState.PENDING and MEMBER_RETRY.gives_up(row.attempts):
            state, error = MemberState.FAILED, f"Gave up after {row.attempts} attempts. Last error: {error}"
        elif state == MemberState.PENDING:
            # A transient failure: claimed again at once, an outage of a minute would use up every attempt in a second.
            row.not_before = now + dt.timedelta(seconds=MEMBER_RETRY.delay(row.attempts))
        require_member_transition(row.state, state)
        row.state, row.last_error = state, error
        row.finished_at = None if state == MemberState.PENDING else now
        row.save(update_fields=["state", "last_error", "finished_at", "attempts", "not_before", "not_found_since"])
        if state == MemberState.DONE:
            Mailbox.objects.filter(pk=row.mailbox_id).update(
                authority=TARGET_AUTHORITY[member.wave.direction], version=F("version") + 1, updated_at=now
            )
        if outcome.copied is not None:
            _record_copy(row, outcome.copied, now)
        action = {
            MemberState.DONE: "soa.wave.member_done",
            MemberState.FAILED: "soa.wave.member_failed",
            MemberState.PENDING: "soa.wave.member_released",
            MemberState.SKIPPED: "soa.wave.member_skipped",
        }[state]
        after = {**member_audit_snapshot(row), "set_mailbox_sent": outcome.sent, "changed": outcome.changed}
        if outcome.found_applied:
            # What makes exactly-once provable from the log alone: this DONE sent nothing, because the flip it
            # found had been applied by an earlier claim whose worker died before recording it.
            after["found_applied"] = True
            error = FOUND_APPLIED
        if row.not_before is not None:
            after["not_before"] = row.not_before.isoformat()
        if outcome.copied is not None:
            after["ad_written"] = {"before": outcome.copied.before, "after": outcome.copied.after}
        audit_record(actor=None, action=action, obj=row, before=before, after=after, reason=error)
    return str(state)


FOUND_APPLIED = (
    "The re-read before writing found the flip already applied (by an earlier attempt whose worker stopped before "
    "recording it); no Set-Mailbox was sent."
)


def _cancelled(wave_id: int) -> bool:
    """Whether the wave was cancelled: members given back then are SKIPPED, as cancel skips the pending ones,
    instead of waiting as PENDING for a wave that will never run again."""
    return PilotWave.objects.filter(pk=wave_id, state=WaveState.CANCELLED).exists()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    return f"{seconds / 60:.0f} minutes"


def _not_found_rule(row: WaveMember, now: dt.datetime, error: str) -> tuple[str, str, dt.datetime | None]:
    """A 404 for the member's mailbox: (state, error, not_before). Retried with a growing delay until
    EXO_NOT_FOUND_RETRY_SECONDS after the first 404 (kept on the row), then FAILED with a message that says why."""
    bound = float(settings.EXO_NOT_FOUND_RETRY_SECONDS)
    first = row.not_found_since or now
    elapsed = (now - first).total_seconds()
    if elapsed >= bound:
        row.not_found_since = None  # a retry of the failed member starts a new count
        return (
            MemberState.FAILED,
            f"Exchange Online still did not find the mailbox {_duration(elapsed)} after its first 404 "
            f"(EXO_NOT_FOUND_RETRY_SECONDS={bound:.0f}): either replication lag after a recent change has not "
            f"caught up, or the mailbox was deleted. Last error: {error}",
            None,
        )
    row.not_found_since = first
    delay = min(max(NOT_FOUND_BACKOFF_MIN, elapsed), NOT_FOUND_BACKOFF_MAX, bound - elapsed)
    not_before = now + dt.timedelta(seconds=delay)
    return (
        MemberState.PENDING,
        f"Exchange Online answered 404 for the mailbox (first at {first:%Y-%m-%d %H:%M:%S} UTC), often replication "
        f"lag after a recent change; asking again at {not_before:%H:%M:%S} UTC. {error}",
        not_before,
    )


def _record_copy(member: WaveMember, copied: Copy, now: dt.datetime) -> None:
    """Keep the portal's picture of both sides current after the revert's copy (the next inventory would find the
    same): AD as read back, and the cloud as copied from, so the drift computed from the two is the real one."""
    mailbox = Mailbox.objects.select_for_update().get(pk=member.mailbox_id)
    mailbox.ad_values = {**mailbox.ad_values, **copied.ad_values}
    mailbox.exo_values = {**mailbox.exo_values, **copied.exo_values}
    refresh_drift(mailbox)
    mailbox.ad_read_at = mailbox.exo_read_at = now
    mailbox.save(
        update_fields=["ad_values", "exo_values", "drift", "has_drift", "ad_read_at", "exo_read_at", "updated_at"]
    )


def _release(members: list[WaveMember], why: str, *, not_before: dt.datetime | None = None) -> int:
    """Give claimed members that were not flipped back to PENDING (the wave was paused, its window closed, or
    Exchange asked to be called back at ``not_before``), with one ``soa.wave.batch_released`` event naming them.
    Their claim does not count as an attempt: waiting is not their failure."""
    if not members:
        return 0
    released = []
    with transaction.atomic():
        target = MemberState.SKIPPED if _cancelled(members[0].wave_id) else MemberState.PENDING
        require_member_transition(MemberState.RUNNING, target)
        finished_at = timezone.now() if target == MemberState.SKIPPED else None
        for member in members:
            # Only rows still held by this claim (RUNNING since this worker stamped them): the rest were recorded or
            # swept meanwhile.
            if WaveMember.objects.filter(pk=member.pk, state=MemberState.RUNNING, started_at=member.started_at).update(
                state=target, attempts=F("attempts") - 1, last_error=why, not_before=not_before, finished_at=finished_at
            ):
                released.append(member.pk)
        if released:
            after = {"members": released, "state": target, "not_before": not_before}
            audit_record(actor=None, action="soa.wave.batch_released", obj=members[0].wave, after=after, reason=why)
    return len(released)


# -- the batch and the wave's end ------------------------------------------------------------------------------


def _stop_reason(wave_id: int) -> str:
    """Why the batch must stop before the next member ("" to go on): the wave is no longer running, or its
    window closed (in which case the wave is paused by wave_window_pause, with its audit event)."""
    with transaction.atomic():
        wave = PilotWave.objects.select_for_update().get(pk=wave_id)
        if wave.state != WaveState.RUNNING:
            return f"Wave {wave.get_state_display().lower()} before this member's turn."
        refusal = window_refusal(wave, timezone.now())
        if refusal:
            wave_window_pause(wave_id=wave_id)
        return refusal


def settle(wave_id: int, *, retry_at: dt.datetime | None = None) -> str:
    """After a batch: queue the next one (at ``retry_at`` when Exchange asked to wait, or when the first deferred
    member is due), or complete the wave when no member is left to flip. Returns what it did."""
    with transaction.atomic():
        wave = PilotWave.objects.select_for_update().get(pk=wave_id)
        if wave.state != WaveState.RUNNING:
            return "stopped"
        open_states = dict(
            wave.members.filter(state__in=[MemberState.PENDING, MemberState.RUNNING])
            .values_list("state")
            .annotate(n=Count("id"))
        )
        if open_states.get(MemberState.PENDING):
            now = timezone.now()
            pending = wave.members.filter(state=MemberState.PENDING)
            due = None
            if not pending.filter(Q(not_before__isnull=True) | Q(not_before__lte=now)).exists():
                due = pending.aggregate(first=Min("not_before"))["first"]
            at = max(filter(None, (retry_at, due)), default=None)
            transaction.on_commit(partial(wave_enqueue, wave_id=wave_id, at=at))
            return "scheduled" if at is not None and at > now else "queued"
        if open_states.get(MemberState.RUNNING):
            return "waiting"  # another worker is still flipping; it settles the wave, or the sweep requeues it
        wave_complete(wave_id=wave_id)
        return "completed"


@dataclass
class Batch:
    """One claimed batch of a wave: its members, the time of the wave's last flip before it (for the rate), the
    member being flipped now (what a failure of the batch is charged to) and the counts by outcome."""

    wave_id: int
    members: list[WaveMember]
    last_flip: dt.datetime | None
    counts: dict[str, Any] = field(default_factory=dict)
    current: WaveMember | None = None


def claim(wave_id: int) -> Batch:
    """The batch's claim step: claim_batch, with what flipping it needs to know."""
    # The rate holds across batches: the first flip of this one waits for the interval after the previous flip
    # (started_at is stamped just before each flip).
    last_flip = WaveMember.objects.filter(wave_id=wave_id, finished_at__isnull=False).aggregate(last=Max("started_at"))[
        "last"
    ]
    members = claim_batch(wave_id)
    counts = {"claimed": len(members), "DONE": 0, "FAILED": 0, "PENDING": 0, "released": 0}
    if members and parallel_batches() > 1:
        now = timezone.now()
        due = WaveMember.objects.filter(wave_id=wave_id, state=MemberState.PENDING).filter(
            Q(not_before__isnull=True) | Q(not_before__lte=now)
        )
        counts["spread"] = spread(wave_id, due=due.count(), batch_size=members[0].wave.batch_size)
    return Batch(wave_id, members, last_flip, counts)


def flip_batch(
    batch: Batch,
    *,
    client: ExchangeOnlineClient | None = None,
    directory: DirectoryClient | None = None,
    sleep=time.sleep,
    copy_to_ad: bool = True,
) -> dict[str, Any]:
    """The batch's run step: flip the claimed members at the wave's rate; returns counts by outcome."""
    if not batch.members:
        return batch.counts
    client = client or _client()
    # Both ways: back to AD for the copy, to the cloud for AD's change time (the quiet period).
    own_directory = directory is None
    if own_directory:
        directory = DirectoryClient(DirectoryConfig.from_settings())
    try:
        _flip_batch(batch, client=client, directory=directory, sleep=sleep, copy_to_ad=copy_to_ad)
    finally:
        if own_directory:
            directory.close()
    return batch.counts


def give_back(batch: Batch, error: str) -> None:
    """The batch's fail step: the member being flipped when the batch failed is recorded PENDING with the error
    (FAILED once MEMBER_RETRY gives up on it); the members it had not reached are released uncharged."""
    if batch.current is not None:
        record(batch.current, Outcome(MemberState.PENDING, error))
    untouched = [m for m in batch.members if m is not batch.current]
    batch.counts["released"] = _release(untouched, f"Released after the batch failed: {error}")


def run_batch(
    wave_id: int,
    *,
    client: ExchangeOnlineClient | None = None,
    directory: DirectoryClient | None = None,
    sleep=time.sleep,
    copy_to_ad: bool = True,
) -> dict[str, Any]:
    """Claim and flip one batch of the wave at its rate, in this process (tests, benchmarks; the job is
    writeback.jobs.waves.wave_run_job); returns counts by outcome. ``copy_to_ad``: see flip."""
    return flip_batch(claim(wave_id), client=client, directory=directory, sleep=sleep, copy_to_ad=copy_to_ad)


def _flip_batch(batch: Batch, *, client, directory, sleep, copy_to_ad: bool) -> None:
    """Flip the claimed members one by one at the wave's rate, stopping when the wave stops (flip_batch's body)."""
    members, counts = batch.members, batch.counts
    parallel = parallel_batches()
    # Several batches of the wave share its rate through Redis; without it, each takes its share.
    slots = WaveSlots(batch.wave_id, members[0].wave.max_rate) if parallel > 1 else None
    interval = parallel / members[0].wave.max_rate
    since_last = (timezone.now() - batch.last_flip).total_seconds() if batch.last_flip else interval
    next_at = time.monotonic() + max(0.0, interval - since_last)
    for index, member in enumerate(members):
        turn = slots.wait() if slots is not None else None
        delay = turn if turn is not None else next_at - time.monotonic()
        if delay > 0:
            sleep(delay)
        stop = _stop_reason(batch.wave_id)  # after the wait, so a pause made during it holds
        if stop:
            counts["released"] = _release(members[index:], stop)
            break
        if not _stamp(member):
            continue  # swept from under this worker
        next_at = time.monotonic() + interval
        batch.current = member
        outcome = flip(client, member, directory=directory, copy_to_ad=copy_to_ad)
        recorded = record(member, outcome)
        batch.current = None
        if recorded:
            counts[recorded] += 1
        if outcome.retry_at is not None:
            # Exchange's answer holds for the app, not just this mailbox: the rest of the batch waits with it.
            counts["retry_at"] = outcome.retry_at
            why = f"Exchange Online asked to wait until {outcome.retry_at:%Y-%m-%d %H:%M:%S} UTC."
            counts["released"] = _release(members[index + 1 :], why, not_before=outcome.retry_at)
            break
        if recorded == MemberState.PENDING and outcome.transient:
            # Exchange failing or the directory unreachable fails the next member too: the rest of the batch waits
            # with this one, unclaimed, instead of each spending an attempt on the same outage.
            waiting_until = WaveMember.objects.get(pk=member.pk).not_before
            why = f"Waiting with another member after a transient failure: {outcome.error}"
            counts["released"] = _release(members[index + 1 :], why, not_before=waiting_until)
            break


# The entrypoints moved to writeback.jobs.waves (the job lifecycle); these names stay importable from here for one
# release, since jobs queued in Redis name writeback.wave_jobs.wave_run_job and wave_sweep_job.
_MOVED = {"wave_run_job", "wave_sweep_job", "SWEEP_AFTER"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from writeback.jobs import waves

        return getattr(waves, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
