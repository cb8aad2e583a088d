"""Redis killed mid-wave and started again empty, under a real worker process (``manage.py rqworker
--with-scheduler``, the portal's worker class): the worker outlives the outage, the batch in flight finishes, the next
batch that could not be queued is left waiting in the database, the worker schedules the periodic sweep again by
itself, and the sweep queues the wave again, which completes with every mailbox flipped exactly once. No person runs
anything. Needs a database that worker processes share with the test: PostgreSQL (CI).
"""

import subprocess
import time as clock

import pytest
from django.db import connection

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa.choices import Authority, MemberState, WaveState
from soa.models import Mailbox, PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.wave_run import wave_start
from soa.services.waves import wave_submit
from tests.exchange_fixtures import private_tenant
from tests.soa.test_wave_support import cast, new_wave, set_mailbox_calls
from tests.writeback.worker_process import worker_command, worker_env
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

MEMBERS = 40
HOLD = 2.0  # seconds the emulator holds a Set-Mailbox while Redis is killed
WAIT = 120.0

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=MEMBERS + 10, seed=61) as (_, exchange, _report):
        yield exchange


@pytest.fixture
def exchange(tenant, settings, private_redis):
    if connection.vendor != "postgresql":
        pytest.skip("worker processes share the test database only on PostgreSQL (CI runs it there)")
    tenant.reset()
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed has just written every mailbox
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    yield tenant
    tenant.reset()


def _done(wave) -> int:
    return WaveMember.objects.filter(wave=wave, state=MemberState.DONE).count()


def test_redis_killed_mid_wave_and_back_empty_the_wave_completes_by_itself_flipping_each_mailbox_once(
    exchange, make_user, private_redis, tmp_path
):
    people = cast(make_user)
    mailboxes = list(
        Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True).order_by("upn")[:MEMBERS]
    )
    assert len(mailboxes) == MEMBERS
    wave = new_wave(people["op"], *mailboxes, batch_size=5, max_rate=10.0)
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=wave.pk)

    # The worker checks its periodic jobs every second, sweeps every 2 s, and queues a wave idle for 3 s whose batch
    # Redis does not hold: the production figures (30 s, 300 s, 60 s) with the same behaviour.
    env = {**worker_env(), "WORKER_WATCH_SECONDS": "1", "WAVE_SWEEP_INTERVAL": "2", "WAVE_REQUEUE_AFTER_SECONDS": "3"}
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            worker_command("--with-scheduler"), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = clock.monotonic() + WAIT
            while _done(wave) < 10:
                assert clock.monotonic() < deadline and worker.poll() is None, log_path.read_text()[-4000:]
                clock.sleep(0.05)
            # Hold the next Set-Mailbox, so that Redis dies while a batch is half-way: the batch then ends, and asks
            # for the next one, with Redis away.
            exchange.set_faults(latency_ms=HOLD * 1000, latency_cmdlet="Set-Mailbox")
            while not WaveMember.objects.filter(wave=wave, state=MemberState.RUNNING).exists():
                assert clock.monotonic() < deadline and worker.poll() is None, log_path.read_text()[-4000:]
                clock.sleep(0.05)
            clock.sleep(HOLD / 4)
            private_redis.stop()  # killed mid-wave
            exchange.clear_faults()
            while WaveMember.objects.filter(wave=wave, state=MemberState.RUNNING).exists():  # the batch finishes
                assert clock.monotonic() < deadline and worker.poll() is None, log_path.read_text()[-4000:]
                clock.sleep(0.05)
            clock.sleep(1)
            assert worker.poll() is None, log_path.read_text()[-4000:]
            assert _done(wave) < MEMBERS  # nothing runs the wave on while Redis is away
            private_redis.start()  # back, and empty: no batch, no sweep, no scheduler lock

            while PilotWave.objects.get(pk=wave.pk).state != WaveState.COMPLETED:
                assert clock.monotonic() < deadline, log_path.read_text()[-4000:]
                assert worker.poll() is None, log_path.read_text()[-4000:]
                clock.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(timeout=30)

    output = log_path.read_text()
    assert "Could not queue writeback.jobs.waves.wave_run_job" in output  # the fault happened where it was meant to
    assert "scheduled the missing periodic job(s) Sweep" in output
    assert _done(wave) == MEMBERS
    assert set_mailbox_calls(exchange) == MEMBERS  # every mailbox flipped, none twice
    in_cloud = {m["ExternalDirectoryObjectId"] for m in exchange.mailboxes() if m["IsExchangeCloudManaged"]}
    assert {str(mailbox.exo_object_id) for mailbox in mailboxes} <= in_cloud
    done = list(AuditEvent.objects.filter(action="soa.wave.member_done").values_list("object_id", flat=True))
    assert len(done) == len(set(done)) == MEMBERS
    assert verify_chain()[1] is None
