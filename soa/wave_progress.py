"""A pilot wave's live progress, for the wave page and its polled partial: members by state, the recent rate, the
time left, the latest failures with their reasons, and whether the wave waits for a worker or has stalled (members
being flipped that no worker has touched for WAVE_STALE_SECONDS: their worker died). Reads only; /healthz reports
the stalled waves too (``stalled_waves``)."""

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from portal.roles import Action, may
from soa.choices import MemberState, WaveState
from soa.models import PilotWave, WaveMember

# The rate is measured over the last minute of work: long enough to smooth the wave's own throttle and the
# tenant's 429 back-offs, short enough that the time left follows a slowdown within a minute.
RATE_WINDOW = dt.timedelta(seconds=60)
FAILURES_SHOWN = 10
# A running wave with members due, none being flipped and nothing done for this long waits for a worker: its next
# batch is not queued (Redis was down when it was asked for), or no worker takes it. A worker claims a queued batch in
# well under a second, so this only has to outlast the moment between two batches.
WAITING_AFTER = dt.timedelta(seconds=15)


@dataclass(frozen=True)
class Failure:
    """One failed member and why it failed (the runner's last error)."""

    member_id: int
    upn: str
    error: str
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class WaveProgress:
    """How far a wave has got. ``rate`` (members finished per second) and ``eta_seconds`` are None while they
    cannot be known: the wave is not running, or nothing has finished in the measuring window yet."""

    state: str
    total: int
    pending: int
    running: int
    done: int
    failed: int
    skipped: int
    rate: float | None
    eta_seconds: int | None
    failures: list[Failure]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    waiting_since: dt.datetime | None = None  # no worker has taken the wave's next batch since then
    stalled_seconds: int | None = None  # members are being flipped, but no worker has touched the wave for so long

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def remaining(self) -> int:
        return self.pending + self.running

    @property
    def percent(self) -> int:
        return self.finished * 100 // self.total if self.total else 0

    @property
    def live(self) -> bool:
        """Whether the numbers are still moving, so the page should keep polling: the wave runs, or it was paused
        while a worker was still flipping (the member in flight finishes after the pause)."""
        return self.state == WaveState.RUNNING or self.running > 0

    @property
    def stalled(self) -> bool:
        return self.stalled_seconds is not None

    @property
    def average_rate(self) -> float | None:
        """Members flipped (done or failed) per second from start to finish, pauses included; None until the wave
        has finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        seconds = (self.finished_at - self.started_at).total_seconds()
        return (self.done + self.failed) / seconds if seconds > 0 else None

    @property
    def eta_display(self) -> str:
        if self.eta_seconds is None:
            return ""
        if self.eta_seconds < 90:
            return f"about {self.eta_seconds} s"
        minutes = round(self.eta_seconds / 60)
        if minutes < 90:
            return f"about {minutes} min"
        return f"about {minutes // 60} h {minutes % 60} min"


def _rate_since(wave: PilotWave, now: dt.datetime) -> dt.datetime | None:
    """Where the rate's measuring window starts, or None when no rate applies (the wave is not running).

    A running wave's updated_at is when it last started or resumed: the runner writes the wave row only to end or
    pause it. So a wave resumed after a long pause is measured from its resume, not over its idle time.
    """
    if wave.state != WaveState.RUNNING:
        return None
    starts = [now - RATE_WINDOW, wave.updated_at, wave.started_at]
    return max(start for start in starts if start is not None)


def wave_progress(*, user, wave: PilotWave, now: dt.datetime | None = None) -> WaveProgress | None:
    """The wave's progress as the user may see it (None when they may not read waves): one aggregate query over
    the members' states, and one for the latest failures."""
    if not may(user, Action.WAVE_VIEW):
        return None
    now = now or timezone.now()
    since = _rate_since(wave, now)
    finished_recently = Q(state__in=[MemberState.DONE, MemberState.FAILED], finished_at__gte=since or now)
    counts = WaveMember.objects.filter(wave_id=wave.pk).aggregate(
        total=Count("id"),
        pending=Count("id", filter=Q(state=MemberState.PENDING)),
        running=Count("id", filter=Q(state=MemberState.RUNNING)),
        done=Count("id", filter=Q(state=MemberState.DONE)),
        failed=Count("id", filter=Q(state=MemberState.FAILED)),
        skipped=Count("id", filter=Q(state=MemberState.SKIPPED)),
        recent=Count("id", filter=finished_recently),
        due=Count("id", filter=Q(state=MemberState.PENDING) & (Q(not_before__isnull=True) | Q(not_before__lte=now))),
        last_started=Max("started_at"),
        last_finished=Max("finished_at"),
        last_beat=Max(_BEAT, filter=Q(state=MemberState.RUNNING)),
        last_flipped=Max("finished_at", filter=Q(state__in=_FLIPPED)),
    )
    stalled = _stalled_seconds(counts, now)
    # Failed members count in the rate: a failure costs the runner a flip's time as much as a success does. A stalled
    # wave has no rate and no time left: nothing moves until its members are returned to a live worker.
    rate = eta = None
    if since is not None and counts["recent"] and stalled is None:
        rate = counts["recent"] / max((now - since).total_seconds(), 1.0)
        eta = round((counts["pending"] + counts["running"]) / rate)
    failures = []
    if counts["failed"]:
        rows = (
            WaveMember.objects.filter(wave_id=wave.pk, state=MemberState.FAILED)
            .order_by("-finished_at", "-id")
            .values_list("pk", "mailbox__upn", "last_error", "finished_at")[:FAILURES_SHOWN]
        )
        failures = [Failure(member_id=pk, upn=upn, error=error, finished_at=at) for pk, upn, error, at in rows]
    return WaveProgress(
        state=wave.state,
        total=counts["total"],
        pending=counts["pending"],
        running=counts["running"],
        done=counts["done"],
        failed=counts["failed"],
        skipped=counts["skipped"],
        rate=rate,
        eta_seconds=eta,
        failures=failures,
        started_at=wave.started_at,
        finished_at=wave.finished_at,
        waiting_since=_waiting_since(wave, counts, now),
        stalled_seconds=stalled,
    )


# A running member's last sign of life: its batch's heartbeat, or its claim for rows claimed before heartbeats.
_BEAT = Coalesce("heartbeat_at", "started_at")
# Members whose end a worker recorded (a cancel skips members too, but that is no worker's sign of life).
_FLIPPED = [MemberState.DONE, MemberState.FAILED]


def _stale_after() -> dt.timedelta:
    return dt.timedelta(seconds=float(settings.WAVE_STALE_SECONDS))


def _stalled_seconds(counts: dict, now: dt.datetime) -> int | None:
    """Seconds since a worker last touched a wave whose members are being flipped, once that is longer than
    WAVE_STALE_SECONDS (its worker died; the watch of any live worker returns them within seconds), else None."""
    if not counts["running"] or counts["last_beat"] is None:
        return None
    idle = now - max(moment for moment in (counts["last_beat"], counts["last_flipped"]) if moment)
    return int(idle.total_seconds()) if idle >= _stale_after() else None


@dataclass(frozen=True)
class StalledWave:
    """A wave with members being flipped that no worker has touched for ``seconds``."""

    wave_id: int
    name: str
    running: int
    seconds: int


def stalled_waves(now: dt.datetime | None = None) -> list[StalledWave]:
    """Every stalled wave (see _stalled_seconds), for /healthz: one query over the running members."""
    now = now or timezone.now()
    candidates = (
        WaveMember.objects.filter(state=MemberState.RUNNING)
        .values("wave_id")
        .annotate(running=Count("id"), last_beat=Max(_BEAT))
        .filter(last_beat__lt=now - _stale_after())
    )
    found = []
    for row in candidates:
        wave = PilotWave.objects.filter(pk=row["wave_id"]).values_list("name", flat=True).first()
        activity = WaveMember.objects.filter(wave_id=row["wave_id"], state__in=_FLIPPED).aggregate(
            last_flipped=Max("finished_at")
        )
        seconds = _stalled_seconds({**activity, **row}, now)
        if seconds is not None and wave is not None:
            found.append(StalledWave(row["wave_id"], wave, row["running"], seconds))
    return found


def _waiting_since(wave: PilotWave, counts: dict, now: dt.datetime) -> dt.datetime | None:
    """Since when a running wave has waited for a worker (members due, none being flipped, nothing done for
    WAITING_AFTER), or None. A running wave's updated_at is its last start or resume (see _rate_since)."""
    if wave.state != WaveState.RUNNING or counts["running"] or not counts["due"]:
        return None
    moments = [wave.updated_at, wave.started_at, counts["last_started"], counts["last_finished"]]
    last = max(moment for moment in moments if moment is not None)
    return last if now - last >= WAITING_AFTER else None
