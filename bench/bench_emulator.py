"""The Exchange Online emulator's own request rate: how fast it answers, so client figures can be judged.

A client benchmark can go no faster than this, and the product's waves are paced by EXO's throttle budget,
so both are printed: the figures, the emulator's HTTPS floor (an admin health check on the same connection)
and the default per-client throttle budget (1000 requests/s). Throttling is off while measuring.

    .venv/bin/python bench/bench_emulator.py [--users 1000] [--requests 2000] [--threads 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Run from a checkout without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cryptography  # noqa: E402
import msal  # noqa: E402
import requests  # noqa: E402

from bench.common import Figure, machine_line  # noqa: E402
from sandbox.directory import SandboxDirectory, generate_users  # noqa: E402
from sandbox.exchange_online import ExchangeOnlineEmulator  # noqa: E402

DEFAULT_BUDGET = 1000.0  # requests/s per client: the emulator's default token-bucket rate


def header(args: argparse.Namespace) -> str:
    return "\n".join(
        [
            "bench_emulator: request rate of the Exchange Online + Entra ID emulator (HTTPS on loopback)",
            machine_line(),
            f"requests {requests.__version__}, msal {msal.__version__}, cryptography {cryptography.__version__}",
            f"options: users={args.users} requests={args.requests} threads={args.threads} repeats={args.repeats}",
        ]
    )


class Caller:
    """One keep-alive HTTPS connection (a requests.Session) sending InvokeCommand bodies."""

    def __init__(self, emulator: ExchangeOnlineEmulator, token: str) -> None:
        self.emulator = emulator
        self.session = emulator.session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def invoke(self, cmdlet: str, parameters: dict, *, url: str | None = None, headers: dict | None = None) -> dict:
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}}
        response = self.session.post(url or self.emulator.exchange_url, json=body, headers=headers, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"{cmdlet} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def health(self) -> None:
        response = self.session.get(
            f"{self.emulator.base_url}/_emulator/health",
            headers={"X-Emulator-Admin-Token": self.emulator.admin_token},
            timeout=60,
        )
        if response.status_code != 200:
            raise RuntimeError(f"health answered {response.status_code}")

    def close(self) -> None:
        self.session.close()


def get_by_identity(caller: Caller, upns: list[str], count: int) -> None:
    for index in range(count):
        upn = upns[index % len(upns)]
        found = caller.invoke("Get-Mailbox", {"Identity": upn})["value"]
        if len(found) != 1 or found[0]["UserPrincipalName"] != upn:
            raise RuntimeError(f"Get-Mailbox {upn} returned {found!r:.200}")


def set_no_op(caller: Caller, upns: list[str], count: int) -> None:
    for index in range(count):
        upn = upns[index % len(upns)]
        # AD still masters these mailboxes, so setting the flag to its current value is the allowed no-op.
        body = caller.invoke("Set-Mailbox", {"Identity": upn, "IsExchangeCloudManaged": False})
        if not body["@adminapi.warnings"] or "no settings" not in body["@adminapi.warnings"][0]:
            raise RuntimeError(f"Set-Mailbox {upn} was not a no-op: {body!r:.200}")


def health_checks(caller: Caller, _upns: list[str], count: int) -> None:
    for _ in range(count):
        caller.health()


def list_all(caller: Caller, expected: int, page_size: int) -> None:
    url, seen = None, 0
    while True:
        body = caller.invoke(
            "Get-Mailbox",
            {"ResultSize": "Unlimited"},
            url=url,
            headers={"Prefer": f"odata.maxpagesize={page_size}"},
        )
        seen += len(body["value"])
        url = body.get("@odata.nextLink")
        if url is None:
            break
    if seen != expected:
        raise RuntimeError(f"paging saw {seen} mailboxes, expected {expected}")


def rate(callers: list[Caller], work: Callable[[Caller, list[str], int], None], upns: list[str], total: int) -> float:
    """Requests per second of ``total`` requests split across the callers, one thread each."""
    share = total // len(callers)
    errors: list[BaseException] = []

    def run(caller: Caller, part: list[str]) -> None:
        try:
            work(caller, part, share)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    parts = [upns[i :: len(callers)] for i in range(len(callers))]
    threads = [threading.Thread(target=run, args=(c, p)) for c, p in zip(callers, parts, strict=True)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return share * len(callers) / elapsed


def bench_start(directory: SandboxDirectory, users: int, repeats: int) -> list[Figure]:
    """Start to ready: what every test session and `make demo` pays, with and without a first sync."""
    empty = Figure("start() to ready, empty tenant", "ms")
    synced = Figure(f"start(directory) to ready, first sync of {users:,} users", "ms")
    for _ in range(repeats):
        began = time.perf_counter()
        ExchangeOnlineEmulator.start().stop()
        empty.samples.append((time.perf_counter() - began) * 1000)
    for _ in range(repeats):
        began = time.perf_counter()
        emulator = ExchangeOnlineEmulator.start(directory=directory)
        synced.samples.append((time.perf_counter() - began) * 1000)
        emulator.stop()
    return [empty, synced]


def bench_requests(emulator: ExchangeOnlineEmulator, args: argparse.Namespace, upns: list[str]) -> list[Figure]:
    token = emulator.msal_app("secret").acquire_token_for_client([emulator.scope])["access_token"]
    figures: list[Figure] = []
    for threads in (1, args.threads):
        callers = [Caller(emulator, token) for _ in range(threads)]
        try:
            label = "1 connection" if threads == 1 else f"{threads} threads, a connection each"
            floor = Figure(f"HTTPS floor: admin health check, {label}", "req/s")
            get = Figure(f"Get-Mailbox -Identity <upn>, {label}", "req/s")
            noop = Figure(f"Set-Mailbox no-op (warning), {label}", "req/s")
            for caller in callers:  # warm the connections (TLS handshakes) outside the timed part
                caller.health()
            for _ in range(args.repeats):
                floor.samples.append(rate(callers, health_checks, upns, args.requests))
                get.samples.append(rate(callers, get_by_identity, upns, args.requests))
                noop.samples.append(rate(callers, set_no_op, upns, args.requests))
            figures += [floor, get, noop]
        finally:
            for caller in callers:
                caller.close()
    caller = Caller(emulator, token)
    paged = Figure(f"Get-Mailbox paged listing of {len(upns):,}, 1000 a page", "mailboxes/s")
    for _ in range(args.repeats):
        began = time.perf_counter()
        list_all(caller, len(upns), 1000)
        paged.samples.append(len(upns) / (time.perf_counter() - began))
    caller.close()
    return [*figures, paged]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="directory users, hence mailboxes (default 1000)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per timed run (default 2000)")
    parser.add_argument("--threads", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each figure (default 5)")
    parser.add_argument("--starts", type=int, default=5, help="emulator starts timed (default 5)")
    args = parser.parse_args()

    print(header(args), flush=True)
    upns = [user["userPrincipalName"] for user in generate_users(args.users)]
    with SandboxDirectory.start(users=args.users) as directory:
        figures = bench_start(directory, args.users, args.starts)
        with ExchangeOnlineEmulator.start(directory=directory, rate=None) as emulator:
            if len(emulator.mailboxes()) != args.users:
                raise RuntimeError("the first sync did not create one mailbox per user")
            figures += bench_requests(emulator, args, upns)

    print(f"\n{'figure':<62} {'median':>10} {'unit':<12} (min - max)")
    for figure in figures:
        print(figure.row())
    by_name = {figure.name: figure for figure in figures}
    single_get = by_name["Get-Mailbox -Identity <upn>, 1 connection"].median
    single_floor = by_name["HTTPS floor: admin health check, 1 connection"].median
    print(
        f"\nOn one connection Get-Mailbox runs at {single_get / single_floor:.0%} of the HTTPS floor and "
        f"{single_get / DEFAULT_BUDGET:.2f}x the default per-client throttle budget ({DEFAULT_BUDGET:,.0f}/s)."
    )
    print("Client benchmarks should report their calls/s as a ratio of the Get-Mailbox figure on one connection.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
