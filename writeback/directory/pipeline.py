"""Many modifies on one connection without waiting for each answer: what a writeback batch sends between its reads.

RFC 4511 §4.1.1.1 lets a client send further requests before the earlier ones are answered, and the server may
answer them in any order; responses are matched to requests by message ID. ldap3's synchronous strategy waits for
each answer and refuses one that belongs to another request, so a batch of modifies costs a round trip each and
leaves the worker idle while the directory works. Here the requests go out WINDOW at a time and their answers are
collected by message ID as they come.

The requests are encoded here (RFC 4511 §4.6 ModifyRequest in BER, definite lengths) rather than through ldap3's
pyasn1 objects, which cost about half a modify's client CPU; tests/writeback/test_directory_pipeline.py checks the
bytes against ldap3's own encoding. The socket, its TLS, its timeouts and the reading of whole messages stay
ldap3's (``strategy.receiving``, ``decode_message_fast``); message IDs come from ldap3's counter, so they never
collide with the connection's other requests.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPSocketReceiveError, LDAPSocketSendError
from ldap3.utils.asn1 import decode_message_fast

# At most this many modifies unanswered at once: a few dozen kilobytes on the wire, and answers come in while the
# next requests are sent.
WINDOW = 64

_SEQUENCE, _SET, _OCTETS, _INTEGER, _ENUMERATED = 0x30, 0x31, 0x04, 0x02, 0x0A
_MODIFY_REQUEST = 0x66  # [APPLICATION 6], constructed
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
        _send(connection, message_id, dn, changes)
        while len(waiting) >= WINDOW:
            _receive(connection, waiting, answers)
    while waiting:
        _receive(connection, waiting, answers)


def _send(connection: ldap3.Connection, message_id: int, dn: str, changes: dict) -> None:
    try:
        connection.socket.sendall(encode_modify(message_id, dn, changes))
    except OSError as error:
        connection.strategy.close()
        raise LDAPSocketSendError(f"error sending data: {error}") from None


def _receive(connection: ldap3.Connection, waiting: dict[int, int], answers: dict[int, dict]) -> None:
    strategy = connection.strategy
    messages = strategy.receiving()
    if not messages:
        strategy.close()
        raise LDAPSocketReceiveError("the directory closed the connection")
    for message in messages:
        decoded = decode_message_fast(message)
        message_id = int(decoded["messageID"])
        answer = strategy.decode_response_fast(decoded)
        if message_id == 0 and answer.get("responseName") == _NOTICE_OF_DISCONNECTION:
            strategy.close()
            raise LDAPSocketReceiveError(f"the directory ended the session: {answer.get('message', '')}".strip())
        if message_id not in waiting:
            strategy.close()
            raise LDAPSocketReceiveError(f"the directory answered message {message_id}, which was not sent here")
        answers[waiting.pop(message_id)] = answer
