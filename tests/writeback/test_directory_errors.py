"""Directory errors a wave member must fail on cleanly: an AD entry whose proxyAddresses contradict themselves, and
AD's attributeOrValueExists with extended error 0000200D. The first against a real slapd, through the revert's copy
into AD (writeback.wave_revert.copy_cloud_to_ad, which the wave runner calls before flipping a mailbox back)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import ldap3
import pytest

from portal.dn import normalize_dn
from sandbox.directory import SandboxDirectory
from writeback.directory import DirectoryClient, DirectoryConfig, DirectoryError, DirectoryInconsistentEntry
from writeback.directory.errors import DirectoryConflict, DirectoryPermanent, DirectorySingleValued, error_for_result
from writeback.wave_revert import copy_cloud_to_ad

USER_CLASSES = ["top", "person", "organizationalPerson", "user"]
# Python's casefold() makes "straße" and "STRASSE" one address; slapd's caseIgnoreMatch (like AD's comparison of
# Unicode strings) does not, so the directory accepts both spellings in one proxyAddresses list.
PRIMARY = "SMTP:straße@corp.example.com"
SECONDARY = "smtp:STRASSE@corp.example.com"


@pytest.fixture(scope="module")
def ad() -> Iterator[SandboxDirectory]:
    with SandboxDirectory.start(users=0) as started:
        yield started


@pytest.fixture
def raw(ad: SandboxDirectory) -> Iterator[ldap3.Connection]:
    connection = ldap3.Connection(ldap3.Server(ad.url, get_info=ldap3.SCHEMA), ad.bind_dn, ad.password, auto_bind=True)
    yield connection
    connection.unbind()


@pytest.fixture
def client(ad: SandboxDirectory) -> Iterator[DirectoryClient]:
    config = DirectoryConfig(url=ad.url, bind_dn=ad.bind_dn, password_file=str(ad.password_file), base_dn=ad.base_dn)
    with DirectoryClient(config) as directory:
        yield directory


@pytest.fixture
def contradictory(raw: ldap3.Connection, ad: SandboxDirectory) -> Iterator[tuple[str, uuid.UUID]]:
    """A remote mailbox whose proxyAddresses hold one address both as primary and as secondary."""
    guid = uuid.uuid4()
    dn = f"CN=Jörg Straße,OU=Sales,{ad.users_dn}"
    assert raw.add(dn, USER_CLASSES, {
        "sn": "Straße", "objectGUID": guid.bytes_le, "sAMAccountType": 805306368, "mailNickname": "strasse",
        "proxyAddresses": [PRIMARY, SECONDARY], "extensionAttribute5": "on-premises",
        "msExchRecipientTypeDetails": 2147483648,
    }), raw.result  # fmt: skip
    yield dn, guid
    raw.delete(dn)


def test_an_entry_holding_an_address_as_primary_and_secondary_fails_the_revert_permanently_naming_both(
    client, raw, contradictory
):
    """proxyAddresses marks the primary reply address with upper-case "SMTP:" and secondaries with "smtp:"
    (exchange-facts §3: MS-OXLDAP 2.2.3.4; Exchange 2003 SDK "Denote the primary reply address by putting the prefix
    in all caps"), so one address under both prefixes is a contradiction no minimal modify can resolve: which of the
    two is meant is a person's decision. The revert's copy must stop with a permanent directory error (the wave runner
    fails a member on a non-retryable DirectoryError, writeback.wave_jobs) that names the entry and both values, and
    write nothing."""
    dn, guid = contradictory
    cloud = {"EmailAddresses": ["SMTP:strasse@corp.example.com"], "CustomAttribute5": "cloud", "Alias": "strasse"}
    with pytest.raises(DirectoryInconsistentEntry) as caught:
        copy_cloud_to_ad(client, guid, cloud)
    error = caught.value
    assert isinstance(error, DirectoryError) and not error.retryable
    assert normalize_dn(error.target) == normalize_dn(dn) and error.attribute == "proxyAddresses"
    assert set(error.values) == {PRIMARY, SECONDARY}
    assert error.target in str(error) and PRIMARY in str(error) and SECONDARY in str(error)
    assert client.requests["modify"] == 0
    assert raw.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["extensionAttribute5"])
    assert raw.response[0]["attributes"]["extensionAttribute5"] == "on-premises"


def test_a_contradiction_in_what_the_caller_wants_stays_a_value_error(client, contradictory):
    # The caller's own list is a programming error, not something about the directory entry.
    _, guid = contradictory
    with pytest.raises(ValueError, match="both as primary and as secondary") as caught:
        client.apply_desired(
            guid, {"mailNickname": "strasse", "proxyAddresses": ["SMTP:a@x.example", "smtp:A@x.example"]}
        )
    assert not isinstance(caught.value, DirectoryError)


def test_attribute_or_value_exists_with_0000200D_is_its_own_permanent_error_not_a_conflict():
    """AD's diagnostic message starts with its extended (Win32) error in hex. Microsoft's System Error Codes
    (8200-8999) name 8205 (0x200D) ERROR_DS_ATTRIBUTE_OR_VALUE_EXISTS, "The specified directory service attribute or
    value already exists", and 8323 (0x2083) ERROR_DS_ATT_VAL_ALREADY_EXISTS, "The specified value already exists";
    LDAP result 20 is attributeOrValueExists (RFC 4511 §A.2; Microsoft KB 218185 "Microsoft LDAP error codes",
    LDAP_ATTRIBUTE_OR_VALUE_EXISTS 0x14). 0000200D is what AD answers for an attribute that already holds its one
    value: re-reading and re-planning (what a DirectoryConflict triggers) sends the same add again, so it is a
    permanent error of its own whose message says what happened; 00002083, a value-level duplicate, stays a conflict.
    """
    diagnostic = "0000200D: AtrErr: DSID-03151818, #1: 0: 0000200D: DSID-03151818, problem 1006 (ATT_OR_VALUE_EXISTS)"
    single = error_for_result(
        {"result": 20, "description": "attributeOrValueExists", "message": diagnostic},
        operation="modify",
        target="CN=Ann Lee,OU=Sales,DC=corp,DC=example,DC=com",
    )
    assert type(single) is DirectorySingleValued and isinstance(single, DirectoryPermanent)
    assert not isinstance(single, DirectoryConflict) and not single.retryable
    assert "already holds its one value" in str(single) and diagnostic in str(single)
    assert single.result_code == 20 and single.diagnostic == diagnostic

    duplicate = error_for_result(
        {"result": 20, "description": "attributeOrValueExists", "message": "00002083: AtrErr: DSID-03151818"},
        operation="modify",
        target="CN=Ann Lee,OU=Sales,DC=corp,DC=example,DC=com",
    )
    assert type(duplicate) is DirectoryConflict
