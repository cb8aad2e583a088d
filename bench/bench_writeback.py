"""Writeback throughput with 1, 2 and 4 real worker processes, and one task's latency from request to read-back.

Everything is real: tasks are requested through the service (writeback.tasks.writeback_task_request), their jobs go
through a private Redis to ``manage.py rqworker writeback`` processes (the portal's worker by default, which runs
writeback jobs in its own process; or rq's forking Worker, or its SimpleWorker, to compare), each job claims a batch
of tasks, reads their AD users by objectGUID, sends the minimal modifies, reads back and records the results with their
audit events in the configured database. Each task changes one attribute of one user
(extensionAttribute3), so each costs a modify and its share of two searches on the wire.

Baseline, measured first in the same run on the same slapd (as bench_writeback_modify.py does it): raw ldap3 on one
connection, a search by escaped objectGUID plus the modify, and the modify alone by known DN.

Throughput is measured over the task rows (first claim to last finish), so worker start-up is left out; the workers
run as in production (not --burst), idle on the queue before the tasks are requested. The tasks are requested (rows
committed) first, then fed to the queue. ``--feed backlog`` (the default) measures the writeback itself: the first
request's enqueue queues a job and every later one finds it waiting (writeback.tasks.writeback_enqueue), so only that
one is sent. ``--feed each`` calls writeback_enqueue for every task while the workers run, as requests arriving in a
burst on the same two cores would: the bench process then competes with the workers for the CPU (about 40% of the
rate at 2 workers on 2 cores), which measures the machine's sharing more than the writeback. Latency: one
idle worker waits on the queue; each sample is a request made and committed, then waited for; the figure is the
task's requested_at to its finished_at (recorded after the read-back), and the floor is one raw search + modify +
search.

    .venv/bin/python bench/bench_writeback.py [--tasks 2000] [--workers 1,2,4] [--samples 200] [--database postgres]
        [--feed backlog|each]

``--database postgres`` uses DATABASE_URL, or postgres://postgres@127.0.0.1:5432/soa_portal_bench_writeback (created
when missing, emptied first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, cpu_seconds, load_line, machine_line, setup_django  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER_LOG = Path(tempfile.gettempdir()) / "bench_writeback_workers.log"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/soa_portal_bench_writeback"


def _database(kind: str) -> None:
    if kind != "postgres" or os.environ.get("DATABASE_URL"):
        return
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'soa_portal_bench_writeback'").fetchone():
            conn.execute("CREATE DATABASE soa_portal_bench_writeback")
    os.environ["DATABASE_URL"] = POSTGRES_URL


def _point_settings_at(directory, redis_url: str) -> dict[str, str]:
    """Point this process's settings at the bench's directory and Redis; returns the workers' environment."""
    from django.conf import settings

    values = {
        "LDAP_URL": directory.url, "LDAP_BIND_DN": directory.bind_dn, "LDAP_BASE_DN": directory.base_dn,
        "LDAP_PASSWORD_FILE": str(directory.password_file), "REDIS_URL": redis_url,
    }  # fmt: skip
    for name, value in values.items():
        setattr(settings, name, value)
    settings.RQ_QUEUES = {name: {**config, "URL": redis_url} for name, config in settings.RQ_QUEUES.items()}
    return {**os.environ, **values, "DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true",
            "LOG_LEVEL": "WARNING", "DATABASE_URL": os.environ["DATABASE_URL"]}  # fmt: skip


def _mailboxes(users: list[dict]) -> list[int]:
    """Mailbox rows paired with the directory's users, AD's values as the inventory would store them."""
    from portal.dn import normalize_dn
    from soa.choices import Authority
    from soa.models import Mailbox
    from soa.values import ad_values

    rows = []
    for user in users:
        values = ad_values(user)
        rows.append(
            Mailbox(
                ad_guid=uuid.UUID(bytes_le=user["objectGUID"]),
                dn=user["dn"],
                dn_norm=normalize_dn(user["dn"]),
                upn=user["userPrincipalName"],
                display_name=user["displayName"],
                authority=Authority.CLOUD,
                in_ad=True,
                in_exo=True,
                ad_values=values,
                exo_values=dict(values),
            )  # fmt: skip
        )
    Mailbox.objects.bulk_create(rows, batch_size=1000)
    return list(Mailbox.objects.order_by("pk").values_list("pk", flat=True))


def _portal_knows(mailbox_ids: list[int], value: str) -> None:
    """The baseline wrote extensionAttribute3 behind the portal's back; record it as the inventory's next read would.
    Otherwise every task of the first run would meet a direct AD edit and measure drift handling, not writeback."""
    from soa.models import Mailbox

    rows = list(Mailbox.objects.filter(pk__in=mailbox_ids))
    for row in rows:
        row.ad_values = {**row.ad_values, "CustomAttribute3": value}
    Mailbox.objects.bulk_update(rows, ["ad_values"], batch_size=500)


def _request(mailbox_id: int, value: str, *, enqueue: bool) -> int:
    from soa.models import Mailbox
    from writeback.tasks import writeback_task_request

    desired = {**Mailbox.objects.get(pk=mailbox_id).exo_values, "CustomAttribute3": value}
    return writeback_task_request(mailbox_id=mailbox_id, desired=desired, source="bench", enqueue=enqueue).pk


# "portal" is the worker as production runs it (writeback.worker.Worker: writeback jobs in its own process, other jobs
# in forked work horses); "fork" is rq's own Worker, which forks a horse for every job (the portal's worker did so
# for writeback jobs too until it was measured here); "simple" is rq's SimpleWorker.
WORKER_CLASS = {"portal": "writeback.worker.Worker", "fork": "rq.worker.Worker", "simple": "rq.worker.SimpleWorker"}
_worker_class = "portal"
_feed = "backlog"


def _worker(env: dict[str, str], *extra: str) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "manage.py"), "rqworker", "writeback", *extra]
    command += ["--worker-class", WORKER_CLASS[_worker_class]]
    # The log goes to a file: a pipe nobody reads fills up and stops a long-running worker mid-write.
    log = open(WORKER_LOG, "ab")  # noqa: SIM115 - the worker process holds it
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


SERVERS = ("slapd", "postgres")
# The bench's own slapd; PostgreSQL counts every process of the server (a backend's CPU reaches its postmaster when it
# ends, as a forked work horse's backend does after each job), so the machine must be otherwise quiet.
_slapd_pid = 0


@dataclass
class CpuPerTask:
    """Milliseconds of CPU one task cost each process, over the whole run."""

    workers: float
    servers: dict[str, float]

    @property
    def total(self) -> float:
        return self.workers + sum(self.servers.values())

    def row(self) -> str:
        servers = ", ".join(f"{name} {value:.2f}" for name, value in self.servers.items())
        return f"workers {self.workers:.2f}, {servers}; total {self.total:.2f} ms"


def _cpu(pids: tuple[int, ...]) -> tuple[float, dict[str, float]]:
    return cpu_seconds(pids=pids), {
        "slapd": cpu_seconds(pids=(_slapd_pid,)),
        "postgres": cpu_seconds(names=("postgres",)),
    }


def _per_task(before, after, tasks: int) -> CpuPerTask:
    servers = {name: (after[1][name] - before[1][name]) * 1000 / tasks for name in SERVERS}
    return CpuPerTask((after[0] - before[0]) * 1000 / tasks, servers)


def _throughput(
    env: dict[str, str], mailbox_ids: list[int], workers: int, value: str, count
) -> tuple[float, CpuPerTask]:
    """Start ``workers`` long-running workers and let them sit idle on the queue, as in production, then request one
    task per mailbox and queue them; tasks/s over the task rows. (Burst workers would not do: a backlog is one job
    waiting at a time, each full batch queueing the next, so a burst worker that finds the queue empty at its start
    exits and never helps.)"""
    from django.db.models import Max, Min

    from writeback.models import WritebackTask
    from writeback.tasks import writeback_enqueue

    ids = [_request(pk, value, enqueue=False) for pk in mailbox_ids]
    processes = [_worker(env) for _ in range(workers)]
    try:
        time.sleep(3 + workers)  # every worker started and waiting on the queue
        pids = tuple(process.pid for process in processes)
        cpu_before = _cpu(pids)
        for task_id in ids if _feed == "each" else ids[:1]:
            writeback_enqueue(task_id)
        tasks = WritebackTask.objects.filter(pk__in=ids)
        deadline = time.monotonic() + 3600
        while tasks.filter(state__in=WritebackTask.OPEN_STATES).exists():
            if any(process.poll() is not None for process in processes) or time.monotonic() > deadline:
                raise SystemExit(f"a worker stopped, or the tasks did not end; see {WORKER_LOG}")
            time.sleep(0.2)
        cpu = _per_task(cpu_before, _cpu(pids), len(ids))
    finally:
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            process.wait(timeout=60)
    done = tasks.filter(state=WritebackTask.State.DONE).count()
    if done != len(ids):
        raise SystemExit(
            f"{done} of {len(ids)} tasks done: {list(tasks.exclude(state='DONE').values('state', 'error')[:3])}"
        )
    in_ad = count(f"(extensionAttribute3={value})")
    if in_ad != len(ids):
        raise SystemExit(f"{in_ad} users hold {value} in AD, expected {len(ids)}")
    span = tasks.aggregate(first=Min("started_at"), last=Max("finished_at"))
    workers_used = len(set(tasks.values_list("job_id", flat=True)))
    print(f"    ({workers_used} jobs wrote the {len(ids)} tasks)", flush=True)
    return len(ids) / (span["last"] - span["first"]).total_seconds(), cpu


def _latencies(env: dict[str, str], mailbox_ids: list[int], samples: int) -> list[float]:
    """Milliseconds from each request to its task's finish (after the read-back), one idle worker waiting."""
    from writeback.models import WritebackTask

    worker = _worker(env)
    try:
        time.sleep(3)  # let it start and block on the queue: the figure is an idle worker's
        result = []
        for index in range(samples):
            task_id = _request(mailbox_ids[index % len(mailbox_ids)], f"latency {index}", enqueue=True)
            deadline = time.monotonic() + 60
            while True:
                task = WritebackTask.objects.get(pk=task_id)
                if task.state == WritebackTask.State.DONE:
                    break
                if task.state == WritebackTask.State.FAILED or time.monotonic() > deadline:
                    raise SystemExit(f"latency task {task_id} ended {task.state}: {task.error}; see {WORKER_LOG}")
                time.sleep(0.002)
            result.append((task.finished_at - task.requested_at).total_seconds() * 1000)
        return result
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=30)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per throughput run (default 2000)")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts (default 1,2,4)")
    parser.add_argument("--samples", type=int, default=200, help="latency samples (default 200)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--worker-class", choices=tuple(WORKER_CLASS), default="portal",
        help="portal: the portal's worker, as in production (writeback jobs in the worker process, which keeps its "
        "LDAP bind and database connection); fork: rq's Worker (a work horse forked per job, so a new bind and "
        "connection per job); simple: rq's SimpleWorker",
    )  # fmt: skip
    parser.add_argument(
        "--feed", choices=("backlog", "each"), default="backlog",
        help="backlog: the tasks' requests made, then one enqueue (the others would find its job waiting); each: "
        "writeback_enqueue for every task while the workers run, in this process",
    )  # fmt: skip
    args = parser.parse_args()
    global _worker_class, _slapd_pid, _feed
    _worker_class, _feed = args.worker_class, args.feed
    _database(args.database)
    engine = setup_django("writeback")
    if args.database == "sqlite" and "sqlite" in engine:
        print("note: worker processes on SQLite serialise on the database file; the figures are PostgreSQL's")

    import django
    import ldap3
    import rq
    from django.core.management import call_command
    from ldap3.utils.conv import escape_bytes

    from bench.bench_writeback_modify import raw_connection
    from sandbox.directory import SandboxDirectory, generate_users
    from sandbox.redis_server import RedisServer

    print("bench_writeback: writeback tasks through real rq workers vs raw ldap3 on the same slapd")
    print(machine_line())
    print(f"django {django.get_version()}, rq {rq.VERSION}, ldap3 {ldap3.__version__}; database: {engine}")
    print(f"options: {vars(args)}")
    print(f"before: {load_line()}")
    if "sqlite" not in engine:
        call_command("flush", interactive=False, verbosity=0)

    users = list(generate_users(args.tasks))
    with RedisServer.start() as redis_server, SandboxDirectory.start(users=args.tasks) as directory:
        env = _point_settings_at(directory, redis_server.url)
        _slapd_pid = directory.pid
        mailbox_ids = _mailboxes(users)
        raw = raw_connection(directory)

        def count(search_filter: str) -> int:
            found = raw.extend.standard.paged_search(
                directory.users_dn, search_filter, attributes=["1.1"], paged_size=1000, generator=True
            )
            return sum(1 for item in found if item["type"] == "searchResEntry")

        def raw_read_modify(value: str, *, read_back: bool = False) -> list[float]:
            times = []
            for user in users:
                began = time.perf_counter()
                guid_filter = f"(objectGUID={escape_bytes(user['objectGUID'])})"
                raw.search(directory.base_dn, guid_filter, attributes=["extensionAttribute3", "proxyAddresses"])
                dn = raw.response[0]["dn"]
                if not raw.modify(dn, {"extensionAttribute3": [(ldap3.MODIFY_REPLACE, [value])]}):
                    raise SystemExit(f"raw modify failed: {raw.result}")
                if read_back:
                    raw.search(directory.base_dn, guid_filter, attributes=["extensionAttribute3", "proxyAddresses"])
                times.append(time.perf_counter() - began)
            return times

        def raw_modify(value: str) -> float:
            began = time.perf_counter()
            for user in users:
                if not raw.modify(user["dn"], {"extensionAttribute3": [(ldap3.MODIFY_REPLACE, [value])]}):
                    raise SystemExit(f"raw modify failed: {raw.result}")
            return time.perf_counter() - began

        baseline_read = Figure("raw ldap3 search by GUID + modify (1 connection)", "ops/s")
        baseline_modify = Figure("raw ldap3 modify by DN (1 connection)", "ops/s")
        raw_before, raw_client = _cpu(()), time.process_time()
        for repeat in range(3):
            baseline_read.samples.append(args.tasks / sum(raw_read_modify(f"raw {repeat}")))
        raw_cpu = _per_task(raw_before, _cpu(()), 3 * args.tasks)
        raw_cpu.workers = (time.process_time() - raw_client) * 1000 / (3 * args.tasks)
        for repeat in range(3):
            baseline_modify.samples.append(args.tasks / raw_modify(f"raw dn {repeat}"))
        floor = [seconds * 1000 for seconds in raw_read_modify("floor", read_back=True)]
        _portal_knows(mailbox_ids, "floor")

        figures = []
        for workers in [int(n) for n in args.workers.split(",")]:
            figure = Figure(f"writeback tasks, {workers} worker(s)", "tasks/s")
            rate, cpu = _throughput(env, mailbox_ids, workers, f"w{workers}-{uuid.uuid4().hex[:6]}", count)
            figure.samples.append(rate)
            figures.append((figure, cpu))
            print(f"  {figure.row()}", flush=True)
        latencies = _latencies(env, mailbox_ids, args.samples)
        raw.unbind()

    print(f"\nafter: {load_line()}")
    print(f"\n{'figure':<52} {'median':>12} {'unit':<10} (min - max)")
    for figure in (baseline_modify, baseline_read, *(figure for figure, *_ in figures)):
        print(figure.row())
    print("\nwriteback / raw search + modify (1.00 = the raw client's rate):")
    for figure, *_ in figures:
        print(f"  {figure.name:<40} {figure.median / baseline_read.median:.2f}")
    # Every process of a run shares the machine's cores, so the CPU a task costs all of them together bounds the
    # rate any number of workers can reach: cores / CPU per task.
    cores = os.cpu_count() or 1
    print("\nCPU per task (ms), every process the work runs in; the bound is cores / total:")
    print(f"  {'raw search + modify (client = bench)':<40} client {raw_cpu.row()[len('workers ') :]}")
    for figure, cpu in figures:
        bound = cores * 1000 / cpu.total
        print(f"  {figure.name:<40} {cpu.row()}; bound on {cores} cores {bound:,.0f} tasks/s "
              f"= {bound / baseline_read.median:.2f}x raw")  # fmt: skip
    print(f"\nlatency, request to read-back, 1 idle worker, n={len(latencies)}:")
    print(f"  p50 {statistics.median(latencies):.1f} ms, p95 {_percentile(latencies, 0.95):.1f} ms, "
          f"max {max(latencies):.1f} ms")  # fmt: skip
    print(f"  floor (raw search + modify + search): p50 {statistics.median(floor):.2f} ms, "
          f"p95 {_percentile(floor, 0.95):.2f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
