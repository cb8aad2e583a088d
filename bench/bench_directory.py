"""Baseline figures of the sandbox directory: what slapd and raw ldap3 manage on this machine.

Later benchmarks (inventory import, writeback, drift scan) compare themselves with these numbers,
so they are measured without any SOA Portal code in the path: sandbox.directory to start slapd,
plain ldap3 on one connection to talk to it.

    .venv/bin/python bench/bench_directory.py [--users 10000] [--repeats 5] [--starts 10]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

# Run from a checkout without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ldap3  # noqa: E402
from ldap3.utils.conv import escape_bytes, escape_filter_chars  # noqa: E402

from bench.common import Figure, machine_line, timed  # noqa: E402
from sandbox.directory import (  # noqa: E402
    DEFAULT_BASE_DN,
    SandboxDirectory,
    base_entries,
    find_tool,
    generate_users,
    write_ldif,
)


def connect(directory: SandboxDirectory) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(directory.url, get_info=ldap3.NONE), directory.bind_dn, directory.password, auto_bind=True
    )


def machine_header(args: argparse.Namespace) -> str:
    slapd_version = subprocess.run(
        [find_tool("slapd"), "-VV"], capture_output=True, text=True, check=False
    ).stderr.splitlines()[0]
    return "\n".join(
        [
            "bench_directory: baseline figures of the sandbox directory (slapd + raw ldap3, one connection)",
            machine_line(),
            f"ldap3 {ldap3.__version__}, {slapd_version.strip()}",
            f"options: users={args.users} adds={args.adds} repeats={args.repeats} starts={args.starts} "
            f"page_size={args.page_size}",
        ]
    )


def bench_start_stop(starts: int) -> list[Figure]:
    """An empty directory (domain and OU tree only): what every test session pays."""
    start = Figure("start() to port open", "ms")
    first_bind = Figure("start() to first successful bind", "ms")
    stop = Figure("stop()", "ms")
    for _ in range(starts):
        began = time.perf_counter()
        directory = SandboxDirectory.start()
        start.samples.append((time.perf_counter() - began) * 1000)
        connect(directory).unbind()
        first_bind.samples.append((time.perf_counter() - began) * 1000)
        stop.samples.append(timed(directory.stop) * 1000)
    return [start, first_bind, stop]


def write_users_ldif(path: Path, users: int) -> None:
    with path.open("wb") as stream:
        write_ldif(itertools.chain(base_entries(DEFAULT_BASE_DN), generate_users(users)), stream)


def bench_bulk_load(users: int, repeats: int) -> list[Figure]:
    """Generating users, slapadd on its own, and both together as start(users=N) does them."""
    generate = Figure(f"generate + render LDIF of {users:,} users", "users/s")
    slapadd = Figure(f"slapadd -q of {users:,} users (LDIF file ready)", "users/s")
    start = Figure(f"start(users={users:,}) to port open", "users/s")
    with tempfile.TemporaryDirectory(prefix="bench-directory-") as scratch:
        workdir = Path(scratch) / "instance"
        SandboxDirectory.start(workdir=workdir).stop()  # leaves a slapd.conf to point slapadd at
        ldif_path = Path(scratch) / "users.ldif"
        command = [find_tool("slapadd"), "-q", "-w", "-f", str(workdir / "slapd.conf"), "-l", str(ldif_path)]
        for _ in range(repeats):
            generate.samples.append(users / timed(partial(write_users_ldif, ldif_path, users)))
            shutil.rmtree(workdir / "data")
            (workdir / "data").mkdir()
            slapadd.samples.append(users / timed(partial(subprocess.run, command, check=True)))
        for _ in range(repeats):
            began = time.perf_counter()
            directory = SandboxDirectory.start(users=users)
            start.samples.append(users / (time.perf_counter() - began))
            directory.stop()
    return [generate, slapadd, start]


def _check(conn: ldap3.Connection, ok: bool) -> None:
    if not ok:
        raise RuntimeError(f"LDAP operation failed: {conn.result}")


def ldap_values(entry: dict[str, Any]) -> dict[str, Any]:
    """Attributes of a generated entry as a schema-less ldap3 connection must send them."""
    # Without the server schema ldap3 would send True as "True", which the Boolean syntax refuses.
    return {k: ("TRUE" if v else "FALSE") if isinstance(v, bool) else v for k, v in entry.items() if k != "dn"}


def add_all(conn: ldap3.Connection, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        _check(conn, conn.add(entry["dn"], attributes=ldap_values(entry)))


def replace_all(conn: ldap3.Connection, entries: list[dict[str, Any]]) -> None:
    for number, entry in enumerate(entries):
        _check(conn, conn.modify(entry["dn"], {"extensionAttribute3": [(ldap3.MODIFY_REPLACE, [f"bench {number}"])]}))


def add_delete_all(conn: ldap3.Connection, entries: list[dict[str, Any]]) -> None:
    """One add and one delete of a proxyAddresses value per entry: the minimal modifies of an alias edit."""
    for entry in entries:
        address = f"smtp:bench.{entry['mailNickname']}@corp.example.com"
        _check(conn, conn.modify(entry["dn"], {"proxyAddresses": [(ldap3.MODIFY_ADD, [address])]}))
        _check(conn, conn.modify(entry["dn"], {"proxyAddresses": [(ldap3.MODIFY_DELETE, [address])]}))


def bench_writes(adds: int, repeats: int) -> list[Figure]:
    """Adds and the two kinds of modify writeback does, one synchronous operation at a time."""
    add = Figure("ldap3 add (full user entry)", "ops/s")
    replace = Figure("ldap3 modify: replace one single-valued attribute", "ops/s")
    multi = Figure("ldap3 modify: add or delete one proxyAddresses value", "ops/s")
    entries = list(generate_users(adds))
    for _ in range(repeats):
        with SandboxDirectory.start() as directory:
            conn = connect(directory)
            add.samples.append(adds / timed(partial(add_all, conn, entries)))
            replace.samples.append(adds / timed(partial(replace_all, conn, entries)))
            multi.samples.append(2 * adds / timed(partial(add_delete_all, conn, entries)))
            conn.unbind()
    return [add, replace, multi]


def list_users(conn: ldap3.Connection, base: str, page_size: int, expected: int) -> None:
    found = 0
    for item in conn.extend.standard.paged_search(
        base, "(objectClass=user)", attributes=["*"], paged_size=page_size, generator=True
    ):
        found += item["type"] == "searchResEntry"
    if found != expected:
        raise RuntimeError(f"paged search returned {found} users, expected {expected}")


def changes_since(conn: ldap3.Connection, base: str, mark: str, expected: int) -> None:
    conn.search(base, f"(entryCSN>={escape_filter_chars(mark)})", attributes=["entryCSN"])
    changed = [entry for entry in conn.entries if entry.entryCSN.value != mark]
    if len(changed) != expected:
        raise RuntimeError(f"{len(changed)} changes since the mark, expected {expected}")


def lookup_guids(conn: ldap3.Connection, base: str, guids: list[bytes]) -> None:
    for guid in guids:
        conn.search(base, f"(objectGUID={escape_bytes(guid)})", attributes=["proxyAddresses"])
        if len(conn.entries) != 1:
            raise RuntimeError("objectGUID lookup did not find exactly one entry")


def bench_reads(users: int, repeats: int, page_size: int) -> list[Figure]:
    """Paged listing of every user, lookups by objectGUID, and the incremental read since a mark."""
    paged = Figure(f"paged search of {users:,} users, all attributes", "entries/s")
    by_guid = Figure("lookup by escaped objectGUID", "ops/s")
    changed_count = min(100, users)
    changes = Figure(f"changes since mark ({changed_count} of {users:,} changed)", "ms")
    sample = list(generate_users(users))  # the same seed as the loaded users: same DNs and GUIDs
    guids = [entry["objectGUID"] for entry in sample[:1000]]
    with SandboxDirectory.start(users=users) as directory:
        conn = connect(directory)
        base = directory.base_dn
        for repeat in range(repeats):
            paged.samples.append(users / timed(partial(list_users, conn, directory.users_dn, page_size, users)))
            by_guid.samples.append(len(guids) / timed(partial(lookup_guids, conn, base, guids)))

            conn.search(base, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["contextCSN"])
            mark = conn.entries[0].contextCSN.value
            for entry in sample[:changed_count]:
                change = {"extensionAttribute4": [(ldap3.MODIFY_REPLACE, [f"round {repeat}"])]}
                _check(conn, conn.modify(entry["dn"], change))
            changes.samples.append(timed(partial(changes_since, conn, base, mark, changed_count)) * 1000)
        conn.unbind()
    return [paged, by_guid, changes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000, help="users for bulk load and reads (default 10000)")
    parser.add_argument("--adds", type=int, default=1_000, help="entries added and modified over LDAP (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each throughput figure (default 5)")
    parser.add_argument("--starts", type=int, default=10, help="starts of an empty directory (default 10)")
    parser.add_argument("--page-size", type=int, default=500, help="paged search page size (default 500)")
    args = parser.parse_args()

    print(machine_header(args), flush=True)
    figures: list[Figure] = []
    for stage in (
        lambda: bench_start_stop(args.starts),
        lambda: bench_bulk_load(args.users, args.repeats),
        lambda: bench_writes(args.adds, args.repeats),
        lambda: bench_reads(args.users, args.repeats, args.page_size),
    ):
        figures.extend(stage())

    print(f"\n{'figure':<52} {'median':>12} {'unit':<10} (min - max)")
    for figure in figures:
        print(figure.row())

    by_name = {figure.name: figure for figure in figures}
    add_rate = by_name["ldap3 add (full user entry)"].median
    slapadd_rate = next(f for f in figures if f.name.startswith("slapadd")).median
    print(f"\nslapadd loads users {slapadd_rate / add_rate:,.0f}x faster than ldap3 adds on one connection.")
    print("These are the baselines: later benchmarks report their figures as ratios of these.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
