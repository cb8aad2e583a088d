"""The directory client against a real slapd with the AD-shaped schema: searches, lookups, minimal modifies,
escaping and error mapping. No mocks: what the client did is read back over a separate ldap3 connection.
"""

from __future__ import annotations

import datetime as dt
import inspect
import ipaddress
import itertools
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

from portal.dn import normalize_dn
from sandbox.directory import SandboxDirectory, find_tool, generate_users
from writeback.directory import (
    DirectoryClient,
    DirectoryConfig,
    DirectoryConflict,
    DirectoryError,
    DirectoryNotFound,
    DirectoryPermanent,
    DirectoryRetryable,
    equality_filter,
    escape_dn_value,
    ping,
    plan_modify,
)
from writeback.directory.batch import Item, read_many, write_many
from writeback.directory.errors import error_for_result

# ldap3 2.9.1 checks the certificate's host name with ssl.match_hostname, deprecated since Python 3.7 (it falls
# back to its own copy where the function is gone).
pytestmark = pytest.mark.filterwarnings("ignore:ssl.match_hostname\\(\\) is deprecated:DeprecationWarning")

USERS = 300
USER_CLASSES = ["top", "person", "organizationalPerson", "user"]
PRIMARY = "SMTP:ann.lee@corp.example.com"
ROUTING = "smtp:ann.lee@corp.mail.onmicrosoft.com"


def config_for(directory: SandboxDirectory, **overrides: Any) -> DirectoryConfig:
    values = {
        "url": directory.url,
        "bind_dn": directory.bind_dn,
        "password_file": str(directory.password_file),
        "base_dn": directory.base_dn,
        "timeout": 2.0,
    }
    return DirectoryConfig(**{**values, **overrides})


def raw_connection(directory: SandboxDirectory) -> ldap3.Connection:
    """A plain ldap3 connection of the test's own, to set up entries and read back what the client did."""
    server = ldap3.Server(directory.url, get_info=ldap3.SCHEMA)
    return ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True)


@pytest.fixture(scope="module")
def ad() -> Iterator[SandboxDirectory]:
    """A directory of this module's own: a few hundred users, and room to add and change entries freely."""
    with SandboxDirectory.start(users=USERS) as started:
        yield started


@pytest.fixture(scope="module")
def raw(ad: SandboxDirectory) -> Iterator[ldap3.Connection]:
    connection = raw_connection(ad)
    yield connection
    connection.unbind()


@pytest.fixture
def client(ad: SandboxDirectory) -> Iterator[DirectoryClient]:
    with DirectoryClient(config_for(ad)) as directory:
        yield directory


_scratch_numbers = itertools.count(1)


@pytest.fixture
def scratch(raw: ldap3.Connection, ad: SandboxDirectory, request: pytest.FixtureRequest) -> str:
    """An empty OU for this test, outside OU=Corp so the generated users' count stays exact."""
    # Plain characters only: the DN tests below put the hostile ones where they are the subject.
    dn = f"OU={next(_scratch_numbers)}-{re.sub(r'[^A-Za-z0-9_-]', '_', request.node.name)[:60]},{ad.base_dn}"
    assert raw.add(dn, ["top", "organizationalUnit"]), raw.result
    return dn


def add_user(raw: ldap3.Connection, parent: str, cn: str, **attributes: Any) -> tuple[str, uuid.UUID]:
    guid = attributes.pop("guid", None) or uuid.uuid4()
    dn = f"CN={escape_dn_value(cn)},{parent}"
    assert raw.add(dn, USER_CLASSES, {"sn": "Test", "objectGUID": guid.bytes_le, **attributes}), raw.result
    return dn, guid


def read_back(raw: ldap3.Connection, dn: str, *names: str) -> dict[str, list[str]]:
    """Attribute values as the server holds them (raw text), over the test's own connection."""
    assert raw.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[*names, "entryCSN"]), raw.result
    values = raw.response[0]["raw_attributes"]
    return {name: [v.decode("utf-8") for v in values.get(name, [])] for name in (*names, "entryCSN")}


# --- paged search -----------------------------------------------------------------------------------------------


def test_paged_search_is_a_generator_that_fetches_one_page_at_a_time(client, ad):
    results = client.paged_search(ad.users_dn, "(objectClass=user)", ["objectGUID"], page_size=50)
    assert inspect.isgenerator(results)
    assert client.requests["search"] == 0  # nothing is sent before the first entry is asked for

    seen = []
    for entry in results:
        seen.append(entry)
        # Entry n (1-based) arrives with page ceil(n / 50): the server sent pages of exactly the size asked.
        assert client.requests["search"] == (len(seen) + 49) // 50

    assert len(seen) == USERS
    assert client.requests["search"] == USERS // 50
    expected = {entry["objectGUID"] for entry in generate_users(USERS)}
    assert {entry["attributes"]["objectGUID"] for entry in seen} == expected  # raw bytes, as AD stores them
    assert len({normalize_dn(entry["dn"]) for entry in seen}) == USERS


def test_a_paged_search_left_unfinished_is_abandoned_on_the_server(client, ad):
    results = client.paged_search(ad.users_dn, "(objectClass=user)", ["cn"], page_size=20)
    assert len([next(results) for _ in range(25)]) == 25
    assert client.requests["search"] == 2
    results.close()  # or garbage collection: the server is told the search is over (page size 0 + cookie)
    assert client.requests["search"] == 3
    assert sum(1 for _ in client.paged_search(ad.users_dn, "(objectClass=user)", page_size=100)) == USERS


def test_paged_search_with_the_default_page_size_needs_one_request_for_a_few_hundred_users(client, ad):
    assert sum(1 for _ in client.paged_search(ad.users_dn, "(objectClass=user)")) == USERS
    assert client.requests["search"] == 1 and client.requests["bind"] == 1


def test_paged_search_of_a_missing_base_is_not_found(client, ad):
    with pytest.raises(DirectoryNotFound, match="noSuchObject"):
        list(client.paged_search(f"OU=Nowhere,{ad.base_dn}", "(objectClass=*)"))


def test_client_built_from_settings_reads_the_session_directory(directory):
    user = next(generate_users(1))
    with DirectoryClient(DirectoryConfig.from_settings()) as client:
        entry = client.find_by_guid(uuid.UUID(bytes_le=user["objectGUID"]))
    assert normalize_dn(entry["dn"]) == normalize_dn(user["dn"])


# --- lookups ------------------------------------------------------------------------------------------------------


def test_every_generated_user_is_found_by_its_object_guid(client):
    for user in generate_users(25):
        guid = uuid.UUID(bytes_le=user["objectGUID"])
        entry = client.find_by_guid(guid)
        assert entry is not None
        assert normalize_dn(entry["dn"]) == normalize_dn(user["dn"])  # the server answers cn=..., not CN=...
        assert entry["attributes"]["objectGUID"] == user["objectGUID"]
        assert entry["attributes"]["userPrincipalName"] == user["userPrincipalName"]


def test_an_unknown_guid_is_none(client):
    assert client.find_by_guid(uuid.uuid4()) is None


def test_guid_bytes_that_are_filter_syntax_are_escaped(client, raw, scratch):
    # Little-endian bytes containing "*", "(", ")", "\" and NUL: unescaped they would break or widen the filter.
    hostile = uuid.UUID(bytes_le=b"*()\\\x00*()\\\x00\x2a\x28\x29\x5c\x00\xff")
    dn, _ = add_user(raw, scratch, "hostile guid", guid=hostile)
    entry = client.find_by_guid(hostile)
    assert entry is not None and normalize_dn(entry["dn"]) == normalize_dn(dn)
    assert client.find_by_guid(uuid.UUID(bytes_le=b"*" * 16)) is None


@pytest.mark.parametrize(
    "guid",
    [
        "34395c6d-935f-4be5-b240-0f4cb6612651",  # bytes 6d 5c 39 34: a backslash before the characters "94"
        "5c41425c-4344-5c45-4647-5c3030303030",  # backslashes before "AB", "CD", "EF" and "00"
    ],
)
def test_guid_bytes_that_read_as_an_escape_sequence_are_found(client, raw, scratch, guid):
    guid = uuid.UUID(guid)
    dn, _ = add_user(raw, scratch, f"escape {guid.hex[:8]}", guid=guid, **{"mS-DS-ConsistencyGuid": guid.bytes_le})
    assert normalize_dn(client.find_by_guid(guid)["dn"]) == normalize_dn(dn)
    assert normalize_dn(client.find_by_consistency_guid(guid)["dn"]) == normalize_dn(dn)
    assert client.read_exchange_attributes(guid) is not None


def test_a_batch_read_finds_users_whose_guid_bytes_are_valid_text(client, raw, scratch):
    """The batch read asks ldap3 not to format values by the schema: a GUID whose 16 bytes happen to decode as UTF-8
    would then come back as text in ``attributes``; the read takes the GUID from the raw bytes, so it is found."""
    texty = uuid.UUID(bytes_le=b"ABCDEFGHIJKLMNOP")
    binary = uuid.UUID(bytes_le=b"\xff\xfe" + bytes(range(14)))
    dn_texty, _ = add_user(raw, scratch, "texty guid", guid=texty, extensionAttribute4="four")
    dn_binary, _ = add_user(raw, scratch, "binary guid", guid=binary)
    found = read_many(client, [texty, binary, uuid.uuid4()])
    assert set(found) == {texty, binary}
    assert normalize_dn(found[texty][0]) == normalize_dn(dn_texty)
    assert normalize_dn(found[binary][0]) == normalize_dn(dn_binary)
    assert found[texty][1]["extensionAttribute4"] == "four"


def test_an_unchecked_modify_still_meets_the_directorys_own_refusal(client, raw, scratch):
    """Without ldap3's schema check the directory is what refuses a name it does not know, with a permanent error
    naming the entry; a known name is written as with the check."""
    dn, _ = add_user(raw, scratch, "unchecked")
    client.modify(dn, {"extensionAttribute5": [(MODIFY_REPLACE, ["five"])]}, checked=False)
    assert read_back(raw, dn, "extensionAttribute5")["extensionAttribute5"] == ["five"]
    with pytest.raises(DirectoryPermanent) as caught:
        client.modify(dn, {"noSuchAttributeAnywhere": [(MODIFY_REPLACE, ["x"])]}, checked=False)
    assert caught.value.target == dn
    assert client._connection is None or client._connection.check_names  # the check is back for the next request


def test_consistency_guid_lookup_by_guid_or_raw_bytes(client, raw, scratch):
    generated = next(user for user in generate_users(USERS) if "mS-DS-ConsistencyGuid" in user)
    anchor = uuid.UUID(bytes_le=generated["mS-DS-ConsistencyGuid"])
    assert normalize_dn(client.find_by_consistency_guid(anchor)["dn"]) == normalize_dn(generated["dn"])

    # After a forest migration the anchor is the old forest's GUID, not this entry's objectGUID.
    old_forest = uuid.uuid4()
    dn, guid = add_user(raw, scratch, "migrated", **{"mS-DS-ConsistencyGuid": old_forest.bytes_le})
    found = client.find_by_consistency_guid(old_forest.bytes_le)
    assert normalize_dn(found["dn"]) == normalize_dn(dn)
    assert found["attributes"]["mS-DS-ConsistencyGuid"] == old_forest.bytes_le
    assert client.find_by_guid(old_forest) is None
    assert client.find_by_consistency_guid(guid) is None


def test_an_anchor_held_by_two_entries_is_refused(client, raw, scratch):
    # AD does not enforce uniqueness of mS-DS-ConsistencyGuid; a copied value must not pick one entry at random.
    anchor = uuid.uuid4()
    add_user(raw, scratch, "first", **{"mS-DS-ConsistencyGuid": anchor.bytes_le})
    add_user(raw, scratch, "second", **{"mS-DS-ConsistencyGuid": anchor.bytes_le})
    with pytest.raises(DirectoryPermanent, match="matches 2 entries"):
        client.find_by_consistency_guid(anchor)


def test_exchange_attributes_come_back_in_python_types(client, raw, scratch):
    dn, guid = add_user(
        raw, scratch, "typed",
        proxyAddresses=[PRIMARY], mail="ann.lee@corp.example.com", msExchHideFromAddressLists="TRUE",
        msExchRecipientTypeDetails="34359738368", msExchRecipientDisplayType="-2147483642",
        msExchExtensionCustomAttribute2=["b", "a"], extensionAttribute7="Seven",
    )  # fmt: skip
    values = client.read_exchange_attributes(guid)
    assert values["proxyAddresses"] == [PRIMARY]
    assert values["mail"] == "ann.lee@corp.example.com"  # single-valued in AD, whatever slapd's schema says
    assert values["msExchHideFromAddressLists"] is True
    assert values["msExchRecipientTypeDetails"] == 2**35
    assert values["msExchRecipientDisplayType"] == -2147483642
    assert sorted(values["msExchExtensionCustomAttribute2"]) == ["a", "b"]
    assert values["extensionAttribute7"] == "Seven"
    assert values["extensionAttribute1"] is None and values["targetAddress"] is None
    assert values["msExchExtensionCustomAttribute1"] == []
    assert values["msExchRemoteRecipientType"] is None


def test_reading_an_unknown_guid_is_not_found(client):
    missing = uuid.uuid4()
    with pytest.raises(DirectoryNotFound, match=str(missing)):
        client.read_exchange_attributes(missing)


# --- minimal modifies ---------------------------------------------------------------------------------------------

# (name, what the entry holds, what we want, the exact changes, what the server holds afterwards for each attribute)
CASES = [
    (
        "add one proxy address",
        {"proxyAddresses": [PRIMARY, ROUTING]},
        {"proxyAddresses": [PRIMARY, ROUTING, "smtp:ann@corp.example.com"]},
        {"proxyAddresses": [(MODIFY_ADD, ["smtp:ann@corp.example.com"])]},
        {"proxyAddresses": [PRIMARY, ROUTING, "smtp:ann@corp.example.com"]},
    ),
    (
        "remove one proxy address",
        {"proxyAddresses": [PRIMARY, ROUTING, "smtp:old@example.org"]},
        {"proxyAddresses": [PRIMARY, ROUTING]},
        {"proxyAddresses": [(MODIFY_DELETE, ["smtp:old@example.org"])]},
        {"proxyAddresses": [PRIMARY, ROUTING]},
    ),
    (
        "change the primary address",
        {"proxyAddresses": [PRIMARY, "smtp:ann@corp.example.com", ROUTING]},
        {"proxyAddresses": ["smtp:ann.lee@corp.example.com", "SMTP:ann@corp.example.com", ROUTING]},
        {
            "proxyAddresses": [
                (MODIFY_DELETE, [PRIMARY, "smtp:ann@corp.example.com"]),
                (MODIFY_ADD, ["smtp:ann.lee@corp.example.com", "SMTP:ann@corp.example.com"]),
            ]
        },
        {"proxyAddresses": ["smtp:ann.lee@corp.example.com", "SMTP:ann@corp.example.com", ROUTING]},
    ),
    (
        "change only the letter case of an address",
        {"proxyAddresses": [PRIMARY, "smtp:Ann.Lee@Example.org"]},
        {"proxyAddresses": ["SMTP:Ann.Lee@Corp.Example.com", "smtp:ann.lee@example.org"]},
        {},
        {"proxyAddresses": [PRIMARY, "smtp:Ann.Lee@Example.org"]},
    ),
    (
        "set a custom attribute",
        {},
        {"extensionAttribute1": "CC-1234"},
        {"extensionAttribute1": [(MODIFY_REPLACE, ["CC-1234"])]},
        {"extensionAttribute1": ["CC-1234"]},
    ),
    (
        "replace a custom attribute",
        {"extensionAttribute1": "CC-1234"},
        {"extensionAttribute1": "CC-9999"},
        {"extensionAttribute1": [(MODIFY_REPLACE, ["CC-9999"])]},
        {"extensionAttribute1": ["CC-9999"]},
    ),
    (
        "clear a custom attribute",
        {"extensionAttribute15": "gone soon"},
        {"extensionAttribute15": None},
        {"extensionAttribute15": [(MODIFY_DELETE, [])]},
        {"extensionAttribute15": []},
    ),
    (
        "add and remove extension custom attribute values",
        {"msExchExtensionCustomAttribute1": ["project:sales", "region:emea"]},
        {"msExchExtensionCustomAttribute1": ["region:emea", "cost:42"]},
        {"msExchExtensionCustomAttribute1": [(MODIFY_DELETE, ["project:sales"]), (MODIFY_ADD, ["cost:42"])]},
        {"msExchExtensionCustomAttribute1": ["region:emea", "cost:42"]},
    ),
    (
        "empty the extension custom attribute value by value",
        {"msExchExtensionCustomAttribute3": ["x", "y"]},
        {"msExchExtensionCustomAttribute3": []},
        {"msExchExtensionCustomAttribute3": [(MODIFY_DELETE, ["x", "y"])]},
        {"msExchExtensionCustomAttribute3": []},
    ),
    (
        "hide from address lists",
        {},
        {"msExchHideFromAddressLists": True},
        {"msExchHideFromAddressLists": [(MODIFY_REPLACE, [True])]},
        {"msExchHideFromAddressLists": ["TRUE"]},
    ),
    (
        "unhide",
        {"msExchHideFromAddressLists": "TRUE"},
        {"msExchHideFromAddressLists": False},
        {"msExchHideFromAddressLists": [(MODIFY_REPLACE, [False])]},
        {"msExchHideFromAddressLists": ["FALSE"]},
    ),
    (
        "not hidden is already not hidden when the flag is absent",
        {},
        {"msExchHideFromAddressLists": False},
        {},
        {"msExchHideFromAddressLists": []},
    ),
    (
        "replace a recipient type beyond 32 bits",
        {"msExchRecipientTypeDetails": "2147483648"},
        {"msExchRecipientTypeDetails": 34359738368},
        {"msExchRecipientTypeDetails": [(MODIFY_REPLACE, [34359738368])]},
        {"msExchRecipientTypeDetails": ["34359738368"]},
    ),
]


@pytest.mark.parametrize(("initial", "desired", "expected", "after"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_minimal_modify(client, raw, scratch, initial, desired, expected, after):
    dn, guid = add_user(raw, scratch, "ann", **initial)
    csn_before = read_back(raw, dn)["entryCSN"]
    requests_before = client.requests["modify"]

    observed = client.read_exchange_attributes(guid)
    changes = plan_modify(observed, desired)
    assert changes == expected
    client.modify(dn, changes)

    held = read_back(raw, dn, *after)
    for name, values in after.items():
        assert sorted(held[name]) == sorted(values), name
    assert client.requests["modify"] - requests_before == (1 if expected else 0)
    assert (held["entryCSN"] == csn_before) == (not expected)  # nothing written at all when nothing differs


def test_a_primary_change_is_one_atomic_modify_through_apply_desired(client, raw, scratch):
    dn, guid = add_user(raw, scratch, "ann", proxyAddresses=[PRIMARY, "smtp:ann@corp.example.com"])
    observed, changes = client.apply_desired(
        guid, {"proxyAddresses": ["smtp:ann.lee@corp.example.com", "SMTP:ann@corp.example.com"]}
    )
    assert observed["proxyAddresses"] == [PRIMARY, "smtp:ann@corp.example.com"]
    assert [op for op, _ in changes["proxyAddresses"]] == [MODIFY_DELETE, MODIFY_ADD]
    assert client.requests["modify"] == 1
    assert sorted(read_back(raw, dn, "proxyAddresses")["proxyAddresses"]) == [
        "SMTP:ann@corp.example.com",
        "smtp:ann.lee@corp.example.com",
    ]


def test_apply_desired_is_idempotent(client, raw, scratch):
    dn, guid = add_user(raw, scratch, "ann", proxyAddresses=[PRIMARY], extensionAttribute2="Employee")
    desired = {
        "proxyAddresses": [PRIMARY, "smtp:ann@corp.example.com"],
        "extensionAttribute2": None,
        "extensionAttribute3": "Retain: 7y",
        "msExchHideFromAddressLists": True,
    }
    _, first = client.apply_desired(guid, desired)
    assert set(first) == {"proxyAddresses", "extensionAttribute2", "extensionAttribute3", "msExchHideFromAddressLists"}
    csn = read_back(raw, dn)["entryCSN"]
    modifies = client.requests["modify"]

    observed, second = client.apply_desired(guid, desired)
    assert second == {}
    assert client.requests["modify"] == modifies  # read before write: nothing sent
    assert read_back(raw, dn)["entryCSN"] == csn
    assert observed["extensionAttribute3"] == "Retain: 7y" and observed["extensionAttribute2"] is None


def test_apply_desired_leaves_attributes_it_was_not_asked_about_alone(client, raw, scratch):
    dn, guid = add_user(raw, scratch, "ann", extensionAttribute4="keep me", proxyAddresses=[PRIMARY])
    client.apply_desired(guid, {"extensionAttribute5": "new"})
    held = read_back(raw, dn, "extensionAttribute4", "proxyAddresses")
    assert held["extensionAttribute4"] == ["keep me"] and held["proxyAddresses"] == [PRIMARY]


def test_a_value_added_by_someone_else_meanwhile_survives(client, raw, scratch):
    dn, guid = add_user(raw, scratch, "ann", proxyAddresses=[PRIMARY])
    observed = client.read_exchange_attributes(guid)
    # Someone edits AD directly between our read and our write.
    assert raw.modify(dn, {"proxyAddresses": [(MODIFY_ADD, ["smtp:theirs@corp.example.com"])]}), raw.result
    client.modify(dn, plan_modify(observed, {"proxyAddresses": [PRIMARY, "smtp:ours@corp.example.com"]}))
    assert sorted(read_back(raw, dn, "proxyAddresses")["proxyAddresses"]) == [
        PRIMARY,
        "smtp:ours@corp.example.com",
        "smtp:theirs@corp.example.com",
    ]


def test_a_stale_plan_conflicts_instead_of_flattening(client, raw, scratch):
    dn, guid = add_user(raw, scratch, "ann", proxyAddresses=[PRIMARY, "smtp:old@example.org"])
    stale = plan_modify(client.read_exchange_attributes(guid), {"proxyAddresses": [PRIMARY]})
    assert raw.modify(dn, {"proxyAddresses": [(MODIFY_DELETE, ["smtp:old@example.org"])]}), raw.result
    with pytest.raises(DirectoryConflict, match="noSuchAttribute"):
        client.modify(dn, stale)


class LostResponseClient(DirectoryClient):
    """Plays a modify whose first attempt reached the server but whose answer was lost: the same change is
    already in AD when the client sends it (again)."""

    def __init__(self, config: DirectoryConfig, rival: ldap3.Connection):
        super().__init__(config)
        self.rival = rival

    def modify(self, dn, changes):
        if self.requests["modify"] == 0:
            assert self.rival.modify(dn, changes), self.rival.result
        super().modify(dn, changes)


def test_apply_desired_after_a_lost_response_re_reads_and_succeeds(ad, raw, scratch):
    dn, guid = add_user(raw, scratch, "ann", proxyAddresses=[PRIMARY])
    desired = {"proxyAddresses": [PRIMARY, "smtp:ann@corp.example.com"]}
    with LostResponseClient(config_for(ad), raw) as client:
        observed, changes = client.apply_desired(guid, desired)
        assert client.requests["modify"] == 1  # the resent add met attributeOrValueExists, then nothing was left
    assert observed["proxyAddresses"] == [PRIMARY]
    assert changes == {"proxyAddresses": [(MODIFY_ADD, ["smtp:ann@corp.example.com"])]}
    assert sorted(read_back(raw, dn, "proxyAddresses")["proxyAddresses"]) == [PRIMARY, "smtp:ann@corp.example.com"]


def test_plan_modify_never_replaces_a_multi_valued_attribute():
    observed = {"proxyAddresses": [PRIMARY, ROUTING], "msExchExtensionCustomAttribute1": ["a", "b"]}
    desired = {"proxyAddresses": ["SMTP:new@corp.example.com"], "msExchExtensionCustomAttribute1": ["c"]}
    changes = plan_modify(observed, desired)
    assert changes == {
        "proxyAddresses": [(MODIFY_DELETE, [PRIMARY, ROUTING]), (MODIFY_ADD, ["SMTP:new@corp.example.com"])],
        "msExchExtensionCustomAttribute1": [(MODIFY_DELETE, ["a", "b"]), (MODIFY_ADD, ["c"])],
    }


def test_plan_modify_matches_attribute_names_in_any_case_and_answers_in_ads_spelling():
    assert plan_modify({"EXTENSIONATTRIBUTE9": "a"}, {"extensionattribute9": "b"}) == {
        "extensionAttribute9": [(MODIFY_REPLACE, ["b"])]
    }


@pytest.mark.parametrize(
    ("desired", "error"),
    [
        ({"proxyAddresses": ["SMTP:a@corp.example.com", "smtp:A@corp.example.com"]}, ValueError),
        ({"department": "Sales"}, ValueError),  # identity attributes are not the writeback's to plan
        ({"proxyAddresses": "SMTP:a@corp.example.com"}, TypeError),  # a string is not a list of addresses
        ({"msExchHideFromAddressLists": "TRUE"}, TypeError),
        ({"msExchRecipientTypeDetails": True}, TypeError),
        ({"extensionAttribute1": 7}, TypeError),
    ],
)
def test_plan_modify_refuses_contradictory_or_mistyped_wishes(desired, error):
    with pytest.raises(error):
        plan_modify({}, desired)


# --- escaping -----------------------------------------------------------------------------------------------------

HOSTILE_VALUES = ["*)(uid=*", "*", "\\", "a\0b", "(cn=*)", "Müller Ünïcødé 日本"]


def test_filter_values_are_escaped(client, raw, scratch):
    held = {}
    for number, value in enumerate(HOSTILE_VALUES):
        dn, _ = add_user(raw, scratch, f"value {number}", extensionAttribute1=value)
        held[value] = normalize_dn(dn)
    add_user(raw, scratch, "bystander", extensionAttribute1="plain", sAMAccountName="bystander")

    for value, dn in held.items():
        found = client.find_by_attribute("extensionAttribute1", value)
        assert [normalize_dn(entry["dn"]) for entry in found] == [dn], value
    assert client.find_by_attribute("sAMAccountName", "*)(sAMAccountName=*") == []
    assert equality_filter("cn", "*)(uid=*") == r"(cn=\2a\29\28uid=\2a)"
    assert equality_filter("objectGUID", b"\x00*") == r"(objectGUID=\00\2a)"


def test_an_attribute_name_cannot_smuggle_a_filter():
    with pytest.raises(ValueError):
        equality_filter("cn=*)(objectClass", "x")


DN_VALUES = [',+"\\<>;=', "#leading hash", " spaces around ", "x=y,CN=inject", "a\0b", "Müller O'Brien 日本", "*)(cn=*"]


@pytest.mark.parametrize("cn", DN_VALUES)
def test_dn_values_are_escaped(client, raw, scratch, cn):
    dn, guid = add_user(raw, scratch, cn)
    # One entry, named literally, directly below the OU: nothing was injected into the DN's structure.
    assert raw.search(scratch, "(objectClass=user)", ldap3.LEVEL, attributes=["cn"]), raw.result
    assert [entry["attributes"]["cn"] for entry in raw.response] == [[cn]]

    entry = client.find_by_guid(guid)
    assert normalize_dn(entry["dn"]) == normalize_dn(dn)  # the server re-escapes (\2C, \3D...) and lower-cases
    client.apply_desired(guid, {"extensionAttribute6": cn})  # writes through the DN the server returned
    assert read_back(raw, dn, "extensionAttribute6")["extensionAttribute6"] == [cn]


def test_a_server_dn_with_a_hash_inside_a_value_can_be_normalised(client, raw, scratch):
    dn, guid = add_user(raw, scratch, "a#b")
    assert normalize_dn(client.find_by_guid(guid)["dn"]) == normalize_dn(dn)


def test_escape_dn_value_follows_rfc_4514():
    assert escape_dn_value("a\0b") == "a\\00b"
    assert escape_dn_value("#x y#") == "\\#x y\\#"
    assert escape_dn_value(" x ") == "\\20x\\20"
    assert escape_dn_value('a,b+c"d\\e<f>g;h=i') == 'a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i'
    with pytest.raises(ValueError):
        escape_dn_value("")


# --- errors -------------------------------------------------------------------------------------------------------


def test_a_value_over_ads_limit_is_a_permanent_constraint_violation(client, raw, scratch):
    dn, guid = add_user(raw, scratch, "ann")
    with pytest.raises(DirectoryPermanent) as caught:
        client.apply_desired(guid, {"extensionAttribute1": "x" * 1025})
    error = caught.value
    assert not error.retryable and not isinstance(error, DirectoryConflict)
    assert error.result_code == 19 and error.result_name == "constraintViolation"
    assert error.diagnostic == "modify breaks constraint on extensionAttribute1"
    assert "constraintViolation (19): modify breaks constraint on extensionAttribute1" in str(error)
    assert normalize_dn(error.target) == normalize_dn(dn)
    assert read_back(raw, dn, "extensionAttribute1")["extensionAttribute1"] == []


def test_modifying_a_missing_entry_is_not_found(client, ad):
    with pytest.raises(DirectoryNotFound) as caught:
        client.modify(f"CN=Nobody,{ad.users_dn}", {"extensionAttribute1": [(MODIFY_REPLACE, ["x"])]})
    assert caught.value.result_code == 32 and "noSuchObject (32)" in str(caught.value)
    assert isinstance(caught.value, DirectoryPermanent)


def test_an_attribute_the_schema_lacks_is_permanent(client, raw, scratch):
    dn, _ = add_user(raw, scratch, "ann")
    with pytest.raises(DirectoryPermanent, match="fooBar"):
        client.modify(dn, {"fooBar": [(MODIFY_REPLACE, ["x"])]})


def test_a_wrong_password_is_permanent_and_never_shown(ad, tmp_path):
    secret = "Wrong-Horse-Battery-Staple-4711"
    password_file = tmp_path / "password"
    password_file.write_text(secret + "\n")
    client = DirectoryClient(config_for(ad, password_file=str(password_file)))
    with pytest.raises(DirectoryPermanent) as caught:
        client.find_by_guid(uuid.uuid4())
    error = caught.value
    assert error.result_code == 49 and "invalidCredentials" in str(error) and ad.bind_dn in str(error)
    for text in (str(error), repr(error), repr(error.args), repr(client), error.diagnostic):
        assert secret not in text
    assert error.__cause__ is None and error.__context__ is None


def test_a_missing_password_file_is_permanent(ad, tmp_path):
    with pytest.raises(DirectoryPermanent, match="Cannot read the LDAP password file"):
        DirectoryClient(config_for(ad, password_file=str(tmp_path / "absent"))).change_mark()


def test_an_unreachable_directory_is_retryable(ad):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(DirectoryRetryable, match="unreachable"):
        DirectoryClient(config_for(ad, url=f"ldap://127.0.0.1:{closed_port}")).find_by_guid(uuid.uuid4())


@pytest.mark.parametrize(
    ("code", "name", "kind"),
    [
        (3, "timeLimitExceeded", DirectoryRetryable),
        (51, "busy", DirectoryRetryable),
        (52, "unavailable", DirectoryRetryable),
        (16, "noSuchAttribute", DirectoryConflict),
        (20, "attributeOrValueExists", DirectoryConflict),
        (17, "undefinedAttributeType", DirectoryPermanent),
        (19, "constraintViolation", DirectoryPermanent),
        (21, "invalidAttributeSyntax", DirectoryPermanent),
        (32, "noSuchObject", DirectoryNotFound),
        (50, "insufficientAccessRights", DirectoryPermanent),
        (53, "unwillingToPerform", DirectoryPermanent),
        (65, "objectClassViolation", DirectoryPermanent),
    ],
)
def test_result_codes_map_to_retryable_or_permanent(code, name, kind):
    error = error_for_result(
        {"result": code, "description": name, "message": "00002077: SvcErr: DSID-03152E29"},
        operation="modify",
        target="CN=x,DC=corp",
    )
    assert type(error) is kind
    assert str(error) == f"modify CN=x,DC=corp failed: {name} ({code}): 00002077: SvcErr: DSID-03152E29"
    assert error.retryable is (kind is DirectoryRetryable)


# --- connection loss and reconnect --------------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[tuple[SandboxDirectory, Path]]:
    workdir = tmp_path / "slapd"
    instance = SandboxDirectory.start(users=40, workdir=workdir)
    yield instance, workdir
    instance.stop()


def test_stopping_the_directory_mid_test_is_retryable_then_a_restart_is_picked_up(restartable):
    first, workdir = restartable
    guid = uuid.UUID(bytes_le=next(generate_users(1))["objectGUID"])
    client = DirectoryClient(config_for(first))
    assert client.find_by_guid(guid) is not None

    first.stop()
    with pytest.raises(DirectoryRetryable) as caught:
        client.find_by_guid(guid)
    assert caught.value.result_code is None and first.url in str(caught.value)

    # Same port, new process, new password in the same password file: the same client carries on.
    second = SandboxDirectory.start(users=40, workdir=workdir, port=first.port)
    try:
        assert client.find_by_guid(guid) is not None
        assert client.requests["bind"] == 2
        assert client.apply_desired(guid, {"extensionAttribute9": "after restart"})[1]
    finally:
        second.stop()
        client.close()


def test_a_connection_dropped_by_the_server_is_reopened_transparently(restartable):
    first, workdir = restartable
    guid = uuid.UUID(bytes_le=next(generate_users(1))["objectGUID"])
    client = DirectoryClient(config_for(first))
    assert client.find_by_guid(guid) is not None
    first.stop()
    second = SandboxDirectory.start(users=40, workdir=workdir, port=first.port)
    try:
        # The old socket is dead; the client finds out on this request and resends it on a new connection.
        entry = client.find_by_guid(guid)
        assert entry is not None and client.requests["bind"] == 2
    finally:
        second.stop()
        client.close()


def test_a_paged_search_interrupted_by_a_stopped_directory_is_retryable(restartable):
    directory, _ = restartable
    client = DirectoryClient(config_for(directory))
    results = client.paged_search(directory.users_dn, "(objectClass=user)", ["cn"], page_size=10)
    first_page = [next(results) for _ in range(10)]
    assert len(first_page) == 10
    directory.stop()
    with pytest.raises(DirectoryRetryable):
        list(results)


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(client):
    guid = uuid.UUID(bytes_le=next(generate_users(1))["objectGUID"])
    assert client.find_by_guid(guid) is not None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child, as in RQ's work horse: must never touch (or unbind) the inherited socket
        try:
            found = client.find_by_guid(guid) is not None and client.requests["bind"] == 2
            client.close()  # as a job does when it ends: unbinds the child's connection, not the parent's
            os.write(write_end, b"ok" if found else b"no")
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 2) == b"ok"
    os.waitpid(pid, 0)
    os.close(read_end)
    assert client.find_by_guid(guid) is not None
    assert client.requests["bind"] == 1  # the parent's connection survived the child


# --- change tracking and the health probe -------------------------------------------------------------------------


def test_changes_since_a_mark_are_found(client, raw, ad):
    mark = client.change_mark()
    assert mark
    user = list(generate_users(3))[2]
    guid = uuid.UUID(bytes_le=user["objectGUID"])
    client.apply_desired(guid, {"extensionAttribute11": f"changed after {mark}"})
    changed = list(client.paged_search(ad.users_dn, client.changed_since_filter("(objectClass=user)", mark), ["cn"]))
    assert [normalize_dn(entry["dn"]) for entry in changed] == [normalize_dn(user["dn"])]
    assert client.change_mark() > mark


def test_ping_reads_the_base_dn_and_names_what_is_wrong(ad):
    ping(config_for(ad))
    with pytest.raises(DirectoryError, match="noSuchObject"):
        ping(config_for(ad, base_dn="DC=elsewhere,DC=example"))


# --- TLS: LDAPS and StartTLS against a slapd that refuses anything unencrypted ----------------------------------


def _certificate(subject: str, issuer_key, issuer_name, *, ca: bool, names: tuple[str, ...] = ()):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(n)) for n in names]), critical=False
        )
    certificate = builder.sign(issuer_key or key, hashes.SHA256())
    return key, certificate


def _pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tls_ad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The sandbox's database and slapd.conf, served by a slapd of our own on ldap:// (StartTLS) and ldaps://,
    with a certificate for 127.0.0.1 from a private CA, and ``security tls=1``: nothing works unencrypted."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca = _certificate("SOA test CA", None, None, ca=True)
    _, other_ca = _certificate("Some other CA", None, None, ca=True)
    server_key, server_cert = _certificate("127.0.0.1", ca_key, ca.subject, ca=False, names=("127.0.0.1",))
    (folder / "ca.pem").write_bytes(_pem(ca))
    (folder / "other-ca.pem").write_bytes(_pem(other_ca))
    (folder / "server.pem").write_bytes(_pem(server_cert))
    (folder / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    workdir = folder / "slapd"
    template = SandboxDirectory.start(users=5, workdir=workdir)
    template.stop()  # a workdir we gave is kept: its database, slapd.conf and password file serve below
    tls_lines = (
        f'TLSCACertificateFile "{folder / "ca.pem"}"\n'
        f'TLSCertificateFile "{folder / "server.pem"}"\n'
        f'TLSCertificateKeyFile "{folder / "server.key"}"\n'
        "security tls=1\n"
    )
    conf = (workdir / "slapd.conf").read_text().replace("database mdb", tls_lines + "database mdb", 1)
    (workdir / "tls.conf").write_text(conf)
    plain_port, tls_port = _free_port(), _free_port()
    listen = f"ldap://127.0.0.1:{plain_port}/ ldaps://127.0.0.1:{tls_port}/"
    process = subprocess.Popen(
        [find_tool("slapd"), "-f", str(workdir / "tls.conf"), "-h", listen, "-d", "none"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=0.1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "slapd with TLS did not start"
                time.sleep(0.01)
        yield {
            "plain": f"ldap://127.0.0.1:{plain_port}",
            "ldaps": f"ldaps://127.0.0.1:{tls_port}",
            "ca_file": str(folder / "ca.pem"),
            "other_ca_file": str(folder / "other-ca.pem"),
            "password_file": str(workdir / "password"),
            "base_dn": template.base_dn,
            "bind_dn": template.bind_dn,
        }
    finally:
        process.terminate()
        process.wait(timeout=10)


def tls_config(tls_ad: dict[str, Any], url: str, ca_file: str = "") -> DirectoryConfig:
    return DirectoryConfig(
        url=url, bind_dn=tls_ad["bind_dn"], password_file=tls_ad["password_file"], base_dn=tls_ad["base_dn"],
        ca_file=ca_file, timeout=2.0,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["ldaps", "plain"], ids=["LDAPS", "StartTLS"])
def test_tls_with_the_configured_ca_file(tls_ad, kind):
    guid = uuid.UUID(bytes_le=next(generate_users(1))["objectGUID"])
    with DirectoryClient(tls_config(tls_ad, tls_ad[kind], tls_ad["ca_file"])) as client:
        assert client.find_by_guid(guid) is not None
        assert client.apply_desired(guid, {"extensionAttribute12": f"over {kind}"})[1]
    ping(tls_config(tls_ad, tls_ad[kind], tls_ad["ca_file"]))


@pytest.mark.parametrize("kind", ["ldaps", "plain"], ids=["LDAPS", "StartTLS"])
def test_a_batch_writes_over_tls(tls_ad, kind):
    # write_many's search and modifies go on the socket themselves (writeback.directory.pipeline): TLS included.
    guids = [uuid.UUID(bytes_le=user["objectGUID"]) for user in generate_users(3)]
    items = [Item(guid, lambda _observed, n=n: {"extensionAttribute13": f"batch over {kind} {n}"})
             for n, guid in enumerate(guids)]  # fmt: skip
    with DirectoryClient(tls_config(tls_ad, tls_ad[kind], tls_ad["ca_file"])) as client:
        outcomes = write_many(client, items)
        assert [outcome.error for outcome in outcomes] == [None] * 3
        assert [outcome.written.read_back["extensionAttribute13"] for outcome in outcomes] == [
            f"batch over {kind} {n}" for n in range(3)
        ]
        assert client.requests["modify"] == 3 and client.requests["search"] == 2


def test_the_tls_server_refuses_a_plain_bind(tls_ad):
    # Proves the StartTLS case above really was encrypted: this server answers nothing in the clear.
    with pytest.raises(DirectoryPermanent, match="confidentialityRequired"):
        ping(tls_config(tls_ad, tls_ad["plain"]))


@pytest.mark.parametrize(
    ("kind", "ca", "host"),
    [
        ("ldaps", "other_ca_file", "127.0.0.1"),  # certificate from a CA we do not trust
        ("ldaps", "", "127.0.0.1"),  # no CA file: the system store does not know the private CA either
        ("plain", "other_ca_file", "127.0.0.1"),
        ("plain", "ca_file", "localhost"),  # trusted CA, but the certificate does not name this host
    ],
)
def test_an_untrusted_certificate_is_a_permanent_error(tls_ad, kind, ca, host):
    url = tls_ad[kind].replace("127.0.0.1", host)
    with pytest.raises(DirectoryPermanent) as caught:
        DirectoryClient(tls_config(tls_ad, url, tls_ad[ca] if ca else "")).find_by_guid(uuid.uuid4())
    assert not caught.value.retryable
    assert "certificate" in str(caught.value).lower()


def test_the_server_identity_is_the_root_dses_ds_service_name(client, ad):
    """AD's root DSE dsServiceName names the answering DC (MS-ADTS 3.1.1.3.2.3); the client records it with each
    change mark. The sandbox has no NTDS Settings objects, so no invocationId is added to it."""
    assert client.server_identity() == ad.server_dn
    dse = client.root_dse()
    assert dse["dsservicename"] == [ad.server_dn] and dse["namingcontexts"]
