"""Edit-to-AD latency of a help-desk edit of a cloud-managed mailbox, with one idle worker, against its floor.

Everything is real: the sandbox directory (slapd), the Exchange Online emulator over HTTPS, a private Redis, the
configured database and one ``manage.py rqworker default writeback`` process (rq's SimpleWorker, which keeps its
LDAP bind, Exchange token and database connection between jobs) waiting on its queues. Each sample is one alias
added through the service (soa.services.changes.change_request_create, committed, its apply job queued after the
commit); the clock stops when a separate ldap3 connection reads the alias in the AD user's proxyAddresses. On the
way: the apply job claims the request, reads the mailbox in Exchange (the authority check), Set-Mailbox with
``EmailAddresses @{Add=...}`` and its verifying re-read, records the request APPLIED and requests the writeback task,
whose job reads AD, modifies it and reads it back.

Floor, measured first in the same run against the same emulator and slapd: one Set-Mailbox through the client (no
verification) plus one raw ldap3 modify by known DN on an open connection.

    .venv/bin/python bench/bench_edit_latency.py [--edits 100] [--users 200] [--database postgres]

``--database postgres`` uses DATABASE_URL, or postgres://postgres@127.0.0.1:5432/soa_portal_bench_edit (created when
missing, emptied first).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Figure,
    cloud_managed_tenant,
    fresh_postgres,
    load_line,
    machine_line,
    point_settings_at,
    setup_django,
)

ROOT = Path(__file__).resolve().parents[1]
WORKER_LOG = Path(tempfile.gettempdir()) / "bench_edit_latency_worker.log"
POSTGRES_NAME = "soa_portal_bench_edit"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    fresh_postgres(args.database, POSTGRES_NAME)
    engine = setup_django("edit-latency")

    import ldap3
    from ldap3.utils.conv import escape_bytes

    from sandbox.directory import SandboxDirectory
    from sandbox.exchange_online import ExchangeOnlineEmulator
    from sandbox.redis_server import RedisServer
    from soa.choices import Authority, ChangeState
    from soa.models import ChangeRequest, Mailbox
    from soa.services.changes import change_request_create
    from writeback.exchange import ExchangeConfig, ExchangeOnlineClient

    print("bench_edit_latency: a help-desk alias added to a cloud-managed mailbox, request to AD read-back")
    print(machine_line())
    print(load_line())
    print(f"database: {engine}; {args.users} users; {args.edits} edits; one idle SimpleWorker on default+writeback")
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
            .values_list("pk", flat=True)
        )
        if not mailboxes:
            raise SystemExit("no cloud-managed mailbox paired with an AD user")
        server = ldap3.Server(directory.url, get_info=ldap3.NONE)
        ldap = ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True)

        def ad_holds(guid: uuid.UUID, proxy: str) -> bool:
            search = f"(&(objectGUID={escape_bytes(guid.bytes_le)})(proxyAddresses={proxy}))"
            ldap.search(directory.base_dn, search, attributes=["1.1"])
            return any(item["type"] == "searchResEntry" for item in ldap.response)

        # The floor: one Set-Mailbox and one LDAP modify, done directly.
        exo = ExchangeOnlineClient(ExchangeConfig.from_settings())
        floor = Figure("floor: Set-Mailbox + LDAP modify", "ms")
        for index in range(args.edits):
            mailbox = Mailbox.objects.get(pk=mailboxes[index % len(mailboxes)])
            started = time.perf_counter()
            exo.set_mailbox(str(mailbox.exo_object_id), CustomAttribute9=f"floor {index}")
            ldap.modify(mailbox.dn, {"extensionAttribute9": [(ldap3.MODIFY_REPLACE, [f"floor {index}"])]})
            floor.samples.append((time.perf_counter() - started) * 1000)

        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "rqworker", "default", "writeback",
             "--worker-class", "rq.worker.SimpleWorker"],
            env=env, stdout=open(WORKER_LOG, "ab"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
        )  # fmt: skip
        latency = Figure("edit to AD read-back", "ms")
        try:
            time.sleep(3)  # the worker starts and blocks on its queues: the figure is an idle worker's
            for index in range(args.edits):
                mailbox = Mailbox.objects.get(pk=mailboxes[index % len(mailboxes)])
                alias = f"edit-{index}-{uuid.uuid4().hex[:6]}@{mailbox.primary_smtp.partition('@')[2]}"
                started = time.perf_counter()
                request = change_request_create(
                    actor=helpdesk, mailbox_id=mailbox.pk, operations=[{"op": "add_alias", "address": alias}],
                    reason="bench", base_version=mailbox.version, idempotency_key=f"bench-{index}",
                )  # fmt: skip
                deadline = time.monotonic() + 60
                while not ad_holds(mailbox.ad_guid, f"smtp:{alias}"):
                    if time.monotonic() > deadline:
                        state = ChangeRequest.objects.get(pk=request.pk)
                        raise SystemExit(f"edit {index} not in AD after 60 s: {state.state} {state.error}; "
                                         f"see {WORKER_LOG}")  # fmt: skip
                    time.sleep(0.002)
                latency.samples.append((time.perf_counter() - started) * 1000)
                # The next edit of this mailbox needs this request closed (one open request per mailbox).
                while ChangeRequest.objects.filter(pk=request.pk, state=ChangeState.APPLYING).exists():
                    time.sleep(0.002)
        finally:
            os.killpg(worker.pid, 15)
            worker.wait(timeout=30)
            ldap.unbind()

    p50, p95 = _percentile(latency.samples, 0.5), _percentile(latency.samples, 0.95)
    f50, f95 = _percentile(floor.samples, 0.5), _percentile(floor.samples, 0.95)
    print(f"{'':<52} {'p50':>10} {'p95':>10}")
    print(f"{floor.name:<52} {f50:>10.1f} {f95:>10.1f} ms")
    print(f"{latency.name:<52} {p50:>10.1f} {p95:>10.1f} ms")
    print(f"latency / floor: p50 {p50 / f50:.1f}x, p95 {p95 / f95:.1f}x; target p95 <= 1000 ms: "
          f"{'met' if p95 <= 1000 else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
