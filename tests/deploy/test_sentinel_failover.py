"""Redis Sentinel failover under the portal (portal/redis_config.py; docs/deployment.md, Redis Sentinel).

A private group (tests/deploy/sentinel_group.py): a master, its replica and three Sentinels. The master is SIGKILLed,
as a crashed process or host stops (its connections are closed at once), or SIGSTOPped, as a host that hangs or drops
off the network (its connections stay open and nothing answers). The test then waits, by polling what Sentinel
reports, for the replica's promotion. Nothing of the portal is restarted or reconfigured meanwhile: its queues
(django-rq with the Sentinel keys of portal.redis_config.rq_queues), the health check's client (portal.health,
redis_config.client_for), the Exchange budget's per-process client (writeback.exchange.shared_budget) and a running
`manage.py rqworker` as deploy/soa-portal-worker@.service starts it all reach the new master by themselves: each
connection the portal opens asks the Sentinels where the master is (redis-py's SentinelConnectionPool), and one that
breaks or times out is opened again. A job queued before the failover and taken by the replica (WAIT) is still there
after it and runs.

A master that hangs is why the Sentinel configuration bounds every call (REDIS_SOCKET_TIMEOUT, 5 s unless set): before
that bound, a call already waiting on a connection to it waited for ever, failover or not.
"""

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import django_rq
import pytest
import redis
from django.conf import settings
from rq import SimpleWorker
from rq.job import Job, JobStatus

from portal import health
from portal.redis_config import client_for, rq_queues, sentinel_settings
from sandbox.process import child_dies_with_parent
from tests.deploy.sentinel_group import MASTER_NAME, SentinelGroup
from writeback.exchange import shared_budget

ROOT = Path(__file__).resolve().parents[2]
CALL_WAIT = 60.0  # a bound on one call of the portal: far above its timeouts, so reached only by a call none bounds
JOB_WAIT = 90.0  # a bound on a running worker taking a job, worker back-off after the failover included


@pytest.fixture
def group(tmp_path):
    group = SentinelGroup.start(tmp_path / "redis")
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def portal_on_sentinels(group, settings):
    """This process's portal configured as an operator would: REDIS_SENTINELS and REDIS_SENTINEL_MASTER only."""
    sentinel = sentinel_settings(group.sentinels_setting, MASTER_NAME)
    settings.REDIS_SENTINEL = sentinel
    settings.RQ_QUEUES = rq_queues("", sentinel)
    settings.HEALTH_CACHE_SECONDS = 0
    return sentinel


def _server(client: redis.Redis) -> tuple[int, str]:
    """The port and role of the server that answers on this client's own connection."""
    return client.info("server")["tcp_port"], client.info("replication")["role"]


def _health_client() -> redis.Redis:
    queue = rq_queues(settings.REDIS_URL, settings.REDIS_SENTINEL)["default"]
    return client_for(queue, timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)


def test_after_the_master_dies_the_portal_reaches_the_promoted_replica_by_itself(group, portal_on_sentinels):
    kept = django_rq.get_queue("writeback")  # a connection pool kept across the failover, as a process keeps its own
    budget = shared_budget.settings_connection()  # the per-process client a worker keeps for the Exchange budget
    before = kept.enqueue("builtins.len", "abcd")
    # The replica holds the job before the master dies: what Sentinel promotes is what the master had acknowledged.
    assert kept.connection.wait(1, 10_000) == 1
    assert _server(kept.connection) == (group.master.port, "master")
    assert health._redis() == "PONG"
    budget_client = budget()
    assert budget_client.ping() and _server(budget_client) == (group.master.port, "master")

    group.kill_master()
    group.wait_for_promotion()

    new_master = (group.replica.port, "master")
    assert _server(kept.connection) == new_master
    assert health._redis() == "PONG"
    checked = health._timed("redis", health._redis)
    assert checked.ok, checked.detail
    with _health_client() as client:
        assert _server(client) == new_master
    assert budget() is budget_client and _server(budget_client) == new_master
    fresh = django_rq.get_queue("default")  # as the next web request or job opens it
    assert _server(fresh.connection) == new_master

    assert Job.fetch(before.id, connection=fresh.connection).get_status() == JobStatus.QUEUED
    after_kept = kept.enqueue("builtins.len", "abcdef")
    after_fresh = fresh.enqueue("builtins.len", "ab")
    assert SimpleWorker([kept, fresh], connection=fresh.connection).work(burst=True)
    for job, length in ((before, 4), (after_kept, 6), (after_fresh, 2)):
        job.refresh()
        assert (job.get_status(), job.return_value()) == (JobStatus.FINISHED, length), job.id


def _bounded(call):
    """What ``call()`` returns or raises, in a thread; a failure if it is still waiting after CALL_WAIT (far above any
    timeout the portal sets: only a call that nothing bounds gets there)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except Exception as error:  # noqa: BLE001 - handed back to the test as it was raised
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(CALL_WAIT)
    assert not thread.is_alive(), f"still waiting after {CALL_WAIT:.0f} s: no timeout bounds this call"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_master_that_hangs_holds_no_call_for_ever_and_the_portal_then_reaches_the_promoted_replica(
    group, portal_on_sentinels
):
    """The master's host hangs or drops off the network (SIGSTOP): a connection to it stays open and nothing answers,
    so a failover does not end a call made on it; only a socket timeout does (REDIS_SOCKET_TIMEOUT, which applies to
    the Sentinel configuration's every connection, to Redis and to the Sentinels). Once Sentinel has promoted the
    replica, the pool whose call gave up, a new queue, the health check and the budget client reach it."""
    kept = django_rq.get_queue("writeback")
    budget_client = shared_budget.settings_connection()()
    before = kept.enqueue("builtins.len", "abcd")
    assert kept.connection.wait(1, 10_000) == 1
    assert budget_client.ping()

    group.hang_master()
    with pytest.raises(redis.TimeoutError):
        _bounded(kept.connection.ping)  # its pooled connection is to the master that hangs
    with pytest.raises(redis.TimeoutError):
        _bounded(budget_client.ping)
    group.wait_for_promotion()

    new_master = (group.replica.port, "master")
    assert _bounded(lambda: _server(kept.connection)) == new_master  # the connection that timed out was dropped
    assert _bounded(lambda: _server(budget_client)) == new_master
    fresh = django_rq.get_queue("default")
    assert _bounded(lambda: _server(fresh.connection)) == new_master
    assert _bounded(health._redis) == "PONG"
    after = fresh.enqueue("builtins.len", "abcdef")
    assert SimpleWorker([kept, fresh], connection=fresh.connection).work(burst=True)
    for job, length in ((before, 4), (after, 6)):
        job.refresh()
        assert (job.get_status(), job.return_value()) == (JobStatus.FINISHED, length), job.id


def _wait_finished(job: Job, worker: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + JOB_WAIT
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{log.read_text()[-4000:]}"
        try:
            if job.get_status(refresh=True) == JobStatus.FINISHED:
                return
        except redis.ConnectionError:
            pass  # Sentinel has not told this client about the new master yet
        time.sleep(0.2)
    raise AssertionError(f"job {job.id} did not finish within {JOB_WAIT:.0f} s\n{log.read_text()[-4000:]}")


@pytest.mark.parametrize("failure", ["kill_master", "hang_master"])
def test_a_running_worker_takes_jobs_from_the_promoted_replica_without_a_restart(
    group, portal_on_sentinels, tmp_path, failure
):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("REDIS_", "DJANGO_", "LDAP_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'worker.sqlite3'}",
        "REDIS_SENTINELS": group.sentinels_setting, "REDIS_SENTINEL_MASTER": MASTER_NAME,
        # rq's scheduler process exits when its master goes; the worker's watch starts it again (writeback/worker.py)
        # every WORKER_WATCH_SECONDS: 30 in production, 1 here.
        "WORKER_WATCH_SECONDS": "1",
    })  # fmt: skip
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        # The command line of deploy/soa-portal-worker@.service.
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "writeback", "default", "--with-scheduler"], cwd=ROOT, env=env,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=child_dies_with_parent,
        )  # fmt: skip
    try:
        writeback, default = django_rq.get_queue("writeback"), django_rq.get_queue("default")
        first = writeback.enqueue("builtins.len", "abc")
        _wait_finished(first, worker, log)

        getattr(group, failure)()
        group.wait_for_promotion()

        # Queued as the next web request would, on queues of its own (this process's earlier ones may hold a
        # connection to a master that hangs: their next call gives up, as the test above shows). One job of each
        # kind: "writeback" runs in the worker's process, "default" in a forked work horse, and a scheduled one goes
        # through rq's scheduler process.
        writeback, default = django_rq.get_queue("writeback"), django_rq.get_queue("default")
        in_process = writeback.enqueue("builtins.len", "abcde")
        horse = default.enqueue("builtins.len", "abcdefg")
        scheduled = default.enqueue_in(dt.timedelta(seconds=1), "builtins.len", "ab")
        for job in (in_process, horse, scheduled):
            _wait_finished(job, worker, log)
        assert [job.return_value() for job in (in_process, horse, scheduled)] == [5, 7, 2]
        assert _server(writeback.connection) == (group.replica.port, "master")
        # The same worker took them: it was neither restarted nor told where the new master is.
        names = {job.worker_name for job in Job.fetch_many([first.id, in_process.id, horse.id], writeback.connection)}
        assert len(names) == 1 and None not in names, names
        assert worker.poll() is None
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
            worker.wait()
