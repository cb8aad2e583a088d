"""Writeback throughput: the directory client's minimal modifies against raw ldap3 sending the same operations.

Both talk to the same sandbox slapd over one connection each, one synchronous operation at a time. The raw
baselines are what bench_directory.py measures (a modify by known DN), plus the read-before-write baseline that
is fair to ``apply_desired``: a search by escaped objectGUID for the same Exchange attributes, then the modify.
The ratios are the client's own cost: planning, value encoding, error mapping, locking, and for
``verify=True`` the re-read after the write.

    .venv/bin/python bench/bench_writeback_modify.py [--ops 500] [--repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run from a checkout without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ldap3  # noqa: E402
from ldap3.utils.conv import escape_bytes  # noqa: E402

from bench.common import Figure, machine_line, timed  # noqa: E402
from sandbox.directory import SandboxDirectory, find_tool, generate_users  # noqa: E402
from writeback.directory import EXCHANGE_LDAP_ATTRIBUTES, DirectoryClient, DirectoryConfig, plan_modify  # noqa: E402


def raw_connection(directory: SandboxDirectory) -> ldap3.Connection:
    # As bench_directory.py: no schema, so strings go out as given.
    server = ldap3.Server(directory.url, get_info=ldap3.NONE)
    return ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True)


def _check(conn: ldap3.Connection, ok: bool) -> None:
    if not ok:
        raise RuntimeError(f"LDAP operation failed: {conn.result}")


def count(conn: ldap3.Connection, base: str, search_filter: str) -> int:
    found = conn.extend.standard.paged_search(base, search_filter, attributes=["1.1"], paged_size=1000, generator=True)
    return sum(1 for item in found if item["type"] == "searchResEntry")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=500, help="users written per timed run (default 500)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each figure (default 5)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    slapd_version = subprocess.run([find_tool("slapd"), "-VV"], capture_output=True, text=True, check=False)
    print("bench_writeback_modify: directory client vs raw ldap3, one connection each, same slapd")
    print(machine_line())
    print(f"ldap3 {ldap3.__version__}, {slapd_version.stderr.splitlines()[0].strip()}")
    print(f"options: ops={args.ops} repeats={args.repeats}")

    users = list(generate_users(args.ops))
    targets = [(user["dn"], uuid.UUID(bytes_le=user["objectGUID"])) for user in users]
    rounds = itertools.count(1)

    with SandboxDirectory.start(users=args.ops) as directory:
        raw = raw_connection(directory)
        config = DirectoryConfig(
            url=directory.url,
            bind_dn=directory.bind_dn,
            password_file=str(directory.password_file),
            base_dn=directory.base_dn,
        )
        client = DirectoryClient(config)
        client.change_mark()  # bind and read the schema outside the timed sections
        base = directory.base_dn
        state: dict[str, Any] = {}

        def expect(search_filter: str, expected: int) -> None:
            found = count(raw, directory.users_dn, search_filter)
            if found != expected:
                raise RuntimeError(f"{found} users match {search_filter} after the run, expected {expected}")

        def raw_read(guid: uuid.UUID) -> dict[str, Any]:
            _check(
                raw,
                raw.search(base, f"(objectGUID={escape_bytes(guid.bytes_le)})", attributes=EXCHANGE_LDAP_ATTRIBUTES),
            )
            return raw.response[0]

        # -- single-valued replace: extensionAttribute3 gets a new value for every user in every run ------------

        def new_value() -> str:
            state["value"] = f"round {next(rounds)}"
            return state["value"]

        def raw_replace() -> None:
            value = new_value()
            for dn, _ in targets:
                _check(raw, raw.modify(dn, {"extensionAttribute3": [(ldap3.MODIFY_REPLACE, [value])]}))

        def raw_read_replace() -> None:
            value = new_value()
            for _, guid in targets:
                entry = raw_read(guid)
                _check(raw, raw.modify(entry["dn"], {"extensionAttribute3": [(ldap3.MODIFY_REPLACE, [value])]}))

        def client_modify() -> None:
            changes = plan_modify({}, {"extensionAttribute3": new_value()})
            for dn, _ in targets:
                client.modify(dn, changes)

        def client_apply(verify: bool) -> Callable[[], None]:
            def run() -> None:
                desired = {"extensionAttribute3": new_value()}
                for _, guid in targets:
                    if not client.apply_desired(guid, desired, verify=verify)[1]:
                        raise RuntimeError("apply_desired wrote nothing where a change was due")

            return run

        def raw_read_only() -> None:
            for _, guid in targets:
                raw_read(guid)

        def client_noop() -> None:
            desired = {"extensionAttribute3": state["value"]}
            for _, guid in targets:
                if client.apply_desired(guid, desired)[1]:
                    raise RuntimeError("apply_desired wrote where AD already held the value")

        # -- multi-valued: one proxy address added in one run, deleted in the next ---------------------------------

        def address(index: int) -> str:
            return f"smtp:bench.{index}@corp.example.com"

        def raw_read_proxy() -> None:
            op = ldap3.MODIFY_DELETE if state.get("proxy_added") else ldap3.MODIFY_ADD
            for index, (_, guid) in enumerate(targets):
                entry = raw_read(guid)
                _check(raw, raw.modify(entry["dn"], {"proxyAddresses": [(op, [address(index)])]}))
            state["proxy_added"] = op == ldap3.MODIFY_ADD

        def client_proxy() -> None:
            adding = not state.get("proxy_added")
            for index, (_, guid) in enumerate(targets):
                base_addresses = users[index]["proxyAddresses"]
                desired = {"proxyAddresses": [*base_addresses, address(index)] if adding else base_addresses}
                if not client.apply_desired(guid, desired, verify=False)[1]:
                    raise RuntimeError("apply_desired wrote nothing where a change was due")
            state["proxy_added"] = adding

        def replaced() -> None:
            expect(f"(extensionAttribute3={state['value']})", args.ops)

        def proxies() -> None:
            expect("(proxyAddresses=smtp:bench.*)", args.ops if state.get("proxy_added") else 0)

        runs: list[tuple[Figure, Callable[[], None], Callable[[], None]]] = [
            (Figure("raw ldap3 modify by DN: replace 1 attribute", "ops/s"), raw_replace, replaced),
            (Figure("client.modify by DN: replace 1 attribute", "ops/s"), client_modify, replaced),
            (Figure("raw ldap3 search by GUID + modify (replace)", "ops/s"), raw_read_replace, replaced),
            (Figure("client.apply_desired(verify=False) (replace)", "ops/s"), client_apply(False), replaced),
            (Figure("client.apply_desired(verify=True) (replace)", "ops/s"), client_apply(True), replaced),
            (Figure("raw ldap3 search by GUID only", "ops/s"), raw_read_only, replaced),
            (Figure("client.apply_desired, AD already equal (no write)", "ops/s"), client_noop, replaced),
            (Figure("raw ldap3 search by GUID + add/delete 1 proxy", "ops/s"), raw_read_proxy, proxies),
            (Figure("client.apply_desired(verify=False) (1 proxy)", "ops/s"), client_proxy, proxies),
        ]
        for _ in range(args.repeats):
            for figure, run, check in runs:
                figure.samples.append(args.ops / timed(run))
                check()
        raw.unbind()
        client.close()

    print(f"\n{'figure':<52} {'median':>12} {'unit':<10} (min - max)")
    for figure, _, _ in runs:
        print(figure.row())

    median = {figure.name: figure.median for figure, _, _ in runs}
    names = list(median)

    def ratio(client_name: str, raw_name: str) -> str:
        return f"{median[client_name] / median[raw_name]:.2f}"

    print("\nclient / raw throughput (1.00 = no overhead):")
    print(f"  modify by DN                          {ratio(names[1], names[0])}")
    print(f"  read + modify, verify=False           {ratio(names[3], names[2])}")
    print(f"  read + modify + re-read, verify=True  {ratio(names[4], names[2])}  (one extra search per write)")
    print(f"  read only (nothing to write)          {ratio(names[6], names[5])}")
    print(f"  read + add/delete one proxy address   {ratio(names[8], names[7])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
