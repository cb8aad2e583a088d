"""Overhead of the Exchange Online client against a bare requests loop sending the same calls.

Both talk to the emulator over HTTPS on one pooled connection, with throttling off, so the ratio is the
cost of the client itself: token cache lookup, headers, error mapping, logging, paging logic, and for
verified writes the extra read.

    .venv/bin/python bench/bench_exchange_client.py [--calls 300] [--repeats 5] [--users 200]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msal  # noqa: E402
import requests  # noqa: E402

from bench.common import Figure, machine_line, timed  # noqa: E402
from sandbox.directory import SandboxDirectory  # noqa: E402
from sandbox.exchange_online import ExchangeOnlineEmulator  # noqa: E402
from writeback.exchange import (
    ExchangeConfig,  # noqa: E402
    ExchangeOnlineClient,  # noqa: E402
)


def _client(emulator) -> ExchangeOnlineClient:
    client = emulator.clients["secret"]
    config = ExchangeConfig(
        base_url=emulator.base_url,
        tenant=emulator.tenant_id,
        authority=emulator.authority,
        client_id=client["client_id"],
        client_secret_file=client["client_secret_file"],
        ca_file=str(emulator.ca_file),
    )
    return ExchangeOnlineClient(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the client logs every call at INFO; keep the terminal for figures
    print("bench_exchange_client: client vs bare requests, Get-Mailbox and no-op Set-Mailbox, one connection")
    print(machine_line())
    print(f"msal {msal.__version__}, requests {requests.__version__}; options: {vars(args)}")

    with (
        SandboxDirectory.start(users=args.users) as directory,
        ExchangeOnlineEmulator.start(directory=directory, rate=0) as emulator,
    ):
        upns = [m["UserPrincipalName"] for m in emulator.mailboxes() if m["IsDirSynced"]][: args.calls]
        calls = [upns[i % len(upns)] for i in range(args.calls)]
        client = _client(emulator)
        target = calls[0]
        client.set_mailbox(target, IsExchangeCloudManaged=True)

        bare = emulator.session()
        token = client.tokens.token()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def bare_get():
            for upn in calls:
                body = {"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"Identity": upn}}}
                response = bare.post(emulator.exchange_url, json=body, headers=headers, timeout=30)
                assert response.status_code == 200 and response.json()["value"]

        def client_get():
            for upn in calls:
                assert client.get_mailbox(upn)["UserPrincipalName"] == upn

        def bare_set():
            body = {
                "CmdletInput": {
                    "CmdletName": "Set-Mailbox",
                    "Parameters": {"Identity": target, "CustomAttribute1": "x"},
                }
            }
            for _ in calls:
                assert bare.post(emulator.exchange_url, json=body, headers=headers, timeout=30).status_code == 200

        def client_set():
            for _ in calls:
                client.set_mailbox(target, CustomAttribute1="x")

        def client_set_verified():
            for _ in calls:
                client.set_mailbox(target, CustomAttribute1="x", verify=True)

        runs = {
            "bare requests Get-Mailbox": bare_get,
            "client.get_mailbox": client_get,
            "bare requests Set-Mailbox (no-op)": bare_set,
            "client.set_mailbox (no-op)": client_set,
            "client.set_mailbox(verify=True) (no-op)": client_set_verified,
        }
        figures = {name: Figure(name, "calls/s") for name in runs}
        client_get()  # warm the pool and the token cache
        bare_get()
        for _ in range(args.repeats):
            for name, run in runs.items():
                figures[name].samples.append(len(calls) / timed(run))
        for figure in figures.values():
            print(figure.row())
        get_ratio = figures["client.get_mailbox"].median / figures["bare requests Get-Mailbox"].median
        set_ratio = figures["client.set_mailbox (no-op)"].median / figures["bare requests Set-Mailbox (no-op)"].median
        print(f"client/bare throughput: Get-Mailbox {get_ratio:.2f}, Set-Mailbox {set_ratio:.2f} (1.00 = no overhead)")
        print(f"emulator counters: {emulator.counters()['by_status']}")


if __name__ == "__main__":
    main()
