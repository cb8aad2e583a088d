"""Entra Connect's LDAP traffic with the messages built and read here: a tenant-wide paged read, and many modifies.

ldap3 decodes each entry into case-insensitive dicts with a configuration lookup per value and waits for each
modify's answer before sending the next; at a million users that was most of a sync tick (a read of 20,000 users took
9 s, the writeback one round trip per user). The requests are BER as RFC 4511 gives them (§4.5.1 SearchRequest with
RFC 2696's paged-results control, §4.6 ModifyRequest); a SearchResultEntry is read straight from its octets into the
DN and each attribute's raw values, which is all ``sync.parse_user`` needs. Everything else (the socket, its reading
into whole messages, searchResDone, modifyResponse and any other answer) stays ldap3's.

Modifies go out WINDOW at a time and their answers are matched by message ID (RFC 4511 §4.1.1.1 lets a client send
further requests before earlier ones are answered).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPOperationResult, LDAPSocketReceiveError, LDAPSocketSendError
from ldap3.operation.search import compile_filter, parse_filter
from ldap3.utils.asn1 import decode_message_fast
from pyasn1.codec.ber import encoder as ber_encoder

WINDOW = 64
PAGED_RESULTS = "1.2.840.113556.1.4.319"
_SEQUENCE, _SET, _OCTETS, _INTEGER, _ENUMERATED, _BOOLEAN = 0x30, 0x31, 0x04, 0x02, 0x0A, 0x01
_SEARCH_REQUEST, _MODIFY_REQUEST, _ENTRY = 0x63, 0x66, 0x64  # [APPLICATION 3], [APPLICATION 6], [APPLICATION 4]
_DONE, _REFERENCE = 5, 19  # searchResDone, searchResRef: ldap3's protocolOp numbers
_CONTROLS = 0xA0
_REPLACE = 2
_WHOLE_SUBTREE, _DEREF_ALWAYS = 2, 3  # what ldap3's search sends by default

Entry = tuple[str, dict[str, list[bytes]]]


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def _octets(value: str | bytes) -> bytes:
    return _tlv(_OCTETS, value.encode("utf-8") if isinstance(value, str) else value)


def _integer(tag: int, value: int) -> bytes:
    return _tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))  # non-negative values only


def encode_search(
    message_id: int, base: str, search_filter: bytes, attributes: Sequence[str], *, page: tuple[int, bytes]
) -> bytes:
    """A subtree SearchRequest under ``base`` (filter already BER) for one page: (page size, cookie)."""
    size, cookie = page
    control_value = _tlv(_SEQUENCE, _integer(_INTEGER, size) + _octets(cookie))
    controls = _tlv(_CONTROLS, _tlv(_SEQUENCE, _octets(PAGED_RESULTS) + _octets(control_value)))
    request = (
        _octets(base)
        + _integer(_ENUMERATED, _WHOLE_SUBTREE)
        + _integer(_ENUMERATED, _DEREF_ALWAYS)
        + _integer(_INTEGER, 0)
        + _integer(_INTEGER, 0)
        + _tlv(_BOOLEAN, b"\x00")
        + search_filter
        + _tlv(_SEQUENCE, b"".join(_octets(name) for name in attributes))
    )
    return _tlv(_SEQUENCE, _integer(_INTEGER, message_id) + _tlv(_SEARCH_REQUEST, request) + controls)


def encode_replace(message_id: int, dn: str, attribute: str, values: Sequence[str]) -> bytes:
    """A ModifyRequest replacing one attribute's values."""
    change = _tlv(_SEQUENCE, _octets(attribute) + _tlv(_SET, b"".join(_octets(value) for value in values)))
    item = _tlv(_SEQUENCE, _integer(_ENUMERATED, _REPLACE) + change)
    request = _tlv(_MODIFY_REQUEST, _octets(dn) + _tlv(_SEQUENCE, item))
    return _tlv(_SEQUENCE, _integer(_INTEGER, message_id) + request)


def _length_at(data: bytes, at: int) -> tuple[int, int]:
    first = data[at]
    if first < 0x80:
        return first, at + 1
    size = first & 0x7F
    return int.from_bytes(data[at + 1 : at + 1 + size], "big"), at + 1 + size


def decode_entry(message: bytes) -> Entry | None:
    """(DN, raw values by attribute name) of a whole SearchResultEntry message; None for any other message."""
    try:
        whole, at = _length_at(message, 1)
        if at + whole != len(message) or message[at] != _INTEGER:
            return None
        size, at = _length_at(message, at + 1)  # messageID
        if message[at + size] != _ENTRY:
            return None
        _, at = _length_at(message, at + size + 1)
        size, at = _length_at(message, at + 1)  # objectName
        dn = message[at : at + size].decode("utf-8")
        size, at = _length_at(message, at + size + 1)  # attributes
        end, values = at + size, {}
        while at < end:
            size, at = _length_at(message, at + 1)  # PartialAttribute
            after = at + size
            size, at = _length_at(message, at + 1)  # type
            name = message[at : at + size].decode("utf-8")
            size, at = _length_at(message, at + size + 1)  # vals
            last, found = at + size, []
            while at < last:
                size, at = _length_at(message, at + 1)
                if at + size > last:
                    return None
                found.append(message[at : at + size])
                at += size
            values[name] = found
            at = after
        return dn, values
    except (IndexError, UnicodeDecodeError):
        return None  # not what it seemed: ldap3 decodes it below and says what it is


def filter_ber(connection: ldap3.Connection, search_filter: str) -> bytes:
    """An LDAP filter string in BER, parsed as ldap3's search parses it."""
    parsed = parse_filter(search_filter, None, connection.auto_escape, connection.auto_encode, None, False)
    return ber_encoder.encode(compile_filter(parsed.elements[0]))


def _send(connection: ldap3.Connection, message: bytes) -> None:
    try:
        connection.socket.sendall(message)
    except OSError as error:
        connection.strategy.close()
        raise LDAPSocketSendError(f"error sending data: {error}") from None


def _receive(connection: ldap3.Connection) -> list[bytes]:
    messages = connection.strategy.receiving()
    if not messages:
        connection.strategy.close()
        raise LDAPSocketReceiveError("the directory closed the connection")
    return messages


def paged_search(
    connection: ldap3.Connection, base: str, search_filter: str, attributes: Sequence[str], *, page_size: int
) -> Iterator[Entry]:
    """Every entry under ``base`` matching ``search_filter``, a page of ``page_size`` at a time, as (DN, raw values);
    references are skipped. Raises ldap3's LDAPOperationResult when a page ends in an error.

    Each page comes out last entry first, as ldap3's paged_search generator gives it: the sync creates mailboxes
    in the order it reads users, and that order is Get-Mailbox's and Graph's listing order, which stays as it was.
    """
    ber = filter_ber(connection, search_filter)
    cookie = b""
    while True:
        message_id = connection.server.next_message_id()
        _send(connection, encode_search(message_id, base, ber, attributes, page=(page_size, cookie)))
        done, page = None, []
        while done is None:
            for message in _receive(connection):
                entry = decode_entry(message)
                if entry is not None:
                    page.append(entry)
                    continue
                decoded = decode_message_fast(message)
                if decoded["protocolOp"] == _DONE:
                    done = connection.strategy.decode_response_fast(decoded)
                elif decoded["protocolOp"] != _REFERENCE:
                    connection.strategy.close()
                    raise LDAPSocketReceiveError(f"the directory answered a search with {decoded['protocolOp']}")
        yield from reversed(page)
        if done["result"] != 0:
            raise LDAPOperationResult(
                result=done["result"], description=done["description"], message=done["message"], response_type="search"
            )
        cookie = done.get("controls", {}).get(PAGED_RESULTS, {}).get("value", {}).get("cookie") or b""
        if not cookie:
            return


def replace_many(
    connection: ldap3.Connection, changes: Sequence[tuple[str, str, str]], answers: list[dict[str, Any] | None]
) -> None:
    """Replace one value on many entries, (DN, attribute, value) each, putting ldap3's result dict (result,
    description, message, ...) of each into ``answers`` at its index as it arrives: when a broken connection raises
    ldap3's communication error midway, the answers already in are kept."""
    waiting: dict[int, int] = {}
    for index, (dn, attribute, value) in enumerate(changes):
        message_id = connection.server.next_message_id()
        waiting[message_id] = index
        _send(connection, encode_replace(message_id, dn, attribute, [value]))
        while len(waiting) >= WINDOW:
            _collect(connection, waiting, answers)
    while waiting:
        _collect(connection, waiting, answers)


def _collect(connection: ldap3.Connection, waiting: dict[int, int], answers: list[dict[str, Any] | None]) -> None:
    for message in _receive(connection):
        decoded = decode_message_fast(message)
        index = waiting.pop(int(decoded["messageID"]), None)
        if index is None:
            connection.strategy.close()
            raise LDAPSocketReceiveError(f"the directory answered message {decoded['messageID']}, not sent here")
        answers[index] = connection.strategy.decode_response_fast(decoded)
