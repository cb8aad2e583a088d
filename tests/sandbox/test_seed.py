"""Seeding a large tenant: seed_tenant's batched path against the per-mailbox one it replaced, the admin endpoint's
batch routes it uses, and the emulator's own LDAP reading and writeback against ldap3's.

None of this is Microsoft's behaviour: the admin endpoint and the seeding only prepare the sandbox, and what
Get-Mailbox, Set-Mailbox and Graph show for a state is tested in the other test_exchange_online_* modules.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from typing import Any

import ldap3
import pytest

from sandbox.directory import SandboxDirectory
from sandbox.exchange_online import ExchangeOnlineEmulator, ExchangeOnlineEmulatorError, ldap_wire
from sandbox.exchange_online.mailboxes import directory_ids
from sandbox.exchange_online.sync import ATTRIBUTES, PEOPLE_FILTER
from sandbox.seed import SeedReport, _dn_of, seed_tenant

USERS, SEED = 200, 7
VOLATILE = ("WhenChangedUTC", "WhenCreatedUTC")
RANDOM_IDS = ("Guid", "ExchangeGuid", "ExternalDirectoryObjectId")  # of cloud-only mailboxes: uuid4


def seed_one_by_one(directory: SandboxDirectory, exchange: ExchangeOnlineEmulator, *, seed: int) -> SeedReport:
    """seed_tenant as it was before it batched (one admin call per mailbox, whole records listed), with its
    defaults: the reference the batched path must match."""
    rng = random.Random(seed)  # noqa: S311 - test data
    exchange.sync()
    synced = sorted(
        (m for m in exchange.mailboxes() if m.get("IsDirSynced")), key=lambda m: m["ExternalDirectoryObjectId"]
    )
    report = SeedReport(mailboxes=len(synced))
    rng.shuffle(synced)
    flip_count = int(len(synced) * 0.10)
    flipped, rest = synced[:flip_count], synced[flip_count:]
    for index, mailbox in enumerate(flipped):
        props: dict[str, Any] = {"IsExchangeCloudManaged": True}
        if index < int(flip_count * 0.20):
            props["CustomAttribute10"] = f"cloud-edit-{index}"
            alias = mailbox["Alias"]
            props["EmailAddresses"] = [*mailbox["EmailAddresses"], f"smtp:{alias}.cloud@{exchange.mail_domain}"]
            report.cloud_edits += 1
        exchange.update_mailbox(mailbox["ExternalDirectoryObjectId"], **props)
    report.cloud_managed = len(flipped)
    connection = ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)
    try:
        for mailbox in rest[:5]:
            dn = _dn_of(connection, directory, mailbox["UserPrincipalName"])
            connection.modify(dn, {"extensionAttribute9": [(ldap3.MODIFY_REPLACE, ["edited on-premises"])]})
            report.ad_edits += 1
    finally:
        connection.unbind()
    for mailbox in rest[5:8]:
        exchange.delete_mailbox(mailbox["ExternalDirectoryObjectId"])
        report.missing_in_exo += 1
    for index in range(5):
        exchange.create_mailbox(
            Name=f"Cloud Room {index}", DisplayName=f"Cloud Room {index}", Alias=f"cloudroom{index}",
            UserPrincipalName=f"cloudroom{index}@{exchange.mail_domain}", RecipientTypeDetails="RoomMailbox",
        )  # fmt: skip
        report.cloud_only += 1
    return report


def tenant_of(directory: SandboxDirectory, exchange: ExchangeOnlineEmulator) -> dict[str, Any]:
    """Everything seeding decides, without the clock's stamps and the random ids of cloud-only mailboxes."""
    mailboxes = {}
    for record in exchange.mailboxes():
        shown = {k: v for k, v in record.items() if k not in VOLATILE}
        if not record["IsDirSynced"]:
            shown = {k: v for k, v in shown.items() if k not in RANDOM_IDS}
        mailboxes[record["Guid"] if record["IsDirSynced"] else record["Name"]] = shown
    connection = ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)
    try:
        connection.search(directory.base_dn, "(extensionAttribute9=*)", attributes=["extensionAttribute9"])
        ad_edited = sorted((e.entry_dn, e.extensionAttribute9.value) for e in connection.entries)
    finally:
        connection.unbind()
    return {"mailboxes": mailboxes, "ad_edited": ad_edited}


@pytest.fixture(scope="module")
def seeded_both_ways() -> Iterator[tuple[dict, dict, SeedReport, SeedReport]]:
    """Two tenants from the same generated users, one seeded one mailbox at a time after a sync tick, the other by
    seed_tenant straight after the emulator's start."""
    with (
        SandboxDirectory.start(users=USERS, seed=SEED) as old_directory,
        SandboxDirectory.start(users=USERS, seed=SEED) as new_directory,
        ExchangeOnlineEmulator.start(directory=old_directory) as old_exchange,
        ExchangeOnlineEmulator.start(directory=new_directory) as new_exchange,
    ):
        old_report = seed_one_by_one(old_directory, old_exchange, seed=SEED)
        # Without the tick the emulator's start has just made: what main() and bench_inventory do.
        new_report = seed_tenant(new_directory, new_exchange, seed=SEED, sync=False)
        yield tenant_of(old_directory, old_exchange), tenant_of(new_directory, new_exchange), old_report, new_report


def test_batched_seeding_reports_what_the_per_mailbox_seeding_did(seeded_both_ways):
    _old, _new, old_report, new_report = seeded_both_ways
    assert new_report.seconds > 0
    assert {**vars(new_report), "seconds": 0} == {**vars(old_report), "seconds": 0}
    assert (new_report.cloud_managed, new_report.cloud_edits) == (int(USERS * 0.1), int(USERS * 0.1 * 0.2))


def test_batched_seeding_flips_and_edits_the_same_mailboxes(seeded_both_ways):
    old, new, _old_report, _new_report = seeded_both_ways

    def shaped(tenant: dict) -> tuple[set, dict]:
        flipped = {guid for guid, m in tenant["mailboxes"].items() if m["IsExchangeCloudManaged"]}
        edits = {guid: (m["CustomAttribute10"], m["EmailAddresses"]) for guid, m in tenant["mailboxes"].items()
                 if m["CustomAttribute10"].startswith("cloud-edit-")}  # fmt: skip
        return flipped, edits

    flipped, edits = shaped(new)
    assert len(flipped) == int(USERS * 0.1) and len(edits) == int(USERS * 0.1 * 0.2)
    assert all(addresses[-1].endswith(".cloud@corp.example.com") for _value, addresses in edits.values())
    assert (flipped, edits) == shaped(old)


def test_batched_seeding_leaves_the_same_tenant_on_both_sides(seeded_both_ways):
    old, new, _old_report, _new_report = seeded_both_ways
    assert len(new["mailboxes"]) == USERS - 3 + 5  # three deleted, five cloud-only rooms
    assert len(new["ad_edited"]) == 5
    assert new == old


# -- the admin endpoint's batch routes ----------------------------------------------------------------


def _synced(exchange: ExchangeOnlineEmulator, count: int) -> list[str]:
    listed = exchange.mailboxes(["ExternalDirectoryObjectId", "IsDirSynced"])
    return sorted(m["ExternalDirectoryObjectId"] for m in listed if m["IsDirSynced"])[:count]


def test_listing_with_fields_shows_only_those(exo_clean):
    whole = exo_clean.mailboxes()
    some = exo_clean.mailboxes(["Alias", "IsDirSynced"])
    assert some == [{"Alias": m["Alias"], "IsDirSynced": m["IsDirSynced"]} for m in whole]


def test_lookup_answers_in_the_order_asked_and_refuses_an_unknown_identity(exo_clean):
    first, second = _synced(exo_clean, 2)
    found = exo_clean.lookup_mailboxes([second, first], ["ExternalDirectoryObjectId", "WhenChangedUTC"])
    assert [m["ExternalDirectoryObjectId"] for m in found] == [second, first]
    assert found[0]["WhenChangedUTC"] == exo_clean.get_mailbox(second)["WhenChangedUTC"]
    assert exo_clean.lookup_mailboxes([first]) == [exo_clean.get_mailbox(first)]
    with pytest.raises(ExchangeOnlineEmulatorError, match="404"):
        exo_clean.lookup_mailboxes([first, "nobody@corp.example.com"])


def test_a_batch_patch_changes_each_mailbox_as_its_own_patch_would(exo_clean):
    one, other = _synced(exo_clean, 2)
    change = {"IsExchangeCloudManaged": True, "CustomAttribute10": "x", "EmailAddresses": ["SMTP:b1@corp.example.com"]}
    alone = exo_clean.update_mailbox(one, **change)
    exo_clean.reset()
    assert exo_clean.update_mailboxes([{"Identity": one, **change}, {"Identity": other, "CustomAttribute3": "y"}]) == 2
    assert exo_clean.get_mailbox(one) == alone
    assert exo_clean.get_mailbox(one)["PrimarySmtpAddress"] == "b1@corp.example.com"
    assert exo_clean.get_mailbox(other)["CustomAttribute3"] == "y"


def test_a_batch_patch_with_one_bad_change_applies_none(exo_clean):
    one, other = _synced(exo_clean, 2)
    before = exo_clean.get_mailbox(one)
    with pytest.raises(ExchangeOnlineEmulatorError, match="404"):
        exo_clean.update_mailboxes([{"Identity": one, "CustomAttribute3": "y"}, {"Identity": "nobody@x.example"}])
    with pytest.raises(ExchangeOnlineEmulatorError, match="unknown mailbox properties: Colour"):
        exo_clean.update_mailboxes([{"Identity": one, "CustomAttribute3": "y"}, {"Identity": other, "Colour": "red"}])
    upn = exo_clean.get_mailbox(one)["UserPrincipalName"]
    with pytest.raises(ExchangeOnlineEmulatorError, match="names a mailbox the batch already changes"):
        exo_clean.update_mailboxes(
            [{"Identity": one, "CustomAttribute3": "y"}, {"Identity": upn, "CustomAttribute4": "z"}]
        )
    assert exo_clean.get_mailbox(one) == before


# -- the sync's LDAP traffic, against ldap3's --------------------------------------------------------


def _connection(directory: SandboxDirectory) -> ldap3.Connection:
    return ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)


def test_the_paged_read_returns_what_ldap3_returns(directory):
    connection = _connection(directory)
    try:
        ours = list(ldap_wire.paged_search(connection, directory.base_dn, PEOPLE_FILTER, ATTRIBUTES, page_size=7))
        theirs = [
            (item["dn"], {name: values for name, values in item["raw_attributes"].items() if values})
            for item in connection.extend.standard.paged_search(
                directory.base_dn, PEOPLE_FILTER, attributes=ATTRIBUTES, paged_size=7, generator=True
            )
            if item["type"] == "searchResEntry"
        ]
    finally:
        connection.unbind()
    assert len(ours) == 20  # the session directory's generated users, over three pages
    assert ours == theirs  # in the same order too: it is the order the sync creates mailboxes in


@pytest.fixture
def scratch_users(directory) -> Iterator[list[str]]:
    """Two AD users of this test's own (the generated ones are other tests'), deleted afterwards."""
    connection = _connection(directory)
    dns = [f"CN=seed-scratch-{n},OU=Engineering,{directory.users_dn}" for n in range(2)]
    for dn in dns:
        assert connection.add(dn, ["top", "person", "organizationalPerson", "user"], {"sn": "x"}), connection.result
    yield dns
    for dn in dns:
        connection.delete(dn)
    connection.unbind()


def test_pipelined_modifies_answer_each_in_order_refusals_included(directory, scratch_users):
    first, second = scratch_users
    missing = f"CN=nobody,OU=Engineering,{directory.users_dn}"
    # More than a window's worth, so answers are collected while requests still go out.
    changes = [(first if n % 2 else second, "extensionAttribute9", f"v{n}") for n in range(ldap_wire.WINDOW * 2)]
    changes[5] = (missing, "extensionAttribute9", "v")
    changes[6] = (first, "extensionAttribute9", "x" * 1025)  # over AD's rangeUpper: constraintViolation
    connection = _connection(directory)
    try:
        answers: list = [None] * len(changes)
        ldap_wire.replace_many(connection, changes, answers)
        connection.search(first, "(objectClass=*)", ldap3.BASE, attributes=["extensionAttribute9"])
        last_of_first = connection.entries[0].extensionAttribute9.value
    finally:
        connection.unbind()
    results = [answer["result"] for answer in answers]
    assert results[5] == 32 and results[6] == 19  # noSuchObject, constraintViolation
    assert results[:5] + results[7:] == [0] * (len(changes) - 2)
    # The server may carry out pipelined requests in any order (RFC 4511 §4.1.1.1): the writeback sends one per user.
    assert last_of_first in {value for dn, _attribute, value in changes[7:] if dn == first}


def test_directory_ids_are_the_uuid5_of_the_object_guid():
    for _ in range(200):
        guid = os.urandom(16)
        name = str(uuid.UUID(bytes_le=guid))
        ids = directory_ids(guid)
        for key, namespace in (
            ("ExternalDirectoryObjectId", "0f3c9d1e-2a4b-4c6d-8e0f-1a2b3c4d5e6f"),
            ("Guid", "7d1e5f20-9a3b-4c8d-b1e2-f3a4b5c6d7e8"),
            ("ExchangeGuid", "c2a7e8f1-4b6d-4e9a-8c3f-5d7e9f1a2b3c"),
        ):
            assert ids[key] == str(uuid.uuid5(uuid.UUID(namespace), name))
