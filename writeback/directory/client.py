"""Active Directory over LDAP (ldap3): the client jobs and commands use, and value escaping.

``DirectoryClient`` keeps one bound connection (``writeback.directory.connection.connect``), opened on first use
and reused; pages through searches as generators; looks users up by objectGUID and mS-DS-ConsistencyGuid through
escaped binary filters; reads the Exchange attributes into Python types; and ``apply_desired`` reads, plans the
minimal modify (``writeback.directory.modify.plan_modify``), writes only what differs and re-plans when the
entry changed underneath. Failures raise ``DirectoryRetryable`` or ``DirectoryPermanent``
(``writeback.directory.errors``).
"""

import contextlib
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_bytes, escape_filter_chars

from writeback.directory.connection import DirectoryConfig, close_quietly, connect
from writeback.directory.errors import (
    DirectoryConflict,
    DirectoryError,
    DirectoryInconsistentEntry,
    DirectoryNotFound,
    DirectoryPermanent,
    DirectoryRetryable,
    error_for_exception,
    error_for_result,
    is_connection_error,
)
from writeback.directory.modify import (
    EXCHANGE_LDAP_ATTRIBUTES,
    Changes,
    InconsistentValues,
    encode_changes,
    normalise_entry,
    plan_modify,
)
from writeback.directory.pipeline import PAGED_RESULTS_OID, filter_ber, search_raw, send_modifies

logger = logging.getLogger(__name__)

# The people among AD's objects. objectClass=user also matches computers (AD's computer class derives from user),
# so ask for sAMAccountType SAM_NORMAL_USER_ACCOUNT (MS-ADA3 2.223), which only a person's account carries, and
# an Exchange recipient type. AD's usual (objectCategory=person) works only because a domain controller expands the
# short name "person" to the category's DN; slapd (the sandbox) has no such expansion, so this filter serves both.
AD_USER_FILTER = "(&(sAMAccountType=805306368)(msExchRecipientTypeDetails=*))"
# Stored as raw bytes in the entries the client returns: the 16 bytes as AD holds them (ImmutableId is their
# base64), not ldap3's "{uuid}" rendering.
BINARY_GUID_ATTRIBUTES = ("objectGUID", "mS-DS-ConsistencyGuid")
_BINARY_GUIDS_LOWER = frozenset(name.lower() for name in BINARY_GUID_ATTRIBUTES)
IDENTITY_LDAP_ATTRIBUTES = (*BINARY_GUID_ATTRIBUTES, "sAMAccountName", "userPrincipalName", "displayName")
# A conflicting concurrent edit on every attempt means something keeps rewriting the entry: stop and report.
MAX_PLAN_ATTEMPTS = 3


# -- escaping -----------------------------------------------------------------------------------------------------


def escape_dn_value(value: str) -> str:
    """Escape one attribute value for use inside a DN (RFC 4514), e.g. ``f"CN={escape_dn_value(name)},{ou}"``.

    Unlike ldap3's ``escape_rdn`` this writes NUL as ``\\00`` (RFC 4514 has no backslash-NUL pair), escapes
    ``#`` everywhere and leading or trailing spaces as ``\\20``, so that strict parsers (ldap3's own among
    them) accept the DNs it builds.
    """
    if not value:
        raise ValueError("A DN attribute value cannot be empty.")
    out = ["\\00" if ch == "\0" else "\\" + ch if ch in '\\,+"<>;=#' else ch for ch in value]
    if out[0] == " ":
        out[0] = "\\20"
    if out[-1] == " ":
        out[-1] = "\\20"
    return "".join(out)


def equality_filter(attribute: str, value: str | bytes) -> str:
    """``(attribute=value)`` with the value escaped: text per RFC 4515, binary values byte by byte."""
    if not attribute.replace("-", "").replace(";", "").isalnum():
        raise ValueError(f"{attribute!r} is not an attribute name.")
    escaped = escape_bytes(value) if isinstance(value, bytes) else escape_filter_chars(value)
    return f"({attribute}={escaped})"


# -- the client ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _unchecked(connection: ldap3.Connection, unchecked: bool) -> Iterator[None]:
    """ldap3's schema checks off for one request (``check_names`` is read while the request is built and while its
    answer is decoded, both within the call). They cost a writeback batch about a tenth of its LDAP CPU."""
    if not unchecked:
        yield
        return
    before, connection.check_names = connection.check_names, False
    try:
        yield
    finally:
        connection.check_names = before


def _entry(item: dict[str, Any]) -> dict[str, Any]:
    """An ldap3 search result item as ``{"dn", "attributes"}``, GUID attributes as their raw 16 bytes."""
    attributes = dict(item["attributes"])
    raw_by_lower = {name.lower(): values for name, values in item["raw_attributes"].items()}
    for name in list(attributes):
        if name.lower() in _BINARY_GUIDS_LOWER:
            raw = raw_by_lower.get(name.lower()) or []
            attributes[name] = raw[0] if raw else None
    return {"dn": item["dn"], "attributes": attributes, "raw_attributes": item["raw_attributes"]}


class DirectoryClient:
    """A long-lived, reconnecting client for one directory, for jobs and commands.

        with DirectoryClient(DirectoryConfig.from_settings()) as directory:
            observed, changes = directory.apply_desired(guid, {"extensionAttribute1": "CC-42"})

    The connection is opened and bound on first use and reused afterwards. When it turns out to be broken
    (the server restarted, an idle timeout dropped it, a load balancer cut it), the client reconnects and sends
    the request once more; a second failure raises DirectoryRetryable. A resent write may find that its first
    attempt had been applied after all: apply_desired re-reads and re-plans in that case.

    Threads: every request holds the client's lock, so sharing one client is safe but serialises the threads on
    one connection; give each worker thread its own client. After a fork (RQ's work horse) the child never uses
    the parent's socket: it opens its own connection.

    ``requests`` counts the LDAP requests sent by kind ("bind", "search", "modify"); tests and benchmarks use
    it to check what a call did on the wire.
    """

    def __init__(self, config: DirectoryConfig):
        self.config = config
        self.requests: Counter[str] = Counter()
        self._connection: ldap3.Connection | None = None
        self._pid = os.getpid()
        self._generation = 0  # bumped on every new connection: a paged search cannot survive a reconnect
        self._lock = threading.RLock()
        self._tracking: tuple[str, str] | None = None
        self._busy = False  # a request is on the wire: nothing else may use the connection, not even a finalizer

    def __repr__(self) -> str:
        state = "connected" if self._connection is not None else "not connected"
        return f"<DirectoryClient {self.config.url} as {self.config.bind_dn} ({state})>"

    def __enter__(self) -> "DirectoryClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Unbind and drop the connection; the next request opens a new one."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                close_quietly(self._connection)
            self._connection = None

    # -- plumbing ---------------------------------------------------------------------------------------------------

    def _open(self) -> ldap3.Connection:
        if self._pid != os.getpid():
            # A forked child shares the parent's socket: never unbind it (that would end the parent's session).
            self._connection, self._pid = None, os.getpid()
        if self._connection is None or self._connection.closed:
            self._connection = connect(self.config, get_info=ldap3.SCHEMA)
            self.requests["bind"] += 1  # successful binds: a refused TCP connection sent none
            self._generation += 1
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            close_quietly(self._connection)
        self._connection = None

    def _call(
        self, kind: str, target: str, request: Callable[[ldap3.Connection], Any], *, resend: bool = True
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Send one request (reconnecting and resending once when the connection broke); return result, response."""
        with self._lock:
            for attempt in (1, 2):
                connection = self._open()
                self.requests[kind] += 1
                try:
                    self._busy = True
                    request(connection)
                except LDAPException as exc:
                    self._drop()
                    if resend and attempt == 1 and is_connection_error(exc):
                        logger.warning("Directory connection to %s broke (%s); reconnecting.", self.config.url, exc)
                        continue
                    raise error_for_exception(exc, operation=kind, target=target, url=self.config.url) from None
                finally:
                    self._busy = False
                result = dict(connection.result or {})
                if result.get("result") != 0:
                    error = error_for_result(result, operation=kind, target=target)
                    if isinstance(error, DirectoryRetryable):
                        self._drop()  # a busy or departing server: the next attempt may land on a healthier one
                    raise error
                return result, list(connection.response or [])
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reading ----------------------------------------------------------------------------------------------------

    def paged_search(
        self,
        base: str,
        search_filter: str,
        attributes: Sequence[str] | None = None,
        page_size: int = 500,
        *,
        scope: str = ldap3.SUBTREE,
        raw: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Yield ``{"dn", "attributes", "raw_attributes"}`` for every entry matching, fetching one page at a time.

        Memory holds one page whatever the result size. Values of ``search_filter`` must already be escaped
        (``equality_filter``, ``escape_filter_chars``). ``attributes`` default to none but the DN ("1.1").
        A connection that breaks on the first page is reopened transparently; after that the server's paging
        cookie is lost with it, so DirectoryRetryable asks the caller to run the search again.

        ``raw`` yields ``{"dn", "raw_attributes"}`` only, each attribute's values as the bytes the server sent, keyed
        by the name as asked for in ``attributes``: the request is encoded and the answer read by
        writeback.directory.pipeline, without ldap3's schema checks and per-value conversion, which cost a
        tenant-wide read most of its time (bench/bench_inventory.py).
        """
        wanted = list(attributes) if attributes else ["1.1"]
        cookie: bytes | None = None
        generation = None
        asked = {name.lower(): name for name in wanted}
        compiled: list[bytes] = []  # the filter in BER, once the connection that parses it is open
        try:
            while True:
                if generation is not None and generation != self._generation:
                    raise DirectoryRetryable(
                        f"search {base} failed: the connection was re-established during a paged search; run it again.",
                        operation="search",
                        target=base,
                    )

                def request(connection: ldap3.Connection, cookie: bytes | None = cookie) -> None:
                    if not raw:
                        connection.search(
                            base, search_filter, scope, attributes=wanted, paged_size=page_size, paged_cookie=cookie
                        )
                        return
                    if not compiled:
                        compiled.append(filter_ber(connection, search_filter))
                    paged = (page_size, cookie or b"")
                    connection.response, connection.result = search_raw(
                        connection, base, compiled[0], wanted, scope=scope, paged=paged
                    )

                cookie = None  # until the server hands out the next one
                result, response = self._call("search", base, request, resend=generation is None)
                generation = self._generation
                controls = result.get("controls") or {}
                cookie = ((controls.get(PAGED_RESULTS_OID) or {}).get("value") or {}).get("cookie") or None
                if raw:
                    for dn, values in response:
                        yield {"dn": dn, "raw_attributes": {asked.get(n.lower(), n): v for n, v in values.items()}}
                else:
                    for item in response:
                        if item.get("type") == "searchResEntry":
                            yield _entry(item)
                del response
                if cookie is None:
                    return
        finally:
            if cookie is not None and generation == self._generation:
                self._abandon_paged_search(base, search_filter, scope, cookie)

    def _abandon_paged_search(self, base: str, search_filter: str, scope: str, cookie: bytes) -> None:
        """Tell the server a paged search that was not read to the end is over (RFC 2696: page size 0).

        Servers keep the state of every open paged search (AD counts it against MaxResultSetSize per connection),
        which adds up in a long-lived worker. Best effort: this also runs when a generator is garbage-collected,
        possibly in the middle of another request on the same thread, so it never waits and never raises.
        """
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._busy or self._connection is None:
                return

            def request(connection: ldap3.Connection) -> None:
                connection.search(base, search_filter, scope, attributes=["1.1"], paged_size=0, paged_cookie=cookie)

            with contextlib.suppress(DirectoryError):
                self._call("search", base, request, resend=False)
        finally:
            self._lock.release()

    def search(
        self,
        base: str,
        search_filter: str,
        attributes: Sequence[str] | None = None,
        *,
        scope: str = ldap3.SUBTREE,
        raw_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Every matching entry in one unpaged request: for lookups that match a handful of entries.

        Cheaper than a paged search (no control, one round trip), but AD caps an unpaged result at MaxPageSize
        (1000) entries: list anything larger with ``paged_search``. ``raw_only``: the caller reads only
        ``raw_attributes`` (and the GUIDs), so ldap3 neither checks the names against the schema nor formats the
        values by their syntax (``attributes`` then hold text, or bytes where a value is not UTF-8).
        """
        wanted = list(attributes) if attributes else ["1.1"]

        def request(connection: ldap3.Connection) -> None:
            with _unchecked(connection, raw_only):
                connection.search(base, search_filter, scope, attributes=wanted)

        _, response = self._call("search", base, request)
        return [_entry(item) for item in response if item.get("type") == "searchResEntry"]

    def search_raw(
        self, base: str, search_filter: bytes, attributes: Sequence[str]
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        """``search`` for a filter already in BER (writeback.directory.pipeline.or_of_equalities), each entry as its
        DN and the raw values of each attribute the server sent (names in its letter case): for the writeback
        batch's reads, which need nothing else and pay for nothing else. Unchecked and unpaged, like
        ``search(raw_only=True)``."""

        def request(connection: ldap3.Connection) -> None:
            connection.response, connection.result = search_raw(connection, base, search_filter, attributes)

        _, response = self._call("search", base, request)
        return response

    def _find_one(self, search_filter: str, what: str, attributes: Iterable[str] | None) -> dict[str, Any] | None:
        wanted = list(attributes) if attributes is not None else [*IDENTITY_LDAP_ATTRIBUTES, *EXCHANGE_LDAP_ATTRIBUTES]
        found = self.search(self.config.base_dn, search_filter, wanted)
        if len(found) > 1:
            raise DirectoryPermanent(
                f"{what} matches {len(found)} entries under {self.config.base_dn}; it should be unique.",
                operation="search",
                target=self.config.base_dn,
            )
        return found[0] if found else None

    def find_by_guid(self, guid: uuid.UUID, attributes: Iterable[str] | None = None) -> dict[str, Any] | None:
        """The entry whose objectGUID is ``guid`` (matched on its little-endian bytes, as AD stores it), or None."""
        return self._find_one(equality_filter("objectGUID", guid.bytes_le), f"objectGUID {guid}", attributes)

    def find_by_consistency_guid(
        self, anchor: uuid.UUID | bytes, attributes: Iterable[str] | None = None
    ) -> dict[str, Any] | None:
        """The entry whose mS-DS-ConsistencyGuid holds ``anchor`` (a GUID, stored little-endian, or 16 raw bytes)."""
        raw = anchor.bytes_le if isinstance(anchor, uuid.UUID) else bytes(anchor)
        search_filter = equality_filter("mS-DS-ConsistencyGuid", raw)
        return self._find_one(search_filter, f"mS-DS-ConsistencyGuid {raw.hex()}", attributes)

    def find_by_attribute(
        self, attribute: str, value: str | bytes, attributes: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Every entry under the base DN whose ``attribute`` equals ``value`` (escaped: no filter injection)."""
        wanted = list(attributes) if attributes is not None else list(IDENTITY_LDAP_ATTRIBUTES)
        return list(self.paged_search(self.config.base_dn, equality_filter(attribute, value), wanted))

    def _read_exchange(self, guid: uuid.UUID) -> tuple[str, dict[str, Any]]:
        entry = self.find_by_guid(guid, EXCHANGE_LDAP_ATTRIBUTES)
        if entry is None:
            raise DirectoryNotFound(
                f"No directory entry under {self.config.base_dn} has objectGUID {guid}.",
                operation="search",
                target=self.config.base_dn,
            )
        return entry["dn"], normalise_entry(entry["raw_attributes"])

    def read_exchange_attributes(self, guid: uuid.UUID) -> dict[str, Any]:
        """Every Exchange attribute of the user with this objectGUID, normalised; DirectoryNotFound if none.

        Lists for multi-valued attributes (``[]`` when absent), ``None`` for an absent single-valued one, bool
        for msExchHideFromAddressLists, int for the recipient type attributes.
        """
        return self._read_exchange(guid)[1]

    # -- change tracking (AD: uSNChanged / highestCommittedUSN; OpenLDAP: entryCSN / contextCSN) --------------

    def _change_tracking(self) -> tuple[str, str]:
        if self._tracking is None:
            with self._lock:
                schema = self._open().server.schema
            ad = schema is not None and "uSNChanged" in schema.attribute_types
            self._tracking = ("uSNChanged", "highestCommittedUSN") if ad else ("entryCSN", "contextCSN")
        return self._tracking

    def change_mark_name(self) -> str:
        """What the change mark is on this server: "highestCommittedUSN" on AD, "contextCSN" on OpenLDAP."""
        return self._change_tracking()[1]

    def change_mark(self) -> str | None:
        """The directory's current change high-water mark as an opaque string (None if the server has none).

        Read it before a full read; later, ``changed_since_filter(filter, mark)`` finds what changed since.
        """
        change_attribute, mark_attribute = self._change_tracking()
        # AD keeps highestCommittedUSN on the root DSE, outside the schema ldap3 checks names against ("*" it is);
        # OpenLDAP keeps contextCSN on the suffix entry.
        base, wanted = ("", ["*"]) if change_attribute == "uSNChanged" else (self.config.base_dn, [mark_attribute])
        found = self.search(base, "(objectClass=*)", wanted, scope=ldap3.BASE)
        if not found:
            return None
        raw = {name.lower(): values for name, values in found[0]["raw_attributes"].items()}.get(mark_attribute.lower())
        return max(value.decode("utf-8") for value in raw) if raw else None

    def root_dse(self) -> dict[str, list[str]]:
        """The root DSE: attribute names in lower case, values as text. Anyone bound may read it.

        Asks for "*" and "+": AD returns its root DSE attributes (dsServiceName, highestCommittedUSN,
        namingContexts...) for "*", OpenLDAP its own (namingContexts, contextCSN on the suffix) only for "+"; a server
        ignores what it does not know (RFC 4511 4.5.1.8).
        """
        found = self.search("", "(objectClass=*)", ["*", "+"], scope=ldap3.BASE)
        if not found:
            return {}
        return {
            name.lower(): [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
            for name, values in found[0]["raw_attributes"].items()
        }

    def server_identity(self, root_dse: Mapping[str, list[str]] | None = None) -> str:
        """Which directory server answers, as a string to record with a change mark ("" when it does not say).

        On AD: the root DSE's dsServiceName (the DN of the answering DC's NTDS Settings object) and that object's
        invocationId, which changes when the DC's database is restored, so a mark from before a restore is not
        trusted either (MS-ADTS 3.1.1.3.2.3; MS-DRSR 5.1 "USN", invocationId). USNs are per DC: a mark read from one
        DC means nothing on another, which a DNS name that round-robins between DCs would otherwise hide.
        """
        dse = self.root_dse() if root_dse is None else root_dse
        service = (dse.get("dsservicename") or [""])[0]
        if not service:
            return ""
        invocation = self._invocation_id(service)
        return f"{service} invocationId={invocation}" if invocation else service

    def _invocation_id(self, service_dn: str) -> str | None:
        if self._change_tracking()[0] != "uSNChanged":
            return None  # the sandbox names a DC but keeps no NTDS Settings objects
        try:
            found = self.search(service_dn, "(objectClass=*)", ["*"], scope=ldap3.BASE)
        except DirectoryNotFound:
            return None
        raw = {name.lower(): values for name, values in (found[0]["raw_attributes"] if found else {}).items()}
        value = (raw.get("invocationid") or [b""])[0]
        return str(uuid.UUID(bytes_le=value)) if len(value) == 16 else None

    def changed_since_filter(self, search_filter: str, mark: str) -> str:
        """``search_filter`` narrowed to entries changed after ``mark`` (from ``change_mark``).

        LDAP has no ">", so it is ">= mark and not = mark": an entry stamped with the mark itself was changed
        before the mark was read, so the read that followed the mark has already seen it.
        """
        change_attribute, _ = self._change_tracking()
        value = escape_filter_chars(mark)
        return f"(&{search_filter}({change_attribute}>={value})(!({change_attribute}={value})))"

    # -- writing ----------------------------------------------------------------------------------------------------

    def modify(self, dn: str, changes: Changes, *, checked: bool = True) -> None:
        """Apply an ldap3 ``changes`` dict (from plan_modify) to ``dn`` in one atomic LDAP modify.

        Nothing is sent when ``changes`` is empty. If the connection breaks, the modify is resent once on a new
        connection; when the first one had in fact been applied, the resend fails with DirectoryConflict.
        ``checked=False`` skips ldap3's own check of the names against the schema and of the DN's form, for a DN
        the directory just returned and names from the attribute map: the directory still refuses a name it does
        not know.
        """
        if not changes:
            return
        encoded = encode_changes(changes)

        def request(connection: ldap3.Connection) -> None:
            with _unchecked(connection, not checked):
                connection.modify(dn, encoded)

        self._call("modify", dn, request)

    def modify_many(self, writes: Sequence[tuple[str, Changes]]) -> list[DirectoryError | None]:
        """``modify`` for each (DN, changes), sent without waiting for each answer (writeback.directory.pipeline);
        one entry per write, in order: None when applied (or nothing to send), else the directory's error for it.

        Like ``modify``, unchecked against ldap3's schema (DNs as the directory returned them, names from the
        attribute map), each write atomic on its own, and a broken connection reconnected once: the writes left
        unanswered are sent again, and one that had been applied after all answers as ``modify`` would (a
        conflict, or a harmless replace). When the second connection breaks too, every write still unanswered
        gets the retryable error.
        """
        results: list[DirectoryError | None] = [None] * len(writes)
        pending = [index for index, (_dn, changes) in enumerate(writes) if changes]
        with self._lock:
            for attempt in (1, 2):
                if not pending:
                    break
                try:
                    connection = self._open()
                except DirectoryError as error:  # unreachable, or the bind refused: every write still to send
                    for index in pending:
                        results[index] = error
                    break
                requests = [(writes[index][0], encode_changes(writes[index][1])) for index in pending]
                answers: dict[int, dict[str, Any]] = {}
                self.requests["modify"] += len(requests)
                try:
                    self._busy = True
                    send_modifies(connection, requests, answers)
                except LDAPException as exc:
                    self._drop()
                    failed = exc
                else:
                    failed = None
                finally:
                    self._busy = False
                for position, answer in answers.items():
                    index = pending[position]
                    if answer.get("result") != 0:
                        results[index] = error_for_result(answer, operation="modify", target=writes[index][0])
                pending = [index for position, index in enumerate(pending) if position not in answers]
                if failed is None:
                    break
                if attempt == 1 and is_connection_error(failed):
                    logger.warning("Directory connection to %s broke (%s); reconnecting.", self.config.url, failed)
                    continue
                for index in pending:
                    results[index] = error_for_exception(
                        failed, operation="modify", target=writes[index][0], url=self.config.url
                    )
                break
            if any(isinstance(error, DirectoryRetryable) for error in results):
                self._drop()  # a busy or departing server: the next request may land on a healthier one
        return results

    def apply_desired(
        self, guid: uuid.UUID, desired: Mapping[str, Any], *, verify: bool = True
    ) -> tuple[dict[str, Any], Changes]:
        """Bring the user's Exchange attributes to ``desired`` with the fewest LDAP operations. Safe to re-run.

        Reads first and writes only what differs (nothing at all when AD already holds ``desired``). When the
        modify conflicts with the entry as it now is (someone edited it since the read, or a resent modify had
        already been applied), it re-reads and re-plans. ``verify`` re-reads after the write and re-plans until
        nothing differs. Returns the values observed before any write and the changes between those and
        ``desired`` (``{}`` when nothing was written); the caller records both, and reports as drift a
        difference between ``observed`` and what it last knew of AD. ``write`` also returns the read-back.
        """
        written = self.write(guid, desired, verify=verify)
        return written.observed, written.changes

    def write(
        self,
        guid: uuid.UUID,
        desired: Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]],
        *,
        verify: bool = True,
    ) -> "Written":
        """``apply_desired``, returning the entry as read back as well (``Written``).

        ``desired`` may be a function of the entry as read (called after every read, before any modify is
        planned), for values that depend on what AD holds (a value the caller must leave as it is) or for a check
        just before writing; an exception it raises stops the write. With ``verify`` the last read is the
        read-back after the write (one search, read, modify, search, when nothing interferes); without it, or when
        nothing was written, ``read_back`` is the first read.
        """
        want = desired if callable(desired) else (lambda _observed: desired)
        dn, observed = self._read_exchange(guid)
        first, first_desired = observed, want(observed)
        wanted = first_desired
        for _attempt in range(MAX_PLAN_ATTEMPTS):
            changes = _plan(dn, observed, wanted)
            if not changes:
                return Written(dn, first, _plan(dn, first, first_desired), observed)
            try:
                self.modify(dn, changes)
            except DirectoryConflict as exc:
                logger.info("Re-planning the modify of %s after a conflict: %s", dn, exc.diagnostic or exc)
            else:
                if not verify:
                    return Written(dn, first, _plan(dn, first, first_desired), first)
            dn, observed = self._read_exchange(guid)
            wanted = want(observed)
        if _plan(dn, observed, wanted):
            raise DirectoryConflict(
                f"modify {dn} failed: the entry still differs from the desired values after {MAX_PLAN_ATTEMPTS} "
                "attempts; something else keeps changing it.",
                operation="modify",
                target=dn,
            )
        return Written(dn, first, _plan(dn, first, first_desired), observed)


@dataclass(frozen=True)
class Written:
    """What ``DirectoryClient.write`` did to one entry: its DN, the Exchange attributes as first read
    (``observed``), the changes between those and the desired values (``{}``: nothing written) and the entry as
    last read (``read_back``)."""

    dn: str
    observed: dict[str, Any]
    changes: Changes
    read_back: dict[str, Any]


def _plan(dn: str, observed: Mapping[str, Any], desired: Mapping[str, Any]) -> Changes:
    """plan_modify, with a contradiction in what the entry holds reported as a permanent error naming the entry.

    Writing cannot fix it (deleting one of the two spellings is a decision about which address is primary), and
    trying again reads the same entry: the job fails the item and someone corrects the entry in AD.
    """
    try:
        return plan_modify(observed, desired)
    except InconsistentValues as exc:
        if exc.side != "observed":
            raise
        values = " and ".join(repr(value) for value in exc.values)
        raise DirectoryInconsistentEntry(
            f"{dn} holds {values} in {exc.attribute}: the same address both as primary and as secondary. Correct "
            "the entry in AD (keep one of the two), then try again.",
            attribute=exc.attribute,
            values=exc.values,
            operation="read",
            target=dn,
        ) from None
