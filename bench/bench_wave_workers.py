"""A pilot wave flipped by 1, 2 and 4 real rqworker processes against the emulator throttled to a known budget, with
the Exchange budget shared between them in Redis and, for comparison, paced by each process alone.

Everything is real: the wave is built, submitted, approved and started through the portal's services; long-running
``manage.py rqworker`` processes (the portal's worker class, forking a work horse per batch), idle on the queue
before the wave starts, flip it with WAVE_PARALLEL_BATCHES set to their number, against a private directory, a private
Redis and the Exchange Online emulator over HTTPS, with the inventory imported into the configured database first.

The ceiling is the emulator's budget: ``--rate`` requests per second divided by the requests a flip costs, counted by
the emulator in the same run (a flip to the cloud reads the mailbox, sends Set-Mailbox and reads it again: 3). The
achieved rate is measured over the flips themselves (first flip's start to last flip's end, from the member rows); the
429s are the emulator's own count. Baseline, measured first: one worker with throttling off (the runner's own rate).

    .venv/bin/python bench/bench_wave_workers.py [--members 600] [--rate 60] [--burst 10] [--workers 1,2,4]
        [--batch-size 50]

Worker processes share the database, so use PostgreSQL (DATABASE_URL; a database the benchmark may fill, emptied
first); without it a fresh SQLite file is used, which serialises the workers' writes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_wave import SEED_CLOUD_MANAGED_SHARE, _flip_rate, _movable, _people, bench_tenant, start_bench  # noqa: E402
from bench.common import load_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER_LOG = Path(tempfile.gettempdir()) / "bench_wave_workers.log"
FORWARDED = ("LDAP_URL", "LDAP_BIND_DN", "LDAP_BASE_DN", "LDAP_PASSWORD_FILE", "EXO_BASE_URL", "GRAPH_BASE_URL",
             "EXO_TENANT", "ENTRA_AUTHORITY", "EXO_CA_FILE", "ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET_FILE", "REDIS_URL",
             "WAVE_QUIET_PERIOD_HOURS", "EXO_RATE_LIMIT_PACING")  # fmt: skip


def _env(workers: int, shared: bool) -> dict[str, str]:
    from django.conf import settings

    env = {**os.environ, **{name: str(getattr(settings, name)) for name in FORWARDED}}
    env.update({"DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true", "LOG_LEVEL": "WARNING",
                "WAVE_PARALLEL_BATCHES": str(workers), "EXO_SHARED_BUDGET": str(shared).lower()})  # fmt: skip
    return env


def _start_workers(count: int, env: dict[str, str], *, queue_name: str = "", log_path: Path = WORKER_LOG) -> list:
    """``count`` long-running ``manage.py rqworker`` processes on ``queue_name`` (the waves' queue by default),
    returned once all of them listen; their output goes to ``log_path``."""
    import django_rq
    from rq import Worker

    from writeback import wave_jobs

    queue_name = queue_name or wave_jobs.QUEUE
    log = open(log_path, "ab")  # noqa: SIM115 - the worker processes hold it
    command = [sys.executable, str(ROOT / "manage.py"), "rqworker", queue_name]
    processes = [
        subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(count)
    ]
    queue = django_rq.get_queue(queue_name)
    deadline = time.monotonic() + 120
    while Worker.count(queue=queue) < count:
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            _stop(processes)
            raise SystemExit(f"the workers did not start; see {log_path}")
        time.sleep(0.1)
    return processes


def _stop(processes: list[subprocess.Popen]) -> None:
    """Warm shutdown (SIGTERM); a worker still running after 30 s is killed with its work horse."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in _children(process.pid):
                os.kill(pid, signal.SIGKILL)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return children


def _forget_budget() -> None:
    import django_rq

    connection = django_rq.get_queue("default").connection
    for key in connection.scan_iter(match="soa:exo-budget:*"):
        connection.delete(key)


def _start_wave(people: dict, name: str, mailbox_ids: list[int], batch_size: int) -> int:
    """Build, submit, approve and start a wave to the cloud at the portal's highest rate, in batches of
    ``batch_size`` (small enough that every worker gets some); its first batch is queued."""
    from soa.choices import WaveDirection, WaveState
    from soa.models import WAVE_MAX_RATE
    from soa.services.approvals import wave_approve
    from soa.services.wave_members import wave_add_members
    from soa.services.wave_run import wave_start
    from soa.services.waves import wave_create, wave_submit

    wave = wave_create(actor=people["op"], name=name, direction=WaveDirection.TO_CLOUD, required_approvals=1,
                       batch_size=batch_size, max_rate=WAVE_MAX_RATE)  # fmt: skip
    wave_add_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=mailbox_ids)
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave = wave_start(actor=people["op2"], wave_id=wave.pk)
    if wave.state != WaveState.RUNNING:
        raise SystemExit(f"wave {name} is {wave.state}, not running")
    return wave.pk


def _run(people, exchange, name: str, ids: list[int], workers: int, shared: bool, throttle, batch_size: int) -> dict:
    from soa.choices import WaveState
    from soa.models import PilotWave

    _forget_budget()
    processes = _start_workers(workers, _env(workers, shared))
    try:
        exchange.set_throttle(**throttle)  # every bucket starts full
        before = exchange.counters()
        wave_id = _start_wave(people, name, ids, batch_size)
        deadline = time.monotonic() + 3600
        while PilotWave.objects.get(pk=wave_id).state != WaveState.COMPLETED:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise SystemExit(f"the wave did not complete, or a worker stopped; see {WORKER_LOG}")
            time.sleep(0.2)
        after = exchange.counters()
    finally:
        _stop(processes)
        exchange.set_throttle(rate=None)
    rate, span = _flip_rate(wave_id, exchange, ids)
    throttled = after["throttled"] - before["throttled"]
    served = after["invoke_command"] - before["invoke_command"] - throttled
    return {"rate": rate, "span": span, "throttled": throttled, "per_flip": served / len(ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=600, help="members of each throttled wave")
    parser.add_argument("--rate", type=float, default=60.0, help="emulator budget, requests per second")
    parser.add_argument("--burst", type=int, default=10, help="emulator bucket size (Rate-Limit-Limit)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    parser.add_argument("--batch-size", type=int, default=50, help="the waves' batch size")
    parser.add_argument("--baseline-members", type=int, default=300, help="members of the unthrottled wave")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    waves = len(counts) * 2
    users = int((args.members * waves + args.baseline_members) / (1 - SEED_CLOUD_MANAGED_SHARE) * 1.05) + 50
    title = "bench_wave_workers: one wave flipped by 1, 2 and 4 rqworker processes against a throttled emulator"
    start_bench(title, args, users, name="wave-workers")

    began = time.perf_counter()
    rows = []
    with bench_tenant(users, pacing=True) as exchange:
        people = _people()
        stamp = dt.datetime.now().strftime("%H%M%S")
        taken: set[int] = set()
        ids = _movable(args.baseline_members, taken)
        taken.update(ids)
        baseline = _run(
            people, exchange, f"Bench workers baseline {stamp}", ids, 1, True, {"rate": None}, args.batch_size
        )
        print(f"baseline: 1 worker, throttling off: {baseline['rate']:.1f} flips/s "
              f"({baseline['per_flip']:.2f} requests a flip)", flush=True)  # fmt: skip
        throttle = {"rate": args.rate, "burst": args.burst}
        for shared in (True, False):
            for workers in counts:
                ids = _movable(args.members, taken)
                taken.update(ids)
                name = f"Bench workers {stamp} {workers} {'shared' if shared else 'alone'}"
                result = _run(people, exchange, name, ids, workers, shared, throttle, args.batch_size)
                rows.append((workers, shared, result))
                how = "shared" if shared else "per process"
                print(f"  {workers} worker(s), budget {how}: {result['rate']:.1f} flips/s, "
                      f"{result['throttled']} x 429; {load_line()}", flush=True)  # fmt: skip

    per_flip = rows[0][2]["per_flip"]
    ceiling = args.rate / per_flip
    print(
        f"emulator budget: {args.rate:g} requests/s, burst {args.burst}; {per_flip:.2f} requests a flip "
        f"-> ceiling {ceiling:.1f} flips/s"
    )
    print(f"runner alone (1 worker, throttling off): {baseline['rate']:.1f} flips/s")
    print(f"{'workers':>7}  {'budget':<12} {'flips/s':>8} {'x ceiling':>9} {'429s':>6} {'span s':>7}")
    for workers, shared, result in rows:
        print(f"{workers:>7}  {'shared' if shared else 'per process':<12} {result['rate']:>8.1f} "
              f"{result['rate'] / ceiling:>9.2f} {result['throttled']:>6} {result['span']:>7.1f}")  # fmt: skip
    print(f"total wall time: {time.perf_counter() - began:.1f} s; after: {load_line()}")


if __name__ == "__main__":
    main()
