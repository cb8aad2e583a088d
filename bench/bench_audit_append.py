"""Cost of appending audit events: N calls of audit_record in one transaction, and (when the code has it)
audit_record_many with the same N events in one call.

audit_record runs on every job's hot path (each claim, finish and failure writes one), so its cost per event is the
figure to keep. Each repeat appends to the same table, which grows by N per repeat. Wall time depends on the load of
the machine (the database shares its cores); the CPU time of this process and the statements per event do much less,
so compare those when the machine is busy.

    .venv/bin/python bench/bench_audit_append.py [--events 1000] [--repeats 7] [--database postgres]

``--database postgres`` uses DATABASE_URL, or postgres://postgres@127.0.0.1:5432/soa_portal_bench_audit (emptied
first); the default is a fresh SQLite file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, fresh_postgres, load_line, machine_line, setup_django, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    fresh_postgres(args.database, "soa_portal_bench_audit")
    engine = setup_django("audit")

    from django.db import connection, transaction

    import portal.audit as audit

    def one_by_one() -> None:
        with transaction.atomic():
            for i in range(args.events):
                audit.audit_record(actor=None, action="bench.audit.append", object_id=str(i), after={"i": i})

    def batched() -> None:
        with transaction.atomic():
            audit.audit_record_many(
                [{"actor": None, "action": "bench.audit.append", "object_id": str(i), "after": {"i": i}}
                 for i in range(args.events)]
            )  # fmt: skip

    actions = [("audit_record", one_by_one)]
    if hasattr(audit, "audit_record_many"):
        actions.append(("audit_record_many", batched))
    one_by_one()  # warm-up: connection, first statements
    rows = []
    for name, action in actions:
        wall = Figure(f"{name}, wall time per event", "µs")
        cpu = Figure(f"{name}, this process's CPU per event", "µs")
        statements: list[str] = []

        def count(execute, sql, *rest, seen=statements):
            seen.append(sql)
            return execute(sql, *rest)

        with connection.execute_wrapper(count):
            action()
        for _ in range(args.repeats):
            started = time.process_time()
            wall.samples.append(timed(action) / args.events * 1e6)
            cpu.samples.append((time.process_time() - started) / args.events * 1e6)
        per_event = len(statements) / args.events
        rows += [wall.row(), cpu.row(), f"{name + ', statements per event':<52} {per_event:>12,.3f}"]
    print(machine_line())
    print(load_line())
    print(f"database: {engine}; {args.events} events per transaction, {args.repeats} repeats")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
