"""What a writeback batch puts on the wire: many modifies without waiting for each answer, and searches by objectGUID
whose entries are read as raw bytes.

RFC 4511 §4.1.1.1 lets a client send further requests before the earlier ones are answered, and the server may
answer them in any order; responses are matched to requests by message ID. ldap3's synchronous strategy waits for
each answer and refuses one that belongs to another request, so a batch of modifies costs a round trip each and
leaves the worker idle while the directory works. Here the requests go out WINDOW at a time and their answers are
collected by message ID as they come.

The requests are encoded here (RFC 4511 §4.5.1 SearchRequest and §4.6 ModifyRequest in BER, definite lengths)
rather than through ldap3's filter parser and pyasn1 objects, which cost about half a modify's client CPU and more
than a tenth of a second for a search naming a hundred GUIDs; tests/writeback/test_directory_pipeline.py checks the
bytes against ldap3's own encoding. A search's entries are kept as the DN and each attribute's raw values: ldap3's
own conversion (case-insensitive dicts, text decoding, a configuration lookup per value) cost the batch more than
the rest of its reading. The socket, its TLS, its timeouts and the reading of whole messages stay ldap3's
(``strategy.receiving``, ``decode_message_fast``); message IDs come from ldap3's counter, so they never collide with
the connection's other requests.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPSocketReceiveError, LDAPSocketSendError
from ldap3.operation.search import compile_filter, parse_filter
from ldap3.utils.asn1 import decode_message_fast
from pyasn1.codec.ber import encoder as ber_encoder

# At most this many modifies unanswered at once: a few dozen kilobytes on the wire, and answers come in while the
# next requests are sent.
WINDOW = 64

_SEQUENCE, _SET, _OCTETS, _INTEGER, _ENUMERATED, _BOOLEAN = 0x30, 0x31, 0x04, 0x02, 0x0A, 0x01
_MODIFY_REQUEST = 0x66  # [APPLICATION 6], constructed
_SEARCH_REQUEST = 0x63  # [APPLICATION 3], constructed
_OR, _EQUALITY = 0xA1, 0xA3  # Filter choices or [1] and equalityMatch [3], constructed
_ENTRY, _DONE, _REFERENCE = 4, 5, 19  # searchResEntry, searchResDone, searchResRef (application tag numbers)
_WHOLE_SUBTREE, _DEREF_ALWAYS = 2, 3  # as ldap3's Connection.search sends them by default
_SCOPES = {ldap3.BASE: 0, ldap3.LEVEL: 1, ldap3.SUBTREE: _WHOLE_SUBTREE}
_CONTROLS = 0xA0  # LDAPMessage controls [0], constructed
PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"  # RFC 2696
_OPERATIONS = {ldap3.MODIFY_ADD: 0, ldap3.MODIFY_DELETE: 1, ldap3.MODIFY_REPLACE: 2, ldap3.MODIFY_INCREMENT: 3}
_NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"  # RFC 4511 §4.4.1, sent with message ID 0


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def _integer(tag: int, value: int) -> bytes:
    # Non-negative only (message IDs and operation codes): the shortest two's complement form.
    return _tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _octets(value: str | bytes) -> bytes:
    return _tlv(_OCTETS, value.encode("utf-8") if isinstance(value, str) else bytes(value))


def encode_modify(message_id: int, dn: str, changes: dict[str, Sequence[tuple[Any, Iterable[str | bytes]]]]) -> bytes:
    """The LDAPMessage carrying a ModifyRequest of ``changes`` (ldap3's form: name -> [(operation, values)], values
    already str or bytes, as modify.encode_changes leaves them) to ``dn``."""
    items = []
    for name, operations in changes.items():
        for operation, values in operations:
            attribute = _tlv(_SEQUENCE, _octets(name) + _tlv(_SET, b"".join(_octets(value) for value in values)))
            items.append(_tlv(_SEQUENCE, _integer(_ENUMERATED, _OPERATIONS[operation]) + attribute))
    request = _tlv(_MODIFY_REQUEST, _octets(dn) + _tlv(_SEQUENCE, b"".join(items)))
    return _tlv(_SEQUENCE, _integer(_INTEGER, message_id) + request)


def send_modifies(connection: ldap3.Connection, requests: Sequence[tuple[str, dict]], answers: dict[int, dict]) -> None:
    """Send ``requests`` (DN, changes) on ``connection``, at most WINDOW unanswered, and put each answer (ldap3's
    result dict: result, description, message, ...) into ``answers`` by the request's index as it arrives, so that
    when a broken connection raises midway the caller knows which requests were answered. Raises ldap3's
    communication errors as they come (the socket is then closed by ldap3)."""
    waiting: dict[int, int] = {}  # message ID -> index
    for index, (dn, changes) in enumerate(requests):
        message_id = connection.server.next_message_id()
        waiting[message_id] = index
        _send(connection, encode_modify(message_id, dn, changes))
        while len(waiting) >= WINDOW:
            _receive(connection, waiting, answers)
    while waiting:
        _receive(connection, waiting, answers)


def _send(connection: ldap3.Connection, message: bytes) -> None:
    try:
        connection.socket.sendall(message)
    except OSError as error:
        connection.strategy.close()
        raise LDAPSocketSendError(f"error sending data: {error}") from None


def _messages(strategy) -> list[dict[str, Any]]:
    """The next whole messages from the socket, decoded (at least one; none means the server closed it)."""
    messages = strategy.receiving()
    if not messages:
        strategy.close()
        raise LDAPSocketReceiveError("the directory closed the connection")
    return [decode_message_fast(message) for message in messages]


def _receive(connection: ldap3.Connection, waiting: dict[int, int], answers: dict[int, dict]) -> None:
    strategy = connection.strategy
    for decoded in _messages(strategy):
        message_id = int(decoded["messageID"])
        if message_id not in waiting:
            _unexpected(strategy, decoded)
        answers[waiting.pop(message_id)] = strategy.decode_response_fast(decoded)


# -- searches -----------------------------------------------------------------------------------------------------


def or_of_equalities(attribute: str, values: Sequence[bytes]) -> bytes:
    """The Filter ``(|(attribute=value)...)`` in BER, values as raw bytes (no escaping: nothing is parsed)."""
    return _tlv(_OR, b"".join(_tlv(_EQUALITY, _octets(attribute) + _octets(value)) for value in values))


def filter_ber(connection: ldap3.Connection, search_filter: str) -> bytes:
    """An LDAP filter string in BER, parsed as ldap3's Connection.search parses it (once per search, not per page)."""
    parsed = parse_filter(search_filter, None, connection.auto_escape, connection.auto_encode, None, False)
    return ber_encoder.encode(compile_filter(parsed.elements[0]))


def encode_search(
    message_id: int,
    base: str,
    search_filter: bytes,
    attributes: Sequence[str],
    *,
    scope: str = ldap3.SUBTREE,
    paged: tuple[int, bytes] | None = None,
) -> bytes:
    """The LDAPMessage carrying a SearchRequest for ``attributes`` of the ``scope`` under ``base`` that match
    ``search_filter`` (BER, as ``or_of_equalities`` or ``filter_ber`` builds it); no size or time limit beyond the
    server's. ``paged`` is (page size, cookie) for RFC 2696's control, not critical, as ldap3 sends it."""
    controls = b""
    if paged is not None:
        size, cookie = paged
        value = _tlv(_SEQUENCE, _integer(_INTEGER, size) + _octets(cookie))
        # criticality FALSE is the DEFAULT (RFC 4511 §4.1.11): left out, as ldap3 leaves it out
        controls = _tlv(_CONTROLS, _tlv(_SEQUENCE, _octets(PAGED_RESULTS_OID) + _octets(value)))
    request = (
        _octets(base)
        + _integer(_ENUMERATED, _SCOPES[scope])
        + _integer(_ENUMERATED, _DEREF_ALWAYS)
        + _integer(_INTEGER, 0)
        + _integer(_INTEGER, 0)
        + _tlv(_BOOLEAN, b"\x00")
        + search_filter
        + _tlv(_SEQUENCE, b"".join(_octets(name) for name in attributes))
    )
    return _tlv(_SEQUENCE, _integer(_INTEGER, message_id) + _tlv(_SEARCH_REQUEST, request) + controls)


def search_raw(
    connection: ldap3.Connection,
    base: str,
    search_filter: bytes,
    attributes: Sequence[str],
    *,
    scope: str = ldap3.SUBTREE,
    paged: tuple[int, bytes] | None = None,
) -> tuple[list[tuple[str, dict[str, list[bytes]]]], dict[str, Any]]:
    """Send one search and read its answer: each entry's DN and raw values by attribute name (in the letter case the
    server sent), references left out, and the searchResDone's result (ldap3's dict: result, description,
    message, controls ...). Raises ldap3's communication errors as ``send_modifies`` does."""
    strategy = connection.strategy
    message_id = connection.server.next_message_id()
    _send(connection, encode_search(message_id, base, search_filter, attributes, scope=scope, paged=paged))
    entries: list[tuple[str, dict[str, list[bytes]]]] = []
    while True:
        messages = strategy.receiving()
        if not messages:
            strategy.close()
            raise LDAPSocketReceiveError("the directory closed the connection")
        for message in messages:
            entry = decode_entry(message, message_id)
            if entry is not None:
                entries.append(entry)
                continue
            decoded = decode_message_fast(message)
            if int(decoded["messageID"]) != message_id:
                _unexpected(strategy, decoded)
            operation = decoded["protocolOp"]
            if operation == _DONE:
                return entries, strategy.decode_response_fast(decoded)
            if operation != _REFERENCE:
                strategy.close()
                raise LDAPSocketReceiveError(f"the directory answered a search with operation {operation}")


def _length_at(data: bytes, at: int) -> tuple[int, int]:
    """The BER length whose first octet is at ``at``, and where its content starts."""
    first = data[at]
    if first < 0x80:
        return first, at + 1
    size = first & 0x7F
    return int.from_bytes(data[at + 1 : at + 1 + size], "big"), at + 1 + size


def decode_entry(message: bytes, message_id: int) -> tuple[str, dict[str, list[bytes]]] | None:
    """The DN and raw values of a SearchResultEntry (RFC 4511 §4.5.2) answering ``message_id``; None for any other
    message, which the caller decodes through ldap3. Reads the octets directly: ldap3's general decoder builds a
    tuple per element and cost a tenant-wide read about a second per 10,000 entries."""
    try:
        whole, at = _length_at(message, 1)  # the LDAPMessage SEQUENCE
        if at + whole != len(message) or message[at] != _INTEGER:
            return None  # not one whole message
        size, at = _length_at(message, at + 1)
        if int.from_bytes(message[at : at + size], "big") != message_id or message[at + size] != 0x64:
            return None  # another message's answer, or not [APPLICATION 4]
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
                    return None  # a value running past its set
                found.append(message[at : at + size])
                at += size
            values[name] = found
            at = after
        return dn, values
    except (IndexError, UnicodeDecodeError):
        return None  # not what it seemed: ldap3's decoder reads it and says what it is


def _unexpected(strategy, decoded: dict) -> None:
    """An answer to no request of ours: the server ending the session, or a stream out of step. Either way the
    connection is closed and the caller reconnects."""
    strategy.close()
    answer = strategy.decode_response_fast(decoded) if decoded["protocolOp"] == 24 else {}
    if answer.get("responseName") == _NOTICE_OF_DISCONNECTION:
        raise LDAPSocketReceiveError(f"the directory ended the session: {answer.get('message', '')}".strip())
    raise LDAPSocketReceiveError(f"the directory answered message {decoded['messageID']}, which was not sent here")
