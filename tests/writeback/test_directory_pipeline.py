"""Modifies sent without waiting for each answer (writeback.directory.pipeline, DirectoryClient.modify_many): the
bytes are the ModifyRequest ldap3 itself would send, each answer reaches its own write whatever order it comes in,
and a connection that breaks midway costs no write and doubles none. Against a real slapd, read back over a separate
ldap3 connection; the out-of-order case, which slapd does not produce on demand, with a fake connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ldap3 import DEREF_ALWAYS, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE
from ldap3.operation.modify import modify_operation
from ldap3.operation.search import search_operation
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
from ldap3.strategy.base import BaseStrategy
from ldap3.utils.conv import escape_bytes
from pyasn1.codec.ber import encoder

from portal.dn import normalize_dn
from sandbox.directory import SandboxDirectory
from tests.writeback.test_directory import add_user, config_for, raw_connection, read_back
from writeback.directory import DirectoryClient, DirectoryConflict, DirectoryNotFound, DirectoryRetryable, pipeline
from writeback.directory.pipeline import (
    decode_entry,
    encode_modify,
    encode_search,
    filter_ber,
    or_of_equalities,
    send_modifies,
)

# --- the encoding --------------------------------------------------------------------------------------------------


def ldap3_bytes(message_id: int, dn: str, changes: dict) -> bytes:
    """What ldap3 2.9 puts on the wire for the same modify (Connection.modify -> BaseStrategy.send), through pyasn1."""
    request = modify_operation(dn, changes, True, None, None, check_names=False)
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("modifyRequest", request)
    return encoder.encode(message)


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
values = st.one_of(texts, st.binary(max_size=300))
changes = st.dictionaries(
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,30}", fullmatch=True),
    st.lists(
        st.tuples(st.sampled_from([MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE]), st.lists(values, max_size=5)),
        min_size=1,
        max_size=2,
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(message_id=st.integers(1, 2**31 - 1), dn=texts, changes=changes)
def test_a_modify_is_encoded_byte_for_byte_as_ldap3_encodes_it(message_id, dn, changes):
    assert encode_modify(message_id, dn, changes) == ldap3_bytes(message_id, dn, changes)


@pytest.mark.parametrize("size", [127, 128, 255, 256, 65_535, 65_536, 1_123 * 40])
def test_lengths_on_each_side_of_the_short_and_long_forms(size):
    # BER (X.690 8.1.3): one length octet up to 127, then 0x81, 0x82, 0x83 and the octets of the length.
    changes = {"proxyAddresses": [(MODIFY_ADD, ["x" * size])]}
    assert encode_modify(7, "CN=a,DC=corp", changes) == ldap3_bytes(7, "CN=a,DC=corp", changes)


def ldap3_search_bytes(message_id: int, base: str, guids: list[bytes], attributes: list[str]) -> bytes:
    """What ldap3 2.9's Connection.search sends for the same OR of objectGUIDs (escaped filter text, parsed)."""
    text = "(|" + "".join(f"(objectGUID={escape_bytes(guid)})" for guid in guids) + ")"
    request = search_operation(base, text, SUBTREE, DEREF_ALWAYS, attributes, 0, 0, False, True, True, None)
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("searchRequest", request)
    return encoder.encode(message)


@settings(max_examples=200, deadline=None)
@given(
    message_id=st.integers(1, 2**31 - 1),
    base=texts,
    guids=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=120),
    attributes=st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,30}", fullmatch=True), min_size=1, max_size=8),
)
def test_a_search_by_guids_is_encoded_byte_for_byte_as_ldap3_encodes_it(message_id, base, guids, attributes):
    # GUID bytes include "(", "*", "\\" and NUL: sent as they are, with no escaping to get wrong.
    expected = ldap3_search_bytes(message_id, base, guids, attributes)
    assert encode_search(message_id, base, or_of_equalities("objectGUID", guids), attributes) == expected


def ldap3_paged_search_bytes(message_id: int, base: str, text: str, attributes: list[str], size: int, cookie: bytes):
    """What ldap3 2.9's Connection.search(paged_size=..., paged_cookie=...) sends: the request and RFC 2696's control,
    not critical."""
    from ldap3.operation.search import search_operation as operation
    from ldap3.protocol.controls import build_control
    from ldap3.protocol.rfc2696 import RealSearchControlValue
    from ldap3.protocol.rfc4511 import Controls

    request = operation(base, text, SUBTREE, DEREF_ALWAYS, attributes, 0, 0, False, True, True, None)
    value = RealSearchControlValue()
    value["size"], value["cookie"] = size, cookie
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("searchRequest", request)
    controls = Controls()
    controls.setComponentByPosition(0, build_control("1.2.840.113556.1.4.319", False, value, encode_control_value=True))
    message["controls"] = controls
    return encoder.encode(message)


@settings(max_examples=200, deadline=None)
@given(
    message_id=st.integers(1, 2**31 - 1),
    size=st.integers(0, 2**20),
    cookie=st.binary(max_size=300),
    value=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="()*\\"), max_size=40),
)
def test_a_paged_search_is_encoded_byte_for_byte_as_ldap3_encodes_it(message_id, size, cookie, value):
    text = f"(&(sAMAccountType=805306368)(|(cn={value}*)(!(msExchRecipientTypeDetails=1))))"
    expected = ldap3_paged_search_bytes(
        message_id, "DC=corp,DC=example,DC=com", text, ["cn", "objectGUID"], size, cookie
    )
    connection = ldap3.Connection(ldap3.Server("ldap://127.0.0.1"))  # never opened: only its parsing settings are read
    encoded = encode_search(
        message_id,
        "DC=corp,DC=example,DC=com",
        filter_ber(connection, text),
        ["cn", "objectGUID"],
        paged=(size, cookie),
    )
    assert encoded == expected


def ldap3_entry_bytes(message_id: int, dn: str, attributes: dict[str, list[bytes]]) -> bytes:
    """A SearchResultEntry as pyasn1 encodes it from ldap3's RFC 4511 classes (what a server sends)."""
    from ldap3.protocol.rfc4511 import (
        LDAPDN,
        AttributeDescription,
        AttributeValue,
        PartialAttribute,
        PartialAttributeList,
        SearchResultEntry,
        Vals,
    )

    entry = SearchResultEntry()
    entry["object"] = LDAPDN(dn)
    listed = PartialAttributeList()
    for index, (name, found) in enumerate(attributes.items()):
        attribute = PartialAttribute()
        attribute["type"] = AttributeDescription(name)
        vals = Vals()
        for position, value in enumerate(found):
            vals.setComponentByPosition(position, AttributeValue(value))
        attribute["vals"] = vals
        listed.setComponentByPosition(index, attribute)
    entry["attributes"] = listed
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("searchResEntry", entry)
    return encoder.encode(message)


@settings(max_examples=300, deadline=None)
@given(
    message_id=st.integers(1, 2**31 - 1),
    dn=texts,
    attributes=st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,30}", fullmatch=True),
        st.lists(st.binary(max_size=400), max_size=6),
        max_size=8,
    ),
)
def test_an_entry_is_read_as_ldap3_reads_it(message_id, dn, attributes):
    # Values up to 400 octets and many of them: lengths in the short and the long form, at every level.
    message = ldap3_entry_bytes(message_id, dn, attributes)
    payload = pipeline.decode_message_fast(message)["payload"]  # ldap3's general BER decoder
    expected = {bytes(item[3][0][3]).decode(): [bytes(value[3]) for value in item[3][1][3]] for item in payload[1][3]}
    assert decode_entry(message, message_id) == (bytes(payload[0][3]).decode(), expected)
    assert decode_entry(message, message_id + 1) is None  # another request's answer is left to the general decoder


def test_what_is_not_an_entry_is_left_to_ldap3s_decoder():
    assert decode_entry(b"", 1) is None
    assert decode_entry(b"\x30\x05\x02\x01\x01\x65\x00", 1) is None  # a searchResDone
    whole = ldap3_entry_bytes(3, "CN=a", {"cn": [b"a"]})
    assert decode_entry(whole, 3) == ("CN=a", {"cn": [b"a"]})
    for cut in (1, 2, 5):
        assert decode_entry(whole[:-cut], 3) is None  # cut short: never a shorter value
    inflated = bytearray(whole)
    inflated[-2] = 2  # the value says it is 2 octets long, 1 is there and the message ends
    assert decode_entry(bytes(inflated), 3) is None


# --- against slapd -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ad() -> Iterator[SandboxDirectory]:
    with SandboxDirectory.start(users=10) as started:
        yield started


@pytest.fixture(scope="module")
def raw(ad: SandboxDirectory) -> Iterator[ldap3.Connection]:
    connection = raw_connection(ad)
    yield connection
    connection.unbind()


_ous = iter(range(1, 10_000))


def users(raw: ldap3.Connection, base_dn: str, count: int, **attributes) -> list[str]:
    ou = f"OU=pipeline-{next(_ous)},{base_dn}"
    assert raw.add(ou, ["top", "organizationalUnit"]), raw.result
    return [add_user(raw, ou, f"User {n}", **attributes)[0] for n in range(count)]


def test_more_writes_than_the_window_all_land_and_each_refusal_is_its_own(ad, raw):
    dns = users(raw, ad.base_dn, pipeline.WINDOW * 2 + 5, proxyAddresses=["smtp:kept@corp.example.com"])
    writes = [(dn, {"extensionAttribute3": [(MODIFY_REPLACE, [f"value {n}"])]}) for n, dn in enumerate(dns)]
    writes[10] = (f"CN=Nobody,{ad.base_dn}", writes[10][1])  # no such entry
    writes[20] = (dns[20], {"proxyAddresses": [(MODIFY_ADD, ["smtp:kept@corp.example.com"])]})  # already there
    writes[30] = (dns[30], {})  # nothing to send
    with DirectoryClient(config_for(ad)) as client:
        results = client.modify_many(writes)
        assert client.requests["modify"] == len(writes) - 1 and client.requests["bind"] == 1
    assert isinstance(results[10], DirectoryNotFound) and "CN=Nobody" in str(results[10])
    assert isinstance(results[20], DirectoryConflict)
    assert [n for n, error in enumerate(results) if error is not None] == [10, 20]
    for n, dn in enumerate(dns):
        expected = [] if n in (10, 20, 30) else [f"value {n}"]
        assert read_back(raw, dn, "extensionAttribute3")["extensionAttribute3"] == expected


def test_nothing_to_write_sends_nothing(ad):
    with DirectoryClient(config_for(ad)) as client:
        assert client.modify_many([(f"CN=x,{ad.base_dn}", {})]) == [None]
        assert client.requests["modify"] == 0 and client.requests["bind"] == 0


def test_a_raw_search_reads_each_entrys_values_as_bytes(ad, raw):
    ou = f"OU=pipeline-{next(_ous)},{ad.base_dn}"
    assert raw.add(ou, ["top", "organizationalUnit"]), raw.result
    guids = [uuid.UUID(bytes=bytes([0x28, 0x2A, 0x5C, 0x00, 0x29]) + bytes(11)), uuid.uuid4(), uuid.uuid4()]
    for n, guid in enumerate(guids[:2]):
        add_user(
            raw, ou, f"Raw {n}", guid=guid, proxyAddresses=[f"SMTP:r{n}@corp.example.com", "smtp:é@corp.example.com"]
        )
    with DirectoryClient(config_for(ad)) as client:
        found = client.search_raw(
            ou, or_of_equalities("objectGUID", [guid.bytes_le for guid in guids]), ["proxyAddresses", "objectGUID"]
        )
        assert client.requests["search"] == 1
    by_guid = {uuid.UUID(bytes_le=values["objectGUID"][0]): (dn, values) for dn, values in found}
    assert set(by_guid) == set(guids[:2])  # the third is in no entry
    dn, values = by_guid[guids[0]]
    assert normalize_dn(dn) == normalize_dn(f"CN=Raw 0,{ou}")
    assert sorted(values["proxyAddresses"]) == sorted([b"SMTP:r0@corp.example.com", "smtp:é@corp.example.com".encode()])


def test_a_raw_paged_search_reads_every_page_as_the_formatted_one(ad, raw):
    """paged_search(raw=True) sends RFC 2696's control through the pipeline's encoding and follows the server's
    cookie to the last page: the same entries, in the same order, as ldap3's paged search."""
    dns = users(raw, ad.base_dn, 23, proxyAddresses=["smtp:paged@corp.example.com"])
    ou = dns[0].split(",", 1)[1]
    with DirectoryClient(config_for(ad)) as client:
        formatted = list(client.paged_search(ou, "(objectClass=user)", ["cn", "proxyAddresses"], page_size=5))
        pages_before = client.requests["search"]
        fast = list(client.paged_search(ou, "(objectClass=user)", ["CN", "proxyAddresses"], page_size=5, raw=True))
        assert client.requests["search"] - pages_before == 5  # 23 entries, 5 a page
    assert [e["dn"] for e in fast] == [e["dn"] for e in formatted] and len(fast) == 23
    for quick, slow in zip(fast, formatted, strict=True):
        assert set(quick["raw_attributes"]) == {"CN", "proxyAddresses"}  # keyed as asked, whatever the server's case
        assert quick["raw_attributes"]["proxyAddresses"] == [b"smtp:paged@corp.example.com"]
        assert quick["raw_attributes"]["CN"] == [value.encode() for value in slow["attributes"]["cn"]]


def test_a_raw_search_under_a_missing_base_is_not_found(ad):
    with DirectoryClient(config_for(ad)) as client, pytest.raises(DirectoryNotFound):
        client.search_raw(f"OU=nowhere,{ad.base_dn}", or_of_equalities("objectGUID", [bytes(16)]), ["cn"])


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[tuple[SandboxDirectory, Path]]:
    workdir = tmp_path / "slapd"
    instance = SandboxDirectory.start(users=5, workdir=workdir)
    yield instance, workdir
    instance.stop()


def test_a_dropped_connection_is_reopened_and_every_write_lands_once(restartable):
    first, workdir = restartable
    client = DirectoryClient(config_for(first))
    (missing,) = client.modify_many(
        [(f"CN=nobody,{first.base_dn}", {"extensionAttribute3": [(MODIFY_REPLACE, ["x"])]})]
    )
    assert isinstance(missing, DirectoryNotFound)  # answered: the connection is open
    first.stop()
    second = SandboxDirectory.start(users=5, workdir=workdir, port=first.port)
    try:
        raw_second = raw_connection(second)
        dns = users(raw_second, second.base_dn, 100)
        # The old socket is dead: the first send or the first answer says so, and the writes go again on a new one.
        adds = [(dn, {"proxyAddresses": [(MODIFY_ADD, [f"smtp:u{n}@corp.example.com"])]}) for n, dn in enumerate(dns)]
        assert client.modify_many(adds) == [None] * len(dns)
        assert client.requests["bind"] == 2
        for n, dn in enumerate(dns):
            assert read_back(raw_second, dn, "proxyAddresses")["proxyAddresses"] == [f"smtp:u{n}@corp.example.com"]
        raw_second.unbind()
    finally:
        second.stop()
        client.close()


def test_a_stopped_directory_leaves_every_write_retryable(restartable):
    directory, _ = restartable
    raw_conn = raw_connection(directory)
    dns = users(raw_conn, directory.base_dn, 3)
    raw_conn.unbind()
    client = DirectoryClient(config_for(directory))
    directory.stop()
    results = client.modify_many([(dn, {"extensionAttribute3": [(MODIFY_REPLACE, ["x"])]}) for dn in dns])
    assert all(isinstance(error, DirectoryRetryable) for error in results), results
    assert directory.url in str(results[0])


# --- answers out of order (a fake connection: slapd's thread pool reorders them only by chance) ---------------------


def modify_response(message_id: int, code: int, diagnostic: str = "") -> bytes:
    """An LDAPMessage carrying a ModifyResponse (RFC 4511 §4.6: [APPLICATION 7] LDAPResult), encoded by hand."""

    def tlv(tag: int, content: bytes) -> bytes:
        assert len(content) < 128
        return bytes((tag, len(content))) + content

    result = tlv(0x0A, bytes((code,))) + tlv(0x04, b"") + tlv(0x04, diagnostic.encode())
    return tlv(0x30, tlv(0x02, message_id.to_bytes(4, "big").lstrip(b"\0") or b"\0") + tlv(0x67, result))


def read_tlv(data: bytes) -> tuple[bytes, bytes]:
    """One BER element's content, and what follows it."""
    size, start = data[1], 2
    if size & 0x80:
        count = size & 0x7F
        size, start = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    return data[start : start + size], data[start + size :]


class ReversingConnection:
    """Takes requests and answers all of those waiting at once, newest first: code 32 (noSuchObject) for a DN
    starting CN=missing, success otherwise."""

    def __init__(self):
        self.ids = iter(range(1, 1000))
        self.waiting: list[bytes] = []
        self.sent: list[int] = []
        self.dns: list[str] = []
        self.server = self
        self.socket = self
        self.strategy = self

    def next_message_id(self) -> int:
        return next(self.ids)

    def sendall(self, data: bytes) -> None:
        message, _ = read_tlv(data)
        number, rest = read_tlv(message)
        request, _ = read_tlv(rest)
        dn, _ = read_tlv(request)
        message_id, dn = int.from_bytes(number, "big"), dn.decode()
        self.sent.append(message_id)
        self.dns.append(dn)
        self.waiting.append(modify_response(message_id, 32 if dn.startswith("CN=missing") else 0, dn))

    def receiving(self) -> list[bytes]:
        answers, self.waiting = self.waiting[::-1], []
        return answers

    decode_response_fast = BaseStrategy.decode_response_fast

    def close(self) -> None:
        raise AssertionError("the connection was closed")


def test_answers_in_any_order_reach_their_own_requests(monkeypatch):
    monkeypatch.setattr(pipeline, "WINDOW", 4)
    connection = ReversingConnection()
    dns = [f"CN={'missing' if n % 3 == 0 else 'user'} {n},DC=corp" for n in range(10)]
    answers: dict[int, dict] = {}
    send_modifies(connection, [(dn, {"extensionAttribute3": [(MODIFY_REPLACE, ["v"])]}) for dn in dns], answers)
    assert sorted(answers) == list(range(10)) and connection.sent == list(range(1, 11))
    for n, dn in enumerate(dns):
        assert answers[n]["result"] == (32 if n % 3 == 0 else 0) and answers[n]["message"] == dn


def test_an_answer_to_a_request_never_sent_breaks_the_connection():
    connection = ReversingConnection()
    connection.receiving = lambda: [modify_response(99, 0)]
    closed = []
    connection.close = lambda: closed.append(True)
    with pytest.raises(ldap3.core.exceptions.LDAPSocketReceiveError, match="99"):
        send_modifies(connection, [("CN=u,DC=corp", {"extensionAttribute3": [(MODIFY_REPLACE, ["v"])]})], {})
    assert closed == [True]


class BreakingConnection(ReversingConnection):
    """Answers the first ``answered`` requests (oldest first), then the connection breaks as a dead socket does."""

    def __init__(self, answered: int):
        super().__init__()
        self.answered = answered

    def receiving(self) -> list[bytes]:
        answers, self.waiting = self.waiting[: self.answered], self.waiting[self.answered :]
        self.answered -= len(answers)
        if not answers:
            raise ldap3.core.exceptions.LDAPSocketReceiveError("error receiving data: connection reset")
        return answers

    def close(self) -> None:
        pass

    unbind = close


def test_after_a_break_midway_only_the_unanswered_writes_are_sent_again(ad, monkeypatch):
    first, second = BreakingConnection(answered=3), ReversingConnection()
    second.close = second.unbind = lambda: None
    connections = iter([first, second])
    client = DirectoryClient(config_for(ad))
    monkeypatch.setattr(client, "_open", lambda: next(connections))
    writes = [(f"CN=user {n},DC=corp", {"extensionAttribute3": [(MODIFY_REPLACE, ["v"])]}) for n in range(8)]

    assert client.modify_many(writes) == [None] * 8
    # The first connection took all eight (within the window) and answered three; the second got the other five.
    assert len(first.sent) == 8 and second.dns == [f"CN=user {n},DC=corp" for n in range(3, 8)]
    assert client.requests["modify"] == 13
