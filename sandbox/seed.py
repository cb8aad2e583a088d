"""A realistic tenant on both sides: generated AD users, their mailboxes, and the usual untidiness.

The directory's users come from ``SandboxDirectory.start(users=N)`` (slapadd, fast); the emulator's Entra
Connect creates their mailboxes on its first sync. ``seed_tenant`` then makes the tenant look lived-in, the
same way every time for the same seed:

- a share of the mailboxes already cloud-managed (an earlier pilot), some of them with cloud-only edits
  that AD does not have (drift the inventory must report);
- a few AD edits not synced yet (drift in the other direction);
- a few AD users whose mailbox is missing in Exchange Online (one-sided objects);
- a few cloud-only mailboxes (not directory-synced: the inventory must skip them).

    python -m sandbox.seed --users 200000   # start both, seed, print the figures, stop
"""

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import ldap3

from sandbox.directory import SandboxDirectory
from sandbox.exchange_online import ExchangeOnlineEmulator


@dataclass
class SeedReport:
    mailboxes: int = 0
    cloud_managed: int = 0
    cloud_edits: int = 0
    ad_edits: int = 0
    missing_in_exo: int = 0
    cloud_only: int = 0
    seconds: float = 0.0


def seed_tenant(
    directory: SandboxDirectory,
    exchange: ExchangeOnlineEmulator,
    *,
    cloud_managed_share: float = 0.10,
    cloud_edit_share: float = 0.20,
    ad_edits: int = 5,
    missing_in_exo: int = 3,
    cloud_only: int = 5,
    seed: int = 1,
    sync: bool = True,
) -> SeedReport:
    """Shape the tenant as described in the module docstring; returns what was done.

    ``sync``: run a sync tick first. False when the emulator was just started on this directory: its first tick has
    read it already, so another changes nothing in the tenant (only the tick count and the last sync time), and at a
    million users a tick takes minutes.
    """
    started = time.perf_counter()
    rng = random.Random(seed)  # noqa: S311 - test data
    if sync:
        exchange.sync()
    # Object ids only: whole records of a million mailboxes are gigabytes, and the shuffle below gives the same order
    # to the ids as to the records they were sorted with.
    listed = exchange.mailboxes(["ExternalDirectoryObjectId", "IsDirSynced"])
    synced = sorted(m["ExternalDirectoryObjectId"] for m in listed if m.get("IsDirSynced"))
    del listed
    report = SeedReport(mailboxes=len(synced))
    rng.shuffle(synced)
    flip_count = int(len(synced) * cloud_managed_share)
    flipped, rest = synced[:flip_count], synced[flip_count:]
    changes: list[dict[str, Any]] = [{"Identity": object_id, "IsExchangeCloudManaged": True} for object_id in flipped]
    edited = exchange.lookup_mailboxes(flipped[: int(flip_count * cloud_edit_share)], ["Alias", "EmailAddresses"])
    for index, mailbox in enumerate(edited):
        # What help desk did in the cloud after the flip, which AD has not heard of.
        changes[index]["CustomAttribute10"] = f"cloud-edit-{index}"
        alias = mailbox["Alias"]
        changes[index]["EmailAddresses"] = [*mailbox["EmailAddresses"], f"smtp:{alias}.cloud@{exchange.mail_domain}"]
        report.cloud_edits += 1
    exchange.update_mailboxes(changes)  # one request per 10,000 flips, each as update_mailbox would make it
    report.cloud_managed = len(flipped)

    ad_edited = exchange.lookup_mailboxes(rest[:ad_edits], ["UserPrincipalName"]) if ad_edits else []
    connection = ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)
    try:
        for mailbox in ad_edited:
            dn = _dn_of(connection, directory, mailbox["UserPrincipalName"])
            connection.modify(dn, {"extensionAttribute9": [(ldap3.MODIFY_REPLACE, ["edited on-premises"])]})
            report.ad_edits += 1
    finally:
        connection.unbind()
    for object_id in rest[ad_edits : ad_edits + missing_in_exo]:
        exchange.delete_mailbox(object_id)
        report.missing_in_exo += 1
    for index in range(cloud_only):
        exchange.create_mailbox(
            Name=f"Cloud Room {index}", DisplayName=f"Cloud Room {index}", Alias=f"cloudroom{index}",
            UserPrincipalName=f"cloudroom{index}@{exchange.mail_domain}", RecipientTypeDetails="RoomMailbox",
        )  # fmt: skip
        report.cloud_only += 1
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _dn_of(connection: ldap3.Connection, directory: SandboxDirectory, upn: str) -> str:
    from ldap3.utils.conv import escape_filter_chars

    connection.search(directory.base_dn, f"(userPrincipalName={escape_filter_chars(upn)})", attributes=["1.1"])
    if not connection.entries:
        raise LookupError(f"{upn} is not in the sandbox directory")
    return connection.entries[0].entry_dn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start the sandbox directory and emulator, seed them, report.")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    with SandboxDirectory.start(users=args.users, seed=args.seed) as directory:
        loaded = time.perf_counter() - began
        # The emulator's first Entra Connect sync reads every user before it answers (~4,500 users a second at 1M).
        with ExchangeOnlineEmulator.start(directory=directory, timeout=30 + args.users / 2000) as exchange:
            started = time.perf_counter() - began - loaded
            report = seed_tenant(directory, exchange, seed=args.seed, sync=False)
    figures = {"users": args.users, "directory_seconds": round(loaded, 2), "emulator_seconds": round(started, 2)}
    print(json.dumps({**figures, **asdict(report)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
