"""The sandbox directory behaves like AD where SOA Portal depends on it. Real slapd, no mocks."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from ldap3.core.exceptions import LDAPAttributeError, LDAPBindError
from ldap3.utils.conv import escape_bytes, escape_filter_chars
from ldap3.utils.dn import parse_dn

from sandbox.directory import (
    SandboxDirectory,
    SandboxDirectoryError,
    find_tool,
    generate_users,
    launcher,
    ldif_entry,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
USERS = 300
SEED = 7
USER_CLASSES = ["top", "person", "organizationalPerson", "user"]


def connect(directory: SandboxDirectory, *, get_info: str = ldap3.SCHEMA) -> ldap3.Connection:
    server = ldap3.Server(directory.url, get_info=get_info)
    return ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True)


def dn_key(dn: str) -> tuple[tuple[str, str], ...]:
    """DNs differ in letter case between servers (slapd says cn=, AD says CN=): compare them parsed."""
    return tuple((attr.lower(), value.lower()) for attr, value, _sep in parse_dn(dn))


def context_csn(conn: ldap3.Connection, base_dn: str) -> str:
    conn.search(base_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["contextCSN"])
    return conn.entries[0].contextCSN.value


@pytest.fixture(scope="module")
def loaded_directory() -> Iterator[SandboxDirectory]:
    with SandboxDirectory.start(users=USERS, seed=SEED) as started:
        yield started


@pytest.fixture(scope="module")
def ldap_conn(loaded_directory: SandboxDirectory) -> Iterator[ldap3.Connection]:
    connection = connect(loaded_directory)
    yield connection
    connection.unbind()


@pytest.fixture
def scratch_ou(ldap_conn: ldap3.Connection, loaded_directory: SandboxDirectory, request: pytest.FixtureRequest) -> str:
    """An empty OU of the test's own, outside the generated users so their count stays exact."""
    dn = f"OU={request.node.name[:60]},{loaded_directory.base_dn}"
    assert ldap_conn.add(dn, ["top", "organizationalUnit"]), ldap_conn.result
    return dn


def add_user(conn: ldap3.Connection, ou: str, alias: str, **attributes: object) -> tuple[str, uuid.UUID]:
    guid = uuid.uuid4()
    dn = f"CN={alias},{ou}"
    values = {"sn": alias, "objectGUID": guid.bytes_le, "sAMAccountName": alias, **attributes}
    assert conn.add(dn, USER_CLASSES, values), conn.result
    return dn, guid


def read(conn: ldap3.Connection, dn: str, *attributes: str) -> ldap3.Entry:
    assert conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(attributes) or ["*"])
    return conn.entries[0]


# --- lifecycle -----------------------------------------------------------------------------------


def test_start_gives_a_reachable_server_and_stop_frees_everything() -> None:
    started = SandboxDirectory.start()
    try:
        assert started.is_running()
        assert started.url == f"ldap://127.0.0.1:{started.port}"
        assert started.password_file.read_text() == started.password
        assert started.password_file.stat().st_mode & 0o777 == 0o600
        workdir, port = started.workdir, started.port
    finally:
        started.stop()

    assert not started.is_running()
    assert not workdir.exists()
    started.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    # The port is really free: a new directory can take it.
    with SandboxDirectory.start(port=port) as again:
        assert again.port == port
        connect(again).unbind()


def test_kept_workdir_survives_stop_and_is_reused_fresh(tmp_path: Path) -> None:
    workdir = tmp_path / "ldap"
    with SandboxDirectory.start(workdir=workdir, users=2) as first:
        first_password = first.password
    assert (workdir / "slapd.conf").exists()
    assert (workdir / "password").read_text() == first_password

    with SandboxDirectory.start(workdir=workdir) as second:
        assert second.password != first_password
        conn = connect(second)
        assert not conn.search(second.users_dn, "(objectClass=user)")  # fresh database, no users


def test_keep_reopens_the_database_with_its_changes_only_when_loaded_the_same_way(tmp_path: Path) -> None:
    workdir = tmp_path / "ldap"
    with SandboxDirectory.start(workdir=workdir, users=3, seed=5, keep=True) as first:
        assert not first.reopened
        conn = connect(first)
        assert conn.search(first.users_dn, "(objectClass=user)", attributes=["extensionAttribute9"])
        dn = conn.entries[0].entry_dn
        assert conn.modify(dn, {"extensionAttribute9": [(ldap3.MODIFY_REPLACE, ["kept"])]}), conn.result

    with SandboxDirectory.start(workdir=workdir, users=3, seed=5, keep=True) as second:
        assert second.reopened
        assert str(read(connect(second), dn, "extensionAttribute9").extensionAttribute9) == "kept"
        assert len(list(connect(second).extend.standard.paged_search(second.users_dn, "(objectClass=user)"))) == 3

    # Another size or seed, or no keep: a newly loaded database, as before.
    with SandboxDirectory.start(workdir=workdir, users=4, seed=5, keep=True) as other:
        assert not other.reopened
        assert str(read(connect(other), dn, "extensionAttribute9").extensionAttribute9) != "kept"
    with SandboxDirectory.start(workdir=workdir, users=4, seed=5) as fresh:
        assert not fresh.reopened


def test_refuses_a_workdir_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SandboxDirectoryError, match="not empty"):
        SandboxDirectory.start(workdir=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_port_in_use_is_reported_with_slapds_reason(loaded_directory: SandboxDirectory) -> None:
    with pytest.raises(SandboxDirectoryError, match="Address already in use"):
        SandboxDirectory.start(port=loaded_directory.port)


def test_missing_slapd_names_the_debian_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(launcher, "SBIN_DIRS", ())
    with pytest.raises(SandboxDirectoryError, match="slapd ldap-utils"):
        find_tool("slapd")


def test_cli_announces_itself_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.directory", "--users", "3", "--seed", "2"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no announcement within 20 s"
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"url", "base_dn", "bind_dn", "password_file", "users_dn"}
        password = Path(info["password_file"]).read_text()
        conn = ldap3.Connection(info["url"], info["bind_dn"], password, auto_bind=True)
        conn.search(info["users_dn"], "(objectClass=user)", attributes=["cn"])
        assert len(conn.entries) == 3
        conn.unbind()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not Path(info["password_file"]).exists()  # temp folder removed
    with pytest.raises(ConnectionRefusedError):
        host, port = info["url"].removeprefix("ldap://").split(":")
        socket.create_connection((host, int(port)), timeout=1).close()


def _process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, waiting for a reaper that is not us


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _process_gone(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("ending", ["normal exit", "killed"])
def test_slapd_does_not_outlive_its_python_process(ending: str) -> None:
    script = (
        "import sys, time\n"
        "from sandbox.directory import SandboxDirectory\n"
        "d = SandboxDirectory.start()\n"
        "print(d.pid, d.workdir, flush=True)\n"
        "if sys.argv[1] == 'killed':\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, ending],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    pid_text, workdir = proc.stdout.readline().split(maxsplit=1)
    workdir = Path(workdir.strip())
    slapd_pid = int(pid_text)
    try:
        if ending == "killed":
            proc.kill()
        proc.wait(timeout=10)
        assert _wait_gone(slapd_pid), "slapd outlived its parent"
        if ending == "normal exit":
            assert not workdir.exists()
    finally:
        if not _process_gone(slapd_pid):
            os.kill(slapd_pid, signal.SIGKILL)
        # Nobody is left to delete the temp folder of a killed parent.
        subprocess.run(["rm", "-rf", "--", str(workdir)], check=False)


# --- binding --------------------------------------------------------------------------------------


def test_bind_with_the_service_credentials(loaded_directory: SandboxDirectory) -> None:
    conn = ldap3.Connection(loaded_directory.url, loaded_directory.bind_dn, loaded_directory.password_file.read_text())
    assert conn.bind()
    conn.unbind()


def test_wrong_password_is_refused(loaded_directory: SandboxDirectory) -> None:
    with pytest.raises(LDAPBindError):
        ldap3.Connection(loaded_directory.url, loaded_directory.bind_dn, "wrong", auto_bind=True)


def test_anonymous_clients_see_no_users(loaded_directory: SandboxDirectory) -> None:
    anonymous = ldap3.Connection(loaded_directory.url, auto_bind=True)
    anonymous.search(loaded_directory.base_dn, "(objectClass=user)")
    assert anonymous.entries == []


# --- schema and attribute behaviour ---------------------------------------------------------------


def test_user_with_every_managed_attribute_round_trips(ldap_conn: ldap3.Connection, scratch_ou: str) -> None:
    guid = uuid.uuid4()
    extension = {f"extensionAttribute{i}": f"value {i}" for i in range(1, 16)}
    custom = {f"msExchExtensionCustomAttribute{i}": [f"a{i}", f"b{i}"] for i in range(1, 6)}
    attributes = {
        "cn": "Grace Hopper",
        "sn": "Hopper",
        "givenName": "Grace",
        "displayName": "Grace Hopper",
        "department": "Engineering",
        "objectGUID": guid.bytes_le,
        "mS-DS-ConsistencyGuid": guid.bytes_le,
        "sAMAccountName": "grace.hopper",
        "userPrincipalName": "grace.hopper@corp.example.com",
        "mail": "grace.hopper@corp.example.com",
        "mailNickname": "grace.hopper",
        "proxyAddresses": ["SMTP:grace.hopper@corp.example.com", "smtp:grace@corp.example.com"],
        "targetAddress": "SMTP:grace.hopper@corp.mail.onmicrosoft.com",
        "msExchHideFromAddressLists": True,
        "msExchRecipientTypeDetails": 2147483648,
        "msExchRecipientDisplayType": -2147483642,
        "msExchRemoteRecipientType": 4,
        **extension,
        **custom,
    }
    dn = f"CN=Grace Hopper,{scratch_ou}"
    assert ldap_conn.add(dn, USER_CLASSES, attributes), ldap_conn.result

    entry = read(ldap_conn, dn, *attributes)
    for name, expected in attributes.items():
        if name == "objectGUID":
            assert entry[name].raw_values == [expected]
        elif isinstance(expected, list):
            assert sorted(entry[name].values) == sorted(expected), name
        else:
            assert entry[name].value == expected, name


def test_object_guid_reads_back_as_a_guid_string_over_the_raw_bytes(
    ldap_conn: ldap3.Connection, scratch_ou: str
) -> None:
    dn, guid = add_user(ldap_conn, scratch_ou, "guid.user")

    entry = read(ldap_conn, dn, "objectGUID")

    assert entry.objectGUID.value == "{" + str(guid) + "}"
    assert entry.objectGUID.raw_values == [guid.bytes_le]
    assert ldap_conn.server.schema.attribute_types["objectGUID"].oid == "1.2.840.113556.1.4.2"


def test_search_by_escaped_binary_object_guid(
    ldap_conn: ldap3.Connection, scratch_ou: str, loaded_directory: SandboxDirectory
) -> None:
    dn, guid = add_user(ldap_conn, scratch_ou, "escaped.guid")
    add_user(ldap_conn, scratch_ou, "other.guid")

    ldap_conn.search(
        loaded_directory.base_dn, f"(objectGUID={escape_bytes(guid.bytes_le)})", attributes=["sAMAccountName"]
    )

    assert [dn_key(entry.entry_dn) for entry in ldap_conn.entries] == [dn_key(dn)]


def test_consistency_guid_has_ads_exact_name(
    ldap_conn: ldap3.Connection, scratch_ou: str, loaded_directory: SandboxDirectory
) -> None:
    anchor = uuid.uuid4().bytes_le
    dn, _guid = add_user(ldap_conn, scratch_ou, "anchor.user", **{"mS-DS-ConsistencyGuid": anchor})
    assert read(ldap_conn, dn, "mS-DS-ConsistencyGuid")["mS-DS-ConsistencyGuid"].value == anchor

    # The common misspelling: ldap3 refuses it itself when it has the schema, the server otherwise.
    misspelt = {"sn": "x", "msDS-ConsistencyGuid": anchor}
    with pytest.raises(LDAPAttributeError, match="msDS-ConsistencyGuid"):
        ldap_conn.add(f"CN=misspelt,{scratch_ou}", USER_CLASSES, misspelt)
    schemaless = connect(loaded_directory, get_info=ldap3.NONE)
    assert not schemaless.add(f"CN=misspelt,{scratch_ou}", USER_CLASSES, misspelt)
    assert schemaless.result["description"] == "undefinedAttributeType"
    schemaless.unbind()


def test_proxy_addresses_match_without_regard_to_case(
    ldap_conn: ldap3.Connection, scratch_ou: str, loaded_directory: SandboxDirectory
) -> None:
    dn, _guid = add_user(ldap_conn, scratch_ou, "case.user", proxyAddresses=["SMTP:Case.User@corp.example.com"])

    ldap_conn.search(loaded_directory.base_dn, "(proxyAddresses=smtp:case.user@CORP.EXAMPLE.COM)", attributes=["cn"])
    assert [dn_key(e.entry_dn) for e in ldap_conn.entries] == [dn_key(dn)]
    ldap_conn.search(loaded_directory.base_dn, "(proxyAddresses=smtp:CASE.us*)", attributes=["cn"])
    assert [dn_key(e.entry_dn) for e in ldap_conn.entries] == [dn_key(dn)]


def test_adding_an_address_that_differs_only_in_case_is_rejected(ldap_conn: ldap3.Connection, scratch_ou: str) -> None:
    dn, _guid = add_user(ldap_conn, scratch_ou, "dup.user", proxyAddresses=["SMTP:dup.user@corp.example.com"])

    ok = ldap_conn.modify(dn, {"proxyAddresses": [(ldap3.MODIFY_ADD, ["smtp:DUP.USER@corp.example.com"])]})

    assert not ok and ldap_conn.result["description"] == "attributeOrValueExists"


def test_deleting_an_absent_value_is_rejected(ldap_conn: ldap3.Connection, scratch_ou: str) -> None:
    dn, _guid = add_user(ldap_conn, scratch_ou, "del.user", proxyAddresses=["SMTP:del.user@corp.example.com"])

    ok = ldap_conn.modify(dn, {"proxyAddresses": [(ldap3.MODIFY_DELETE, ["smtp:never@corp.example.com"])]})

    assert not ok and ldap_conn.result["description"] == "noSuchAttribute"


def test_hide_from_address_lists_is_a_boolean(ldap_conn: ldap3.Connection, scratch_ou: str) -> None:
    dn, _guid = add_user(ldap_conn, scratch_ou, "hidden.user", msExchHideFromAddressLists=True)
    assert read(ldap_conn, dn, "msExchHideFromAddressLists").msExchHideFromAddressLists.raw_values == [b"TRUE"]

    assert ldap_conn.modify(dn, {"msExchHideFromAddressLists": [(ldap3.MODIFY_REPLACE, [False])]}), ldap_conn.result

    assert read(ldap_conn, dn, "msExchHideFromAddressLists").msExchHideFromAddressLists.value is False


def test_recipient_type_details_hold_values_beyond_32_bits(ldap_conn: ldap3.Connection, scratch_ou: str) -> None:
    remote_shared = 34359738368
    dn, _guid = add_user(ldap_conn, scratch_ou, "shared.box", msExchRecipientTypeDetails=remote_shared)

    assert read(ldap_conn, dn, "msExchRecipientTypeDetails").msExchRecipientTypeDetails.value == remote_shared


def test_extension_attributes_are_single_valued_and_length_limited(
    ldap_conn: ldap3.Connection, scratch_ou: str
) -> None:
    dn, _guid = add_user(ldap_conn, scratch_ou, "ext.user", extensionAttribute5="one")

    two_values = ldap_conn.modify(dn, {"extensionAttribute5": [(ldap3.MODIFY_ADD, ["two"])]})
    assert not two_values and ldap_conn.result["description"] == "constraintViolation"
    assert ldap_conn.modify(dn, {"extensionAttribute5": [(ldap3.MODIFY_REPLACE, ["x" * 1024])]}), ldap_conn.result
    too_long = ldap_conn.modify(dn, {"extensionAttribute5": [(ldap3.MODIFY_REPLACE, ["x" * 1025])]})
    assert not too_long and ldap_conn.result["description"] == "constraintViolation"


def test_extension_custom_attributes_are_multi_valued(ldap_conn: ldap3.Connection, scratch_ou: str) -> None:
    dn, _guid = add_user(ldap_conn, scratch_ou, "multi.user", msExchExtensionCustomAttribute3=["a"])

    assert ldap_conn.modify(dn, {"msExchExtensionCustomAttribute3": [(ldap3.MODIFY_ADD, ["b", "c"])]}), ldap_conn.result

    values = read(ldap_conn, dn, "msExchExtensionCustomAttribute3").msExchExtensionCustomAttribute3.values
    assert sorted(values) == ["a", "b", "c"]


# --- bulk load ------------------------------------------------------------------------------------


def test_bulk_loaded_users_come_back_whole_through_a_paged_search(
    ldap_conn: ldap3.Connection, loaded_directory: SandboxDirectory
) -> None:
    pages = ldap_conn.extend.standard.paged_search(
        loaded_directory.users_dn,
        "(objectClass=user)",
        attributes=["objectGUID", "proxyAddresses", "mail", "userPrincipalName"],
        paged_size=50,
        generator=True,
    )
    users = [item["raw_attributes"] for item in pages if item["type"] == "searchResEntry"]

    assert len(users) == USERS
    assert len({user["objectGUID"][0] for user in users}) == USERS
    all_addresses: list[str] = []
    for user in users:
        addresses = [value.decode() for value in user["proxyAddresses"]]
        primaries = [a for a in addresses if a.startswith("SMTP:")]
        assert len(primaries) == 1, addresses
        assert primaries[0].removeprefix("SMTP:") == user["mail"][0].decode()
        assert user["userPrincipalName"][0].decode().endswith("@corp.example.com")
        all_addresses.extend(a.lower() for a in addresses)
    assert len(set(all_addresses)) == len(all_addresses)  # unique tenant-wide, as Exchange requires


def test_bulk_loaded_user_matches_the_generator(
    ldap_conn: ldap3.Connection, loaded_directory: SandboxDirectory
) -> None:
    expected = next(generate_users(1, base_dn=loaded_directory.base_dn, seed=SEED))

    entry = read(ldap_conn, expected["dn"], "*")

    assert entry.objectGUID.raw_values == [expected["objectGUID"]]
    assert entry.mailNickname.value == expected["mailNickname"]
    assert sorted(entry.proxyAddresses.values) == sorted(expected["proxyAddresses"])


def test_generator_is_deterministic_and_prefix_stable() -> None:
    first = list(generate_users(50, seed=3))

    assert first == list(generate_users(50, seed=3))
    assert first[:10] == list(generate_users(10, seed=3))
    assert first != list(generate_users(50, seed=4))


def test_ldif_encodes_binary_and_non_ascii_values_in_base64() -> None:
    record = ldif_entry({"dn": "CN=Zoë Müller,DC=x", "objectGUID": b"\x00\xff", "cn": "Zoë", "sn": "plain"})

    lines = record.splitlines()
    assert lines[0] == "dn:: " + base64.b64encode("CN=Zoë Müller,DC=x".encode()).decode()
    assert "objectGUID:: AP8=" in lines
    assert "cn:: " + base64.b64encode("Zoë".encode()).decode() in lines
    assert "sn: plain" in lines
    assert record.endswith("\n\n")


# --- change tracking ------------------------------------------------------------------------------


def test_changes_since_a_mark_are_exactly_the_entries_written_after_it(
    ldap_conn: ldap3.Connection, scratch_ou: str, loaded_directory: SandboxDirectory
) -> None:
    untouched, _ = add_user(ldap_conn, scratch_ou, "untouched.user")
    changed, _ = add_user(ldap_conn, scratch_ou, "changed.user")
    mark = context_csn(ldap_conn, loaded_directory.base_dn)

    assert ldap_conn.modify(changed, {"extensionAttribute1": [(ldap3.MODIFY_REPLACE, ["new"])]}), ldap_conn.result
    added, _ = add_user(ldap_conn, scratch_ou, "added.user")

    ldap_conn.search(loaded_directory.base_dn, f"(entryCSN>={escape_filter_chars(mark)})", attributes=["entryCSN"])
    since = [entry for entry in ldap_conn.entries if entry.entryCSN.value != mark]
    assert {dn_key(entry.entry_dn) for entry in since} == {dn_key(changed), dn_key(added)}
    assert dn_key(untouched) not in {dn_key(entry.entry_dn) for entry in ldap_conn.entries}
    # The new high-water mark is the newest change, ready for the next incremental read.
    assert context_csn(ldap_conn, loaded_directory.base_dn) == max(entry.entryCSN.value for entry in since)


def test_modify_timestamp_supports_ordering_filters(
    ldap_conn: ldap3.Connection, scratch_ou: str, loaded_directory: SandboxDirectory
) -> None:
    dn, _guid = add_user(ldap_conn, scratch_ou, "stamped.user")
    stamp: dt.datetime = read(ldap_conn, dn, "modifyTimestamp").modifyTimestamp.value
    as_filter = stamp.strftime("%Y%m%d%H%M%SZ")
    tomorrow = (stamp + dt.timedelta(days=1)).strftime("%Y%m%d%H%M%SZ")

    ldap_conn.search(loaded_directory.base_dn, f"(modifyTimestamp>={as_filter})", attributes=["cn"])
    assert dn_key(dn) in {dn_key(entry.entry_dn) for entry in ldap_conn.entries}
    ldap_conn.search(loaded_directory.base_dn, f"(modifyTimestamp>={tomorrow})", attributes=["cn"])
    assert ldap_conn.entries == []


def test_renaming_or_moving_an_ou_changes_its_entry_csn_but_not_its_childrens(
    ldap_conn: ldap3.Connection, scratch_ou: str, loaded_directory: SandboxDirectory
) -> None:
    """As on AD, where a rename or move changes the OU's uSNChanged and leaves its children's alone (MS-ADTS
    3.1.1.1.9: the children's parent is a reference, their own attributes do not change): a change filter finds the
    OU and not the users below it, which is why the inventory re-reads the subtrees of changed OUs."""
    branch = f"OU=Branch,{scratch_ou}"
    assert ldap_conn.add(branch, ["top", "organizationalUnit"]), ldap_conn.result
    user, _ = add_user(ldap_conn, branch, "branch.user")
    user_csn = read(ldap_conn, user, "entryCSN").entryCSN.value
    mark = context_csn(ldap_conn, loaded_directory.base_dn)

    assert ldap_conn.modify_dn(branch, "OU=Branch Renamed"), ldap_conn.result
    renamed_user = f"CN=branch.user,OU=Branch Renamed,{scratch_ou}"
    assert read(ldap_conn, renamed_user, "entryCSN").entryCSN.value == user_csn
    target = f"OU=Elsewhere,{scratch_ou}"
    assert ldap_conn.add(target, ["top", "organizationalUnit"]), ldap_conn.result
    assert ldap_conn.modify_dn(f"OU=Branch Renamed,{scratch_ou}", "OU=Branch Renamed", new_superior=target)
    moved_user = f"CN=branch.user,OU=Branch Renamed,{target}"
    assert read(ldap_conn, moved_user, "entryCSN").entryCSN.value == user_csn

    ldap_conn.search(scratch_ou, f"(entryCSN>={escape_filter_chars(mark)})", attributes=["entryCSN"])
    changed = {dn_key(entry.entry_dn) for entry in ldap_conn.entries if entry.entryCSN.value != mark}
    assert dn_key(f"OU=Branch Renamed,{target}") in changed
    assert dn_key(moved_user) not in changed


def test_the_root_dse_names_the_domain_controller_chosen_at_start(tmp_path: Path) -> None:
    """AD's root DSE names the DC answering in dsServiceName, the DN of its NTDS Settings object (MS-ADTS
    3.1.1.3.2.3), with dnsHostName and defaultNamingContext beside it. The sandbox serves them from slapd's rootDSE
    file; a kept database started again under another name is the same domain answered by another DC."""
    workdir = tmp_path / "dc"
    with SandboxDirectory.start(users=3, workdir=workdir, keep=True, server_name="DC1") as first:
        conn = connect(first)
        root = read(conn, "", "*")
        assert root.dsServiceName.value == first.server_dn
        assert first.server_dn.startswith("CN=NTDS Settings,CN=DC1,CN=Servers,")
        assert root.dNSHostName.value == "dc1.corp.example.com"
        assert root.defaultNamingContext.value == first.base_dn
        add_user(conn, first.users_dn, "written.on.dc1")
        port = first.port
    with SandboxDirectory.start(users=3, workdir=workdir, keep=True, server_name="DC2", port=port) as second:
        conn = connect(second)
        assert second.reopened
        assert "CN=DC2," in read(conn, "", "*").dsServiceName.value
        assert conn.search(second.users_dn, "(cn=written.on.dc1)")
