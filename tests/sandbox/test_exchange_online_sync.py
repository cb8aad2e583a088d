"""Contract of the emulator's Entra Connect: what a sync tick does with AD's values (exchange-facts §1, §3, §6, §8).

Each test adds its own users to the session's directory over LDAP and deletes them afterwards, so the
generated users other tests rely on are never touched.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import ldap3
import pytest

HASHTABLE = "#Exchange.GenericHashTable"
OLD = "2020-01-01T00:00:00Z"
REMOTE_USER, REMOTE_SHARED, REMOTE_ROOM, REMOTE_EQUIPMENT = 2147483648, 34359738368, 8589934592, 17179869184
SAM_NORMAL_USER_ACCOUNT, SAM_MACHINE_ACCOUNT = 805306368, 805306369


@pytest.fixture
def ldap(directory) -> Iterator[ldap3.Connection]:
    server = ldap3.Server(directory.url, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True)
    yield conn
    conn.unbind()


@pytest.fixture
def ad_user(directory, ldap) -> Iterator:
    """Factory: add an AD user with a remote mailbox; every user added is deleted after the test."""
    added: list[str] = []

    def add(alias: str, *, guid: uuid.UUID | None = None, consistency: bytes | None = None, **attributes) -> dict:
        guid = guid or uuid.uuid4()
        dn = f"CN={alias},OU=Engineering,{directory.users_dn}"
        values = {
            "objectClass": ["top", "person", "organizationalPerson", "user"],
            "sAMAccountType": SAM_NORMAL_USER_ACCOUNT,  # AD sets it on every user account (MS-ADTS 2.2.16)
            "cn": alias,
            "sn": alias,
            "displayName": alias.replace(".", " ").title(),
            "objectGUID": guid.bytes_le,
            "sAMAccountName": alias[:20],
            "userPrincipalName": f"{alias}@corp.example.com",
            "mail": f"{alias}@corp.example.com",
            "mailNickname": alias,
            "proxyAddresses": [f"SMTP:{alias}@corp.example.com", f"smtp:{alias}@corp.mail.onmicrosoft.com"],
            "msExchRecipientTypeDetails": REMOTE_USER,
            **attributes,
        }
        if consistency is not None:
            values["mS-DS-ConsistencyGuid"] = consistency
        assert ldap.add(dn, attributes=values), ldap.result
        added.append(dn)
        return {"dn": dn, "guid": guid, "upn": values["userPrincipalName"], "alias": alias}

    yield add
    for dn in added:
        ldap.delete(dn)


def modify(ldap: ldap3.Connection, dn: str, **replace) -> None:
    changes = {
        name: [(ldap3.MODIFY_REPLACE, value if isinstance(value, list) else [value])] for name, value in replace.items()
    }
    assert ldap.modify(dn, changes), ldap.result


def test_tick_creates_mailboxes_for_new_directory_users(exo_clean, ad_user):
    user = ad_user("sync.new1", extensionAttribute4="E4", msExchExtensionCustomAttribute2=["p:1", "p:2"])
    assert exo_clean.get_mailbox(user["upn"]) is None
    stats = exo_clean.sync()
    assert stats["created"] == 1
    stored = exo_clean.get_mailbox(user["upn"])
    assert stored["IsDirSynced"] is True
    assert stored["IsExchangeCloudManaged"] is False
    assert stored["Alias"] == "sync.new1"
    assert stored["DisplayName"] == "Sync New1"
    assert stored["PrimarySmtpAddress"] == stored["WindowsEmailAddress"] == "sync.new1@corp.example.com"
    assert stored["EmailAddresses"][:2] == [
        "SMTP:sync.new1@corp.example.com",
        "smtp:sync.new1@corp.mail.onmicrosoft.com",
    ]
    assert f"smtp:sync.new1@{exo_clean.tenant_domain}" in stored["EmailAddresses"]  # the MOERA Entra adds
    assert stored["CustomAttribute4"] == "E4"
    assert stored["ExtensionCustomAttribute2"] == ["p:1", "p:2"]
    assert stored["RecipientTypeDetails"] == "UserMailbox"


@pytest.mark.parametrize(
    ("details", "expected"),
    [(REMOTE_USER, "UserMailbox"), (REMOTE_SHARED, "SharedMailbox"), (REMOTE_ROOM, "RoomMailbox"),
     (REMOTE_EQUIPMENT, "EquipmentMailbox")],
)  # fmt: skip
def test_recipient_type_details_map_from_the_remote_mailbox_types(exo_clean, ad_user, details, expected):
    user = ad_user(f"sync.type{details % 97}", msExchRecipientTypeDetails=details)
    exo_clean.sync()
    assert exo_clean.get_mailbox(user["upn"])["RecipientTypeDetails"] == expected


def test_users_without_a_mailbox_type_get_no_mailbox(exo_clean, ad_user, ldap):
    user = ad_user("sync.nomailbox")
    assert ldap.modify(user["dn"], {"msExchRecipientTypeDetails": [(ldap3.MODIFY_DELETE, [])]}), ldap.result
    exo_clean.sync()
    assert exo_clean.get_mailbox(user["upn"]) is None


def test_get_mailbox_immutable_id_is_empty_without_msexchgenericimmutableid(exo_clean, exo_invoke, ad_user):
    """exchange-facts §3 table and §8: Get-Mailbox's ImmutableId is msExchGenericImmutableId, not the Entra
    sourceAnchor; on a directory-synced tenant it is usually empty."""
    user = ad_user("sync.noimmutable", guid=uuid.UUID("f7cc07d7-7c15-447d-876d-c01b0e5a9e38"))
    exo_clean.sync()
    shown = exo_invoke("Get-Mailbox", {"Identity": user["upn"]}).json()["value"][0]
    assert shown["ImmutableId"] == ""
    assert "1wfM9xV8fUSHbcAbDlqeOA==" not in json.dumps(shown)  # the sourceAnchor is nowhere on the mailbox


def test_get_mailbox_immutable_id_is_a_copy_of_msexchgenericimmutableid(exo_clean, exo_invoke, ad_user, ldap):
    """exchange-facts §3 table (msExchGenericImmutableId -> ImmutableId, [MS S6 filter-properties])."""
    user = ad_user("sync.generic", msExchGenericImmutableId="legacy-id-42")
    exo_clean.sync()
    assert exo_invoke("Get-Mailbox", {"Identity": user["upn"]}).json()["value"][0]["ImmutableId"] == "legacy-id-42"
    modify(ldap, user["dn"], msExchGenericImmutableId="legacy-id-43")
    exo_clean.sync()
    assert exo_clean.get_mailbox(user["upn"])["ImmutableId"] == "legacy-id-43"


def test_the_join_key_is_the_source_anchor_and_survives_a_changed_anchor_setting(exo_clean, ad_user):
    """exchange-facts §8: Connect anchors on mS-DS-ConsistencyGuid (else objectGUID); switching the emulator's
    source_anchor setting re-anchors the same mailbox instead of making a second one."""
    consistency = uuid.uuid4().bytes_le
    user = ad_user("sync.consistency", consistency=consistency)
    exo_clean.sync()
    stored = exo_clean.get_mailbox(user["upn"])
    assert stored["_sourceAnchor"] == base64.b64encode(consistency).decode()
    exo_clean.set_settings(source_anchor="objectGUID")
    stats = exo_clean.sync()
    assert stats["created"] == 0 and stats["deleted"] == 0
    again = exo_clean.get_mailbox(user["upn"])
    assert again["_sourceAnchor"] == base64.b64encode(user["guid"].bytes_le).decode()
    assert (again["Guid"], again["WhenChangedUTC"]) == (stored["Guid"], stored["WhenChangedUTC"])


def test_keys_are_stable_across_resets(exo_clean, ad_user):
    user = ad_user("sync.stable")
    exo_clean.sync()
    first = exo_clean.get_mailbox(user["upn"])
    exo_clean.reset()
    again = exo_clean.get_mailbox(user["upn"])
    for key in ("ExternalDirectoryObjectId", "Guid", "ExchangeGuid", "_sourceAnchor"):
        assert again[key] == first[key]
    uuid.UUID(first["ExternalDirectoryObjectId"])


def test_tick_overwrites_exchange_attributes_while_ad_is_the_authority(exo_clean, ad_user, ldap):
    user = ad_user("sync.adauth", extensionAttribute1="before")
    exo_clean.sync()
    exo_clean.update_mailbox(user["upn"], WhenChangedUTC=OLD)
    modify(ldap, user["dn"], extensionAttribute1="after", msExchHideFromAddressLists="TRUE",
           proxyAddresses=["SMTP:sync.adauth@corp.example.com", "smtp:sync.alias@corp.example.com"])  # fmt: skip
    assert exo_clean.sync()["updated"] == 1
    stored = exo_clean.get_mailbox(user["upn"])
    assert stored["CustomAttribute1"] == "after"
    assert stored["HiddenFromAddressListsEnabled"] is True
    assert "smtp:sync.alias@corp.example.com" in stored["EmailAddresses"]
    assert "smtp:sync.adauth@corp.mail.onmicrosoft.com" not in stored["EmailAddresses"]
    assert stored["WhenChangedUTC"] > OLD


def test_tick_without_changes_leaves_when_changed_alone(exo_clean, ad_user):
    user = ad_user("sync.quiet")
    exo_clean.sync()
    exo_clean.update_mailbox(user["upn"], WhenChangedUTC=OLD)
    stats = exo_clean.sync()
    assert stats["updated"] == 0
    assert exo_clean.get_mailbox(user["upn"])["WhenChangedUTC"] == OLD


def test_cloud_managed_mailboxes_keep_their_exchange_attributes(exo_clean, exo_invoke, ad_user, ldap):
    user = ad_user("sync.cloud", extensionAttribute1="ad value")
    exo_clean.sync()
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "IsExchangeCloudManaged": True})
    add = {"@odata.type": HASHTABLE, "Add": ["smtp:cloud.alias@corp.example.com"]}
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "CustomAttribute1": "cloud value", "EmailAddresses": add})
    modify(ldap, user["dn"], extensionAttribute1="ad value 2")
    exo_clean.sync()
    stored = exo_clean.get_mailbox(user["upn"])
    assert stored["CustomAttribute1"] == "cloud value"
    assert "smtp:cloud.alias@corp.example.com" in stored["EmailAddresses"]
    assert stored["IsExchangeCloudManaged"] is True


def test_identity_attributes_still_flow_for_cloud_managed_mailboxes(exo_clean, exo_invoke, ad_user, ldap):
    user = ad_user("sync.identity")
    exo_clean.sync()
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "IsExchangeCloudManaged": True})
    modify(ldap, user["dn"], displayName="Renamed In AD", userPrincipalName="sync.renamed@corp.example.com")
    exo_clean.sync()
    stored = exo_clean.get_mailbox("sync.renamed@corp.example.com")
    assert stored["DisplayName"] == "Renamed In AD"
    assert stored["IsExchangeCloudManaged"] is True


def test_revert_then_tick_loses_cloud_only_edits(exo_clean, exo_invoke, ad_user):
    """exchange-facts §1.7: flag back to false, and the next sync overwrites the cloud values with AD's."""
    user = ad_user("sync.revert", extensionAttribute1="ad value")
    exo_clean.sync()
    ad_addresses = exo_clean.get_mailbox(user["upn"])["EmailAddresses"]
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "IsExchangeCloudManaged": True})
    add = {"@odata.type": HASHTABLE, "Add": ["smtp:only.cloud@corp.example.com"]}
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "CustomAttribute1": "cloud only", "EmailAddresses": add})
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "IsExchangeCloudManaged": False})
    pending = exo_clean.get_mailbox(user["upn"])
    assert pending["CustomAttribute1"] == "cloud only"  # until the next sync cycle takes over
    exo_clean.sync()
    stored = exo_clean.get_mailbox(user["upn"])
    assert stored["CustomAttribute1"] == "ad value"
    assert stored["EmailAddresses"] == ad_addresses


def test_revert_after_writing_cloud_values_to_ad_changes_nothing(exo_clean, exo_invoke, ad_user, ldap):
    """The portal's revert without loss: AD is brought up to date first, so the tick has nothing to do."""
    user = ad_user("sync.safe", extensionAttribute1="ad value")
    exo_clean.sync()
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "IsExchangeCloudManaged": True})
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "CustomAttribute1": "cloud value"})
    cloud = exo_clean.get_mailbox(user["upn"])
    ad_proxies = [a for a in cloud["EmailAddresses"] if not a.lower().endswith(exo_clean.tenant_domain)]
    modify(ldap, user["dn"], extensionAttribute1="cloud value", proxyAddresses=ad_proxies)
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "IsExchangeCloudManaged": False})
    exo_clean.update_mailbox(user["upn"], WhenChangedUTC=OLD)
    assert exo_clean.sync()["updated"] == 0
    stored = exo_clean.get_mailbox(user["upn"])
    assert (stored["CustomAttribute1"], stored["EmailAddresses"]) == ("cloud value", cloud["EmailAddresses"])


def test_users_removed_from_ad_lose_their_mailbox(exo_clean, ad_user, ldap):
    user = ad_user("sync.leaver")
    exo_clean.sync()
    assert ldap.delete(user["dn"])
    assert exo_clean.sync()["deleted"] == 1
    assert exo_clean.get_mailbox(user["upn"]) is None


def test_reset_rebuilds_the_state_from_the_directory(exo_clean, exo_invoke, ad_user):
    user = ad_user("sync.reset", extensionAttribute1="ad value")
    exo_clean.sync()
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "IsExchangeCloudManaged": True})
    exo_invoke("Set-Mailbox", {"Identity": user["upn"], "CustomAttribute1": "cloud value"})
    exo_clean.create_mailbox(UserPrincipalName="cloud.only@corp.example.com")
    exo_clean.reset()
    stored = exo_clean.get_mailbox(user["upn"])
    assert (stored["IsExchangeCloudManaged"], stored["CustomAttribute1"]) == (False, "ad value")
    assert exo_clean.get_mailbox("cloud.only@corp.example.com") is None


# -- which AD objects are people (issue 15 point 2) --------------------------------------------------------------


def test_a_computer_with_exchange_attributes_never_becomes_a_mailbox(exo_clean, exo_invoke, ad_user, directory, ldap):
    """In AD the computer class derives from user, so objectClass=user also matches computers; a person's account
    is sAMAccountType 805306368 (SAM_NORMAL_USER_ACCOUNT), a computer's 805306369 (MS-ADTS 2.2.16). Connect
    syncs people; a computer carrying Exchange attributes is neither a mailbox nor an Entra user."""
    dn = f"CN=SYNC-PC01,OU=Engineering,{directory.users_dn}"
    guid = uuid.uuid4()
    attributes = {
        "objectClass": ["top", "person", "organizationalPerson", "user", "computer"],
        "cn": "SYNC-PC01", "sn": "SYNC-PC01", "objectGUID": guid.bytes_le, "sAMAccountName": "SYNC-PC01$",
        "sAMAccountType": SAM_MACHINE_ACCOUNT, "dNSHostName": "sync-pc01.corp.example.com",
        "userPrincipalName": "sync.pc01@corp.example.com", "mail": "sync.pc01@corp.example.com",
        "mailNickname": "sync.pc01", "proxyAddresses": ["SMTP:sync.pc01@corp.example.com"],
        "msExchRecipientTypeDetails": REMOTE_USER,
    }  # fmt: skip
    assert ldap.add(dn, attributes=attributes), ldap.result
    try:
        person = ad_user("sync.person")
        exo_clean.sync()
        assert exo_clean.get_mailbox("sync.pc01@corp.example.com") is None
        assert exo_invoke("Get-Mailbox", {"Identity": "sync.pc01@corp.example.com"}).status_code == 404
        assert exo_clean.get_mailbox(person["upn"]) is not None
    finally:
        ldap.delete(dn)


# -- Exchange hybrid writeback of msDS-ExternalDirectoryObjectID (issue 15 point 1) --------------------------------


def _edoid_in_ad(ldap: ldap3.Connection, dn: str) -> list[str]:
    assert ldap.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["msDS-ExternalDirectoryObjectID"]), ldap.result
    return [v.decode() for v in ldap.response[0]["raw_attributes"].get("msDS-ExternalDirectoryObjectID", [])]


def test_without_hybrid_writeback_nothing_is_written_to_ad(exo_clean, ad_user, ldap):
    """exchange-facts §8: Connect writes msDS-ExternalDirectoryObjectID only when Exchange hybrid writeback is on
    (an optional feature); the session emulator runs with it off."""
    assert exo_clean.set_settings()["hybrid_writeback"] is False
    user = ad_user("sync.nowriteback")
    stats = exo_clean.sync()
    assert "written_back" not in stats
    assert _edoid_in_ad(ldap, user["dn"]) == []


@pytest.fixture(scope="module")
def hybrid_tenant():
    """A directory and an emulator of this module's own, started with hybrid writeback on (it writes every person)."""
    from sandbox.directory import SandboxDirectory
    from sandbox.exchange_online import ExchangeOnlineEmulator

    with (
        SandboxDirectory.start(users=5, seed=15) as directory,
        ExchangeOnlineEmulator.start(directory=directory, hybrid_writeback=True) as exchange,
    ):
        yield directory, exchange


def test_hybrid_writeback_writes_user_and_the_object_id_into_ad(hybrid_tenant):
    """exchange-facts §8 ([MS S62] Connect "Exchange hybrid writeback": msDS-ExternalDirectoryObjectID "derived
    from cloudAnchor in Entra ID", form User_<object id>): after a tick every person's AD object carries
    User_<ExternalDirectoryObjectId>, so AD and Exchange pair through it; a second tick writes nothing."""
    directory, exchange = hybrid_tenant
    conn = ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)
    try:
        stats = exchange.sync()
        assert stats["written_back"] == 0  # the start's first tick already wrote them
        by_upn = {m["UserPrincipalName"].lower(): m for m in exchange.mailboxes()}
        conn.search(directory.users_dn, "(sAMAccountType=805306368)", attributes=["userPrincipalName",
                    "msDS-ExternalDirectoryObjectID"])  # fmt: skip
        assert len(conn.entries) == 5
        for entry in conn.entries:
            mailbox = by_upn[str(entry.userPrincipalName).lower()]
            assert str(entry["msDS-ExternalDirectoryObjectID"]) == f"User_{mailbox['ExternalDirectoryObjectId']}"
        dn = conn.entries[0].entry_dn
        conn.modify(dn, {"msDS-ExternalDirectoryObjectID": [(ldap3.MODIFY_REPLACE, ["User_tampered"])]})
        assert exchange.sync()["written_back"] == 1
        assert _edoid_in_ad(conn, dn)[0].startswith("User_") and _edoid_in_ad(conn, dn)[0] != "User_tampered"
    finally:
        conn.unbind()
