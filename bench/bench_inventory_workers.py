"""A full import spread over 1, 2 and 4 real rqworker processes, against the raw reads of both sides.

Each line queues a full import through the service (``inventory_run_request``) into an empty mailbox table, then
a second one with nothing changed, and times each from its claim to DONE. The imports are run by freshly started,
long-running ``manage.py rqworker`` processes (the portal's worker class), as many as the line says, with
INVENTORY_WORKERS set to their number: one claims the run and coordinates, the others take parts of the directory
(writeback.inventory_shards). One worker runs the serial import. Baselines, measured first in the same run: a raw
ldap3 paged search of the same entries and a bare requests loop paging Get-Mailbox (``bench_inventory.py``'s).

    .venv/bin/python bench/bench_inventory_workers.py [--users 20000] [--workers 1,2,4]

Worker processes share the database, so PostgreSQL is used: DATABASE_URL, or a fresh database on the machine's
PostgreSQL. On a 2-core machine the workers, slapd, the emulator and PostgreSQL share two cores: the figures say
what spreading costs or gains there, not what it does on worker hosts of their own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_inventory import raw_reads  # noqa: E402
from bench.bench_wave_workers import _start_workers as start_workers  # noqa: E402
from bench.bench_wave_workers import _stop  # noqa: E402
from bench.common import fresh_postgres, load_line, machine_line, point_settings_at, setup_django  # noqa: E402

WORKER_LOG = Path(tempfile.gettempdir()) / "bench_inventory_workers.log"


def _start_workers(count: int, env: dict[str, str]) -> list[subprocess.Popen]:
    from soa.jobs import QUEUE

    return start_workers(count, env, queue_name=QUEUE, log_path=WORKER_LOG)


def _import(timeout: float):
    """Queue a full import and wait for it; returns the run as it ended and its seconds from claim to end."""
    from writeback.inventory import inventory_run_request
    from writeback.models import InventoryRun

    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL)
    deadline = time.monotonic() + timeout
    while run.state in InventoryRun.OPEN_STATES:
        if time.monotonic() > deadline:
            raise SystemExit(f"import #{run.pk} did not end within {timeout:.0f} s; see {WORKER_LOG}")
        time.sleep(0.2)
        run.refresh_from_db()
    if run.state != InventoryRun.State.DONE:
        raise SystemExit(f"import #{run.pk} failed: {run.error}; see {WORKER_LOG}")
    return run, (run.finished_at - run.started_at).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    fresh_postgres("postgres", "soa_bench_inventory_workers")
    engine = setup_django("inventory-workers")

    from sandbox.directory import SandboxDirectory
    from sandbox.exchange_online import ExchangeOnlineEmulator
    from sandbox.redis_server import RedisServer
    from sandbox.seed import seed_tenant
    from soa.models import Mailbox
    from writeback.models import InventoryShard

    print("bench_inventory_workers: a full import spread over 1, 2 and 4 rqworker processes vs raw reads of both sides")
    print(machine_line())
    print(f"database: {engine}; options: {vars(args)}")
    print(f"before: {load_line()}", flush=True)
    began = time.perf_counter()
    with (
        RedisServer.start() as redis_server,
        SandboxDirectory.start(users=args.users) as directory,
        ExchangeOnlineEmulator.start(
            directory=directory, rate=0, hybrid_writeback=True, timeout=60 + args.users / 100
        ) as exchange,
    ):
        report = seed_tenant(directory, exchange, sync=False)
        env = point_settings_at(directory, exchange, redis_server.url)
        print(f"tenant ready in {time.perf_counter() - began:.1f} s: {report}")
        raw = raw_reads(directory, exchange)
        baseline = raw.rate
        print(f"raw reads: {raw.line()}", flush=True)
        rows = []
        for count in counts:
            Mailbox.objects.all().delete()
            processes = _start_workers(count, {**env, "INVENTORY_WORKERS": str(count)})
            try:
                figures = []
                for label in ("first import", "again, nothing changed"):
                    run, seconds = _import(timeout=600 + args.users / 20)
                    rate = (run.ad_read + run.exo_read) / seconds
                    shards = InventoryShard.objects.filter(run=run)
                    workers = len(set(shards.values_list("worker", flat=True)))
                    figures.append((rate, seconds))
                    print(
                        f"{count} worker(s), {label:<24} {rate:>8,.0f} objects/s ({run.ad_read + run.exo_read} in "
                        f"{seconds:.1f} s; ratio to raw reads {rate / baseline:.2f}; {shards.count()} parts done by "
                        f"{workers} processes; {load_line()})",
                        flush=True,
                    )
                rows.append((count, figures))
            finally:
                _stop(processes)
    print()
    print(f"raw reads of both sides: {baseline:,.0f} objects/s")
    print("| workers | first import | x raw | x 1 worker | unchanged re-run | x raw | x 1 worker |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    one = rows[0][1] if rows and rows[0][0] == 1 else None
    for count, figures in rows:
        cells = []
        for index, (rate, seconds) in enumerate(figures):
            versus = f"{rate / one[index][0]:.2f}" if one else "-"
            cells += [f"{rate:,.0f} objects/s ({seconds:.1f} s)", f"{rate / baseline:.2f}", versus]
        print(f"| {count} | " + " | ".join(cells) + " |")
    print(f"after: {load_line()}")


if __name__ == "__main__":
    main()
