"""A bulk edit's rates: preview of a 5,000-line CSV, change requests created per second, and applied per second with
one worker, each against its floor measured in the same run.

Everything is real: the sandbox directory (slapd), the Exchange Online emulator over HTTPS, a private Redis, the
configured database, an inventory import of ``--users`` users (all made cloud-managed), and for the apply figure one
``manage.py rqworker default writeback`` process (SimpleWorker).

1. **Preview**: ``soa.bulk_csv.bulk_preview`` of ``--lines`` lines (``set`` of CustomAttribute1..15, spread over the
   mailboxes, at most 15 lines per mailbox), lines per second. Floor: the validator alone
   (``soa.validation.validate_change``) on the same operations and values, with no parsing, no database.
2. **Created**: the batch's steps run in this process with BULK_CHANGE_RATE unbounded and the apply job off
   (CHANGE_APPLY_ENABLED false), so every mailbox's first line is made: requests created per second. Floor: the same
   number of ``change_request_create`` calls made directly.
3. **Applied**: a batch of ``--apply-lines`` lines (one per mailbox, ``set`` CustomAttribute10) confirmed with the
   worker running; from the confirmation to the batch DONE (each request applied in Exchange, its AD writeback queued
   and run by the same worker), requests applied per second.

    .venv/bin/python bench/bench_bulk_csv.py [--lines 5000] [--users 1000] [--apply-lines 300] [--database postgres]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    cloud_managed_tenant,
    fresh_postgres,
    load_line,
    machine_line,
    point_settings_at,
    setup_django,
)

ROOT = Path(__file__).resolve().parents[1]
WORKER_LOG = Path(tempfile.gettempdir()) / "bench_bulk_csv_worker.log"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--apply-lines", type=int, default=300)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    fresh_postgres(args.database, "soa_portal_bench_bulk")
    engine = setup_django("bulk-csv")

    from django.conf import settings
    from django.utils import timezone

    from sandbox.directory import SandboxDirectory
    from sandbox.exchange_online import ExchangeOnlineEmulator
    from sandbox.redis_server import RedisServer
    from soa.bulk_csv import bulk_preview
    from soa.choices import Authority, BatchState
    from soa.models import ChangeBatch, ChangeRequest, Mailbox
    from soa.services.change_batches import change_batch_create
    from soa.services.changes import change_request_create, editable_values
    from soa.validation import Lookups, validate_change
    from writeback.jobs.change_batches import change_batch_job

    print("bench_bulk_csv: a bulk edit's preview, request creation and apply rates")
    print(machine_line())
    print(load_line())
    print(f"database: {engine}; {args.users} users; {args.lines} lines to preview; {args.apply_lines} to apply")
    with (
        SandboxDirectory.start(users=args.users) as directory,
        ExchangeOnlineEmulator.start(directory=directory) as exchange,
        RedisServer.start() as redis_server,
    ):
        env = point_settings_at(directory, exchange, redis_server.url)
        helpdesk = cloud_managed_tenant(exchange)
        mailboxes = list(
            Mailbox.objects.filter(authority=Authority.CLOUD, in_ad=True, in_exo=True)
            .exclude(ad_guid=None)
            .order_by("pk")
        )
        if len(mailboxes) * 15 < args.lines:
            raise SystemExit(f"{len(mailboxes)} mailboxes take at most {len(mailboxes) * 15} lines; add --users")
        csv_lines = ["mailbox,operation,attribute,value"]
        operations = []
        for index in range(args.lines):
            mailbox = mailboxes[index % len(mailboxes)]
            attribute = f"CustomAttribute{index // len(mailboxes) + 1}"
            csv_lines.append(f"{mailbox.upn},set,{attribute},bulk {index}")
            operations.append(
                (mailbox, {"op": "set_custom_attribute", "attribute": attribute, "value": f"bulk {index}"})
            )

        # 1. Preview, and the validator alone.
        lookups = Lookups(now=timezone.now(), accepted_domains=frozenset(), used_by={}, cooling_down={})
        values = {mailbox.pk: editable_values(mailbox) for mailbox in mailboxes}
        started = time.perf_counter()
        for mailbox, operation in operations:
            validate_change(values[mailbox.pk], [operation], lookups)
        floor_preview = args.lines / (time.perf_counter() - started)
        started = time.perf_counter()
        preview = bulk_preview(user=helpdesk, lines=csv_lines)
        preview_rate = args.lines / (time.perf_counter() - started)
        if not preview.ok:
            raise SystemExit(f"the bench's file has bad lines: {preview.problems[:3]}")

        # 2. Requests created per second by the batch's steps (apply off), and the same creations made directly.
        settings.CHANGE_APPLY_ENABLED = False
        settings.BULK_CHANGE_RATE = 0
        settings.BULK_CHANGE_STEP = 1_000_000
        created_lines = ["mailbox,operation,attribute,value", *csv_lines[1 : len(mailboxes) + 1]]
        batch = change_batch_create(actor=helpdesk, lines=created_lines, file_name="bench.csv", reason="bench",
                                    idempotency_key="bench-created")  # fmt: skip
        started = time.perf_counter()
        change_batch_job(batch.pk)
        created_seconds = time.perf_counter() - started
        created = ChangeRequest.objects.count()
        created_rate = created / created_seconds
        ChangeRequest.objects.update(state="CANCELLED")  # free the mailboxes for the floor and the apply figure
        ChangeBatch.objects.filter(pk=batch.pk).update(state=BatchState.CANCELLED)
        started = time.perf_counter()
        for index, mailbox in enumerate(mailboxes[:created]):
            mailbox.refresh_from_db(fields=["version"])
            change_request_create(actor=helpdesk, mailbox_id=mailbox.pk, operations=[{"op": "set_custom_attribute",
                                  "attribute": "CustomAttribute11", "value": f"direct {index}"}], reason="bench",
                                  base_version=mailbox.version, idempotency_key=f"direct-{index}")  # fmt: skip
        floor_created = created / (time.perf_counter() - started)
        ChangeRequest.objects.filter(state="VALIDATED").update(state="CANCELLED")

        # 3. Applied per second with one worker.
        settings.CHANGE_APPLY_ENABLED = True
        settings.BULK_CHANGE_RATE = 1000.0
        settings.BULK_CHANGE_STEP = 200
        env = {**env, "CHANGE_APPLY_ENABLED": "true", "BULK_CHANGE_RATE": "1000", "BULK_CHANGE_STEP": "200"}
        apply_lines = ["mailbox,operation,attribute,value"] + [
            f"{mailbox.upn},set,CustomAttribute10,applied {index}"
            for index, mailbox in enumerate(mailboxes[: args.apply_lines])
        ]
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "rqworker", "default", "writeback",
             "--worker-class", "rq.worker.SimpleWorker"],
            env=env, stdout=open(WORKER_LOG, "ab"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
        )  # fmt: skip
        try:
            time.sleep(3)
            started = time.perf_counter()
            batch = change_batch_create(actor=helpdesk, lines=apply_lines, file_name="apply.csv", reason="bench",
                                        idempotency_key="bench-apply")  # fmt: skip
            deadline = time.monotonic() + 1800
            while not ChangeBatch.objects.filter(pk=batch.pk, state=BatchState.DONE).exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"the batch did not finish in 30 min; see {WORKER_LOG}")
                time.sleep(0.05)
            applied_seconds = time.perf_counter() - started
        finally:
            os.killpg(worker.pid, 15)
            worker.wait(timeout=30)
        applied = ChangeRequest.objects.filter(batch_line__batch=batch, state="APPLIED").count()

    print(f"{'':<60} {'rate':>10}")
    print(f"{'floor: validate_change alone, lines/s':<60} {floor_preview:>10,.0f}")
    print(f"{f'preview of {args.lines} lines (parse, match, scope, validate), lines/s':<60} {preview_rate:>10,.0f}")
    print(f"{'floor: change_request_create called directly, requests/s':<60} {floor_created:>10,.1f}")
    print(f"{f'batch steps, {created} requests created, requests/s':<60} {created_rate:>10,.1f}")
    print(f"{f'one worker, {applied} of {args.apply_lines} applied (EXO + AD), requests/s':<60} "
          f"{applied / applied_seconds:>10,.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
