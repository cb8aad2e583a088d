"""One wave flipped by two real worker processes (rqworker) at once (WAVE_PARALLEL_BATCHES=2), against the HTTPS
emulator throttled to a budget the two together would outrun: they share the budget through Redis
(writeback.exchange.shared_budget), so the emulator answers none of their calls 429, and no member is flipped twice.
Needs a database that worker processes share with the test: PostgreSQL (CI).

The emulator's throttle answers with Rate-Limit-Limit, Rate-Limit-Remaining and Rate-Limit-Reset as Exchange Online
does (exchange-facts §4.5); the bucket learns everything it paces by from them.
"""

import subprocess
import time as clock
from contextlib import contextmanager

import django_rq
import pytest
from django.db import connection
from rq import Worker
from rq.job import Job

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa.choices import Authority, MemberState, WaveState
from soa.jobs import WAVE_RUN_JOB
from soa.models import Mailbox, PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.wave_run import wave_start
from soa.services.waves import wave_submit
from tests.exchange_fixtures import forget_shared_budget, private_tenant
from tests.soa.test_wave_support import cast, new_wave, set_mailbox_calls
from tests.writeback.worker_process import kill_worker, start_worker
from writeback import wave_jobs
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

MEMBERS = 60
WORKERS = 2

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=MEMBERS + 40, seed=43) as (_, exchange, _report):
        yield exchange


@pytest.fixture
def exchange(tenant, settings):
    if connection.vendor != "postgresql":
        pytest.skip("worker processes share the test database only on PostgreSQL (CI runs it there)")
    tenant.reset()
    forget_shared_budget(tenant)
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed has just written every mailbox
    settings.WAVE_PARALLEL_BATCHES = WORKERS
    settings.EXO_SHARED_BUDGET = True
    django_rq.get_queue(wave_jobs.QUEUE).empty()
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    yield tenant
    tenant.reset()
    forget_shared_budget(tenant)


@pytest.fixture
def people(make_user):
    return cast(make_user)


@contextmanager
def workers(count: int, tmp_path):
    """``count`` long-running workers, idle on the queue before the test goes on; stopped (warm, then killed) after."""
    queue = django_rq.get_queue(wave_jobs.QUEUE)
    started = []
    logs = [open(tmp_path / f"worker{number}.log", "wb") for number in range(count)]  # noqa: SIM115
    try:
        started = [start_worker(log) for log in logs]
        deadline = clock.monotonic() + 60
        while Worker.count(queue=queue) < count:
            assert clock.monotonic() < deadline and all(w.poll() is None for w in started), _logs(tmp_path)
            clock.sleep(0.1)
        yield started
    finally:
        for worker in started:
            worker.terminate()
        for worker in started:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_worker(worker)
        for log in logs:
            log.close()


def _logs(tmp_path) -> str:
    return "\n".join(path.read_text()[-3000:] for path in sorted(tmp_path.glob("worker*.log")))


def _workers_that_ran(wave_id: int) -> set[str]:
    queue = django_rq.get_queue(wave_jobs.QUEUE)
    jobs = Job.fetch_many(queue.finished_job_registry.get_job_ids(), connection=queue.connection)
    return {job.worker_name for job in jobs if job and job.func_name == WAVE_RUN_JOB and job.args[0] == wave_id}


def test_two_workers_flip_one_wave_within_the_shared_budget_and_flip_nothing_twice(exchange, people, tmp_path):
    # 30 requests/s for the app, a bucket of 5: at most 10 flips/s (read, Set-Mailbox, confirming read), under what
    # either worker alone sends at the wave's rate of 100.
    exchange.set_throttle(rate=30, burst=5)
    before = exchange.counters()
    mailboxes = list(
        Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True).order_by("upn")[:MEMBERS]
    )
    assert len(mailboxes) == MEMBERS
    wave = new_wave(people["op"], *mailboxes, batch_size=10, max_rate=100.0)
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)

    with workers(WORKERS, tmp_path):
        wave_start(actor=people["op2"], wave_id=wave.pk)
        deadline = clock.monotonic() + 240
        while PilotWave.objects.get(pk=wave.pk).state != WaveState.COMPLETED:
            assert clock.monotonic() < deadline, _logs(tmp_path)
            clock.sleep(0.2)

    after = exchange.counters()
    assert WaveMember.objects.filter(wave=wave, state=MemberState.DONE).count() == MEMBERS
    assert set_mailbox_calls(exchange) == MEMBERS  # each member flipped exactly once
    done = list(AuditEvent.objects.filter(action="soa.wave.member_done").values_list("object_id", flat=True))
    assert len(done) == len(set(done)) == MEMBERS
    in_cloud = {m["ExternalDirectoryObjectId"] for m in exchange.mailboxes() if m["IsExchangeCloudManaged"]}
    assert {str(mailbox.exo_object_id) for mailbox in mailboxes} <= in_cloud
    assert len(_workers_that_ran(wave.pk)) == WORKERS, _logs(tmp_path)  # both worked the wave
    assert after["throttled"] - before["throttled"] == 0, _logs(tmp_path)
    assert verify_chain()[1] is None
