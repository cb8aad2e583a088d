"""Inventory import of a seeded tenant: objects per second and peak memory, against raw reads of both sides.

Baselines, measured in the same run against the same servers: a raw ldap3 paged search of the same AD
entries (attributes included) and a bare requests loop paging Get-Mailbox. The import can go no faster than
the slower of the two plus the database writes; the ratio says how close it comes. Peak memory is this
process's high-water RSS during each import alone (Linux): the same at 10,000 and 200,000 users means it does not
grow with the tenant. The Exchange reader is a child process: its CPU is printed apart.

    .venv/bin/python bench/bench_inventory.py [--users 20000]

PostgreSQL: set DATABASE_URL (a database the benchmark may fill; it is migrated and emptied first).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_line, setup_django  # noqa: E402


def _children_cpu() -> float:
    """CPU seconds of the child processes ended and waited for so far (the import's Exchange reader among them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _reset_peak() -> bool:
    """Start this process's peak RSS (VmHWM) afresh (Linux: clear_refs 5), so that the next peak read is the import's
    own and not the seeding's; False where that cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_mb(field: str = "VmHWM") -> float | None:
    """``field`` (VmHWM: the peak RSS, VmRSS: the current one) from /proc/self/status, in MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class RawReads:
    """Both sides read raw, one after the other: the ceiling an import is measured against."""

    entries: int
    ad_seconds: float
    ad_cpu: float
    mailboxes: int
    exo_seconds: float
    exo_cpu: float

    @property
    def rate(self) -> float:
        return (self.entries + self.mailboxes) / (self.ad_seconds + self.exo_seconds)

    def line(self) -> str:
        return (
            f"{'raw ldap3 paged search':<46} {self.entries / self.ad_seconds:>10,.0f} entries/s   "
            f"({self.entries} in {self.ad_seconds:.2f} s, CPU {self.ad_cpu:.2f} s)\n"
            f"{'raw requests Get-Mailbox paging':<46} {self.mailboxes / self.exo_seconds:>10,.0f} mailboxes/s "
            f"({self.mailboxes} in {self.exo_seconds:.2f} s, CPU {self.exo_cpu:.2f} s)"
        )


def raw_reads(directory, exchange) -> RawReads:
    """A raw ldap3 paged search of the entries and attributes the import reads, then a bare requests loop paging
    Get-Mailbox with a token from msal, over the same servers."""
    import ldap3

    from soa.attributes import ATTRIBUTES
    from writeback.directory import AD_USER_FILTER

    keys = ["objectGUID", "mS-DS-ConsistencyGuid", "msDS-ExternalDirectoryObjectID"]
    attributes = [*keys, *(a.ad for a in ATTRIBUTES)]
    connection = ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)
    started, cpu, count = time.perf_counter(), time.process_time(), 0
    for _ in connection.extend.standard.paged_search(
        directory.base_dn, AD_USER_FILTER, attributes=attributes, paged_size=500, generator=True
    ):
        count += 1
    ad_seconds, ad_cpu = time.perf_counter() - started, time.process_time() - cpu
    connection.unbind()

    token = exchange.msal_app("secret").acquire_token_for_client([exchange.scope])["access_token"]
    session = exchange.session()
    body = {"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"ResultSize": "Unlimited"}}}
    headers = {"Authorization": f"Bearer {token}", "Prefer": "odata.maxpagesize=1000"}
    started, cpu, url, exo_count = time.perf_counter(), time.process_time(), exchange.exchange_url, 0
    while url:
        payload = session.post(url, json=body, headers=headers, timeout=60).json()
        exo_count += len(payload["value"])
        url = payload.get("@odata.nextLink")
    exo_seconds, exo_cpu = time.perf_counter() - started, time.process_time() - cpu
    return RawReads(count, ad_seconds, ad_cpu, exo_count, exo_seconds, exo_cpu)


class _Taken(logging.Handler):
    """How many Exchange objects each import's directory pass took from the spool (written once, whole)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.counts: list[int] = []
        self.spool_mb: list[float] = []
        self.waited: list[int] = []
        self.directory_done: list[float] = []  # when each directory pass ended (time.time())

    def emit(self, record: logging.LogRecord) -> None:
        if "took" in record.msg and "from the spool" in record.msg:
            self.counts.append(record.args[1])
            self.waited.append(record.args[2])
            self.directory_done.append(record.created)
        elif "spool took" in record.msg:
            self.spool_mb.append(record.args[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--profile", metavar="FILE", help="write cProfile statistics of the first import to FILE")
    args = parser.parse_args()
    engine = setup_django("inventory")
    from django.conf import settings as django_settings

    # A worker runs with DEBUG off. On, Django keeps the text of every statement (the import's documents are a
    # megabyte each) and, on SQLite, asks the database to quote each statement's values once more: 460 MB and a tenth
    # of the CPU at 200,000 users that a worker never spends.
    django_settings.DEBUG = False
    from django.conf import settings

    from sandbox.directory import SandboxDirectory
    from sandbox.exchange_online import ExchangeOnlineEmulator
    from sandbox.seed import seed_tenant
    from soa.models import Mailbox
    from writeback.inventory import inventory_run_request
    from writeback.jobs.inventory import claim, execute

    print("bench_inventory: full and incremental import of a seeded tenant vs raw reads of both sides")
    print(machine_line())
    print(f"database: {engine}; options: {vars(args)}")
    Mailbox.objects.all().delete()

    began = time.perf_counter()
    with (
        SandboxDirectory.start(users=args.users) as directory,
        # Hybrid writeback on: pairs come from msDS-ExternalDirectoryObjectID, as on a tenant where Connect writes it.
        ExchangeOnlineEmulator.start(
            directory=directory, rate=0, hybrid_writeback=True, timeout=60 + args.users / 100
        ) as exchange,
    ):
        # The emulator's start has synced and written msDS-ExternalDirectoryObjectID back to every user; another tick
        # here would give back the seed's missing mailboxes and sync its AD edits, which the import should meet.
        report = seed_tenant(directory, exchange, sync=False)
        print(f"tenant ready in {time.perf_counter() - began:.1f} s: {report}")
        client = exchange.clients["secret"]
        for name, value in {
            "LDAP_URL": directory.url, "LDAP_BIND_DN": directory.bind_dn, "LDAP_BASE_DN": directory.base_dn,
            "LDAP_PASSWORD_FILE": str(directory.password_file), "EXO_BASE_URL": exchange.base_url,
            "EXO_TENANT": exchange.tenant_id, "ENTRA_AUTHORITY": exchange.authority,
            "GRAPH_BASE_URL": exchange.graph_url,
            "EXO_CA_FILE": str(exchange.ca_file),
            "ENTRA_CLIENT_ID": client["client_id"], "ENTRA_CLIENT_SECRET_FILE": client["client_secret_file"],
        }.items():  # fmt: skip
            setattr(settings, name, value)

        raw = raw_reads(directory, exchange)
        # Each figure is printed as soon as it is known: a run at 1,000,000 users takes an hour.
        print(raw.line(), flush=True)
        baseline = raw.rate
        labels = iter(
            ["full import, empty database", "full import again, nothing changed", "incremental import, nothing changed"]
        )
        taken = _Taken()
        inventory_log = logging.getLogger("writeback.inventory")  # the bench logs at WARNING: this one line only
        inventory_log.setLevel(logging.INFO)
        inventory_log.propagate = False
        inventory_log.addHandler(taken)
        figures = {}
        for mode in ("FULL", "FULL", "INCREMENTAL"):
            run = inventory_run_request(actor=None, mode=mode, enqueue=False)
            peaks, before = _reset_peak(), _status_mb("VmRSS")
            wall = time.time()
            started, cpu, reader = time.perf_counter(), time.process_time(), _children_cpu()
            if args.profile and not figures:
                profiler = cProfile.Profile()
                run = profiler.runcall(execute, claim(run.pk))
                profiler.dump_stats(args.profile)
            else:
                run = execute(claim(run.pk))
            seconds, cpu, reader = time.perf_counter() - started, time.process_time() - cpu, _children_cpu() - reader
            assert run.state == "DONE", run.error
            if taken.directory_done:
                print(
                    f"{mode.lower()} import: directory pass {taken.directory_done[-1] - wall:.2f} s of {seconds:.2f} s"
                )
            figures.setdefault(mode, []).append((seconds, run, (cpu, reader)))
            peak = (
                f"{_status_mb():.0f} MB (the process held {before:.0f} MB when it started)"
                if peaks
                else f"not measured here (process high-water {_rss_mb():.0f} MB)"
            )
            print(f"peak RSS of this process during the {mode.lower()} import: {peak}")
            rate = (run.ad_read + run.exo_read) / seconds
            print(f"{next(labels):<46} {rate:>10,.0f} objects/s   ({run.ad_read + run.exo_read} in {seconds:.2f} s, "
                  f"CPU {cpu:.2f} s + Exchange reader {reader:.2f} s; ratio to raw reads {rate / baseline:.2f}; "
                  f"created {run.created}, changed {run.changed})", flush=True)  # fmt: skip

    first = figures["FULL"][0][1]
    objects = first.ad_read + first.exo_read
    print(f"objects read by the first import: {objects}; mailboxes stored: {first.created}; pairs: {first.pairings}")
    print(f"Exchange objects the directory pass took from the spool, per import: {taken.counts} "
          f"(users who waited for Exchange's read: {taken.waited}); "
          f"the spool's size on disk (MB): {[round(mb, 1) for mb in taken.spool_mb]}")  # fmt: skip


if __name__ == "__main__":
    main()
