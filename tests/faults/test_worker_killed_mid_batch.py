"""A worker SIGKILLed mid-batch twenty times during one wave, under real worker processes (``manage.py rqworker
--with-scheduler``, the portal's worker class), a private Redis and the Exchange Online emulator: the wave completes
with every mailbox flipped exactly once, nothing lost, and no recovery waits for the periodic sweep.

Two workers run; each time, the one running a batch of the wave is killed with its work horse (a crashed machine) and
a new one is started. The dead batch's members stop beating, and the surviving worker's watch returns them within
WAVE_STALE_SECONDS + WAVE_WATCH_SECONDS (here 2 s + 1 s; 10 s + 3 s in production) and queues the wave again. The
periodic sweep is set to 600 s, after the test's deadline, so it cannot be what recovers the wave. Every fourth kill
lands while the emulator holds a Set-Mailbox (latency fault on that cmdlet); the held call is carried out after the
worker died, as a real server does with a request it has received, so the retry finds the flip already applied.

Exactly once is checked twice: by the emulator (Set-Mailbox calls received = members, every mailbox cloud-managed)
and by the audit log alone (one member_done per member, each either a Set-Mailbox that changed the flag or a re-read
that found it applied, those two numbers adding up to the Set-Mailbox calls). Needs a database that worker processes
share with the test: PostgreSQL (CI).
"""

import datetime as dt
import logging
import statistics
import subprocess
import sys
import time as clock

import django_rq
import pytest
from django.utils import timezone
from rq import Worker

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa.choices import MemberState, WaveState
from soa.jobs import WAVE_RUN_JOB
from soa.models import PilotWave, WaveMember
from tests.faults.wave_support import tenant_fixtures
from tests.soa.test_wave_support import cast, movable, set_mailbox_calls, started_wave
from tests.writeback.worker_process import forget_killed_jobs, kill_worker, worker_command, worker_env
from writeback import wave_jobs

MEMBERS = 100
KILLS = 20
HOLD = 1.0  # seconds the emulator holds a Set-Mailbox around every fourth kill
WAIT = 240.0  # the deadline for the whole wave; the periodic sweep's first run would be at 600 s
# The worker processes' timing: the production figures are 2 s, 10 s and 3 s.
TIMING = {"WAVE_HEARTBEAT_SECONDS": "0.25", "WAVE_STALE_SECONDS": "2", "WAVE_WATCH_SECONDS": "1",
          "WAVE_SWEEP_INTERVAL": "600"}  # fmt: skip

pytestmark = pytest.mark.django_db(transaction=True)
logger = logging.getLogger(__name__)

tenant, exchange = tenant_fixtures(users=MEMBERS + 10, seed=97, postgresql_only=True)


class Workers:
    """Worker processes of the test, each logging to a file of its own."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.alive: list[subprocess.Popen] = []
        self.started = 0

    def start(self) -> None:
        self.started += 1
        with open(self.tmp_path / f"worker{self.started}.log", "wb") as log:
            self.alive.append(
                subprocess.Popen(
                    worker_command("--with-scheduler"),
                    env={**worker_env(), **TIMING},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )

    def running_a_batch(self) -> subprocess.Popen | None:
        """The live worker process whose work horse runs a batch of a wave now, if any."""
        queue = django_rq.get_queue(wave_jobs.QUEUE)
        by_pid = {process.pid: process for process in self.alive}
        for worker in Worker.all(connection=queue.connection):
            job_id = worker.get_current_job_id()
            if worker.pid in by_pid and job_id:
                job = queue.fetch_job(job_id)
                if job is not None and job.func_name == WAVE_RUN_JOB:
                    return by_pid[worker.pid]
        return None

    def kill(self, process: subprocess.Popen) -> None:
        kill_worker(process)
        self.alive.remove(process)

    def logs(self) -> str:
        return "\n".join((self.tmp_path / f"worker{n}.log").read_text()[-3000:] for n in range(1, self.started + 1))

    def stop(self) -> None:
        for process in self.alive:
            process.terminate()
        for process in self.alive:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Seen once in CI: a worker still in its warm shutdown 30 s after SIGTERM, after the wave had
                # completed and every check had passed. The test is over: end it as the test ends the others, and
                # leave its log for whoever looks into the slow shutdown.
                sys.stderr.write(f"worker {process.pid} ignored SIGTERM for 30 s; killed. Its log:\n{self.logs()}\n")
                kill_worker(process)
        forget_killed_jobs()  # while the private Redis that holds them still runs


def _in_flight(wave) -> dict[str, dt.datetime]:
    """The wave's RUNNING members (id as the audit log writes it -> claim stamp)."""
    rows = WaveMember.objects.filter(wave=wave, state=MemberState.RUNNING).values_list("pk", "started_at")
    return {str(pk): started for pk, started in rows}


def _recovery_seconds(kills: list[tuple[dt.datetime, dict[str, dt.datetime]]]) -> list[float]:
    """For each kill, seconds until the last member the dead batch held was returned: its members are those RUNNING
    just after the kill that a member_swept event later returned with the same claim stamp."""
    swept = AuditEvent.objects.filter(action="soa.wave.member_swept").values_list("object_id", "before", "occurred_at")
    delays = []
    for killed_at, in_flight in kills:
        returned = [
            at
            for member, before, at in swept
            if member in in_flight
            and at > killed_at
            and abs(dt.datetime.fromisoformat(before["started_at"].replace("Z", "+00:00")) - in_flight[member])
            < dt.timedelta(milliseconds=2)
        ]
        if returned:
            delays.append((max(returned) - killed_at).total_seconds())
    return delays


def _count(wave, state) -> int:
    return WaveMember.objects.filter(wave=wave, state=state).count()


def test_a_worker_killed_twenty_times_mid_batch_loses_nothing_and_flips_nothing_twice(
    private_redis, exchange, make_user, tmp_path
):
    people = cast(make_user)
    mailboxes = movable(MEMBERS)
    wave = started_wave(people, mailboxes, batch_size=4, max_rate=10.0)
    workers = Workers(tmp_path)
    kills: list[tuple[dt.datetime, dict[str, dt.datetime]]] = []
    deadline = clock.monotonic() + WAIT
    try:
        workers.start()
        workers.start()
        done_at_last_kill = 0
        while len(kills) < KILLS:
            # A batch of the wave is running, and the wave has moved on since the last kill.
            victim = None
            while victim is None:
                assert clock.monotonic() < deadline, f"{len(kills)} kills\n{workers.logs()}"
                if _count(wave, MemberState.DONE) > done_at_last_kill + 1 and _count(wave, MemberState.RUNNING):
                    victim = workers.running_a_batch()
                clock.sleep(0.05)
            held = len(kills) % 4 == 3
            if held:
                exchange.set_faults(latency_ms=HOLD * 1000, latency_cmdlet="Set-Mailbox")
                clock.sleep(HOLD / 2)  # the victim's next Set-Mailbox is now being held
            workers.kill(victim)
            kills.append((timezone.now(), _in_flight(wave)))
            done_at_last_kill = _count(wave, MemberState.DONE)
            workers.start()  # as systemd would; the surviving worker recovers the wave meanwhile
            if held:
                clock.sleep(HOLD / 2 + 0.2)  # the held call is carried out on the server after the worker died
                exchange.clear_faults()
        while PilotWave.objects.get(pk=wave.pk).state != WaveState.COMPLETED:
            assert clock.monotonic() < deadline, workers.logs()
            clock.sleep(0.1)
    finally:
        workers.stop()

    assert _count(wave, MemberState.DONE) == MEMBERS
    # The emulator: one Set-Mailbox per mailbox, every mailbox now cloud-managed.
    sets = set_mailbox_calls(exchange)
    assert sets == MEMBERS
    in_cloud = {m["ExternalDirectoryObjectId"] for m in exchange.mailboxes() if m["IsExchangeCloudManaged"]}
    assert {str(mailbox.exo_object_id) for mailbox in mailboxes} <= in_cloud
    # The audit log alone: one member_done each, each either the Set-Mailbox that changed the flag or a re-read that
    # found an earlier (killed) attempt had; the two add up to what Exchange received.
    done = list(AuditEvent.objects.filter(action="soa.wave.member_done").values_list("object_id", "after"))
    assert len(done) == len({member for member, _after in done}) == MEMBERS
    changed = sum(1 for _member, after in done if after["set_mailbox_sent"] and after["changed"])
    found = sum(1 for _member, after in done if after.get("found_applied"))
    assert changed + found == MEMBERS == sets
    assert found >= 1  # at least one kill landed inside a Set-Mailbox the server then carried out
    swept = sorted(AuditEvent.objects.filter(action="soa.wave.member_swept").values_list("occurred_at", flat=True))
    assert len(swept) >= KILLS  # every kill left members behind, each returned by a live worker's watch
    assert "whose worker had stopped" in workers.logs()
    assert verify_chain()[1] is None
    # Seconds from each kill to its batch's members all returned (reported, not asserted: speed lives in bench/).
    delays = _recovery_seconds(kills)
    assert delays
    logger.warning(
        "Kill to the dead batch's members returned, over %d of %d kills: min %.1f s, median %.1f s, max %.1f s; "
        "%d member(s) found already applied", len(delays), len(kills), min(delays), statistics.median(delays),
        max(delays), found,
    )  # fmt: skip
