"""Reading a source in a thread while the caller works on what was read before: the inventory's two sides.

An import's reads wait on the directory and on Exchange Online, and its merge waits on the database; done one after
the other, each waits for the others. ``ReadAhead`` keeps up to ``depth`` items of an iterator read ahead in
memory (the directory's next pages while the current one is merged). ``Spool`` reads a whole iterator of pages
in a thread (or a child process) as fast as its source gives them, into a temporary SQLite file, one row per item
(pickled), and hands them back in order when the caller gets to them:
Exchange Online is read during the directory pass, whose merge must come first. The directory pass takes the objects
its users name out of the spool by key as it goes (``take``), so most pairs are written once, whole; ``Held`` keeps,
on disk too, the users whose objects have not been read yet.

The thread and the child never touch the portal's database. An error in either is raised in the caller, at the point the
caller reaches it; ``close()`` (or leaving the ``with`` block) tells the thread to stop after the item it is
reading, and ends the child.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import pickle
import queue
import signal
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

_DONE = object()
# How long the caller waits, at most, for a thread to stop when it closes early: the item being read (one HTTP
# request, one LDAP page) is not interrupted, and the thread is a daemon, so a slow one does not hold the caller.
_JOIN_SECONDS = 5.0


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _handed_over(handed: queue.Queue) -> Iterator[Any]:
    """What a reader put in ``handed``, in order, until it is done; its error raised where it happened."""
    while True:
        item = handed.get()
        if item is _DONE:
            return
        if isinstance(item, _Failed):
            raise item.error
        yield item


class _Reader:
    """The thread and its stop flag, shared by both ways of reading ahead."""

    def __init__(self, name: str):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:  # pragma: no cover - replaced by each kind
        raise NotImplementedError

    def close(self) -> None:
        self.stopping.set()
        self._unblock()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(_JOIN_SECONDS)

    def _unblock(self) -> None:
        """Free a thread waiting to hand over an item."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ReadAhead(_Reader):
    """Iterate ``items`` with up to ``depth`` of them read ahead by a thread."""

    def __init__(self, items: Iterable[Any], *, depth: int, name: str = "read-ahead"):
        super().__init__(name)
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the caller, which raises it
            self._put(_Failed(error))
            return
        self._put(_DONE)

    def _unblock(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from _handed_over(self._queue)
        finally:
            self.close()


class Spool(_Reader):
    """Read every page ``source()`` gives now, into a temporary SQLite file; iterate them later, in order.

    Each item is stored as its own row, so that ``take(keys)`` can hand over, before their turn, the items whose
    ``key(item)`` is among ``keys``: the inventory's directory pass takes the Exchange objects its users name, which
    are then written once, whole, instead of once per side. Iterating gives what was not taken, in the order it was
    read: the source's own pages, or pages of ``page_size`` items when that is set.

    With ``process``, ``source`` runs in a child process (forked, so it needs nothing passed to it): the decoding of
    what it reads (JSON, for Exchange Online) then takes another core instead of sharing this process's GIL with the
    merge. The child makes its own connections (``source`` must not reuse the parent's sockets), stops when this
    process ends, and hands its items over through the file (SQLite's WAL lets this process read while the child
    writes), so the pipe between them carries only which rows each page filled.
    """

    def __init__(
        self,
        source: Callable[[], Iterable[Any]],
        *,
        name: str = "spool",
        process: bool = False,
        key: Callable[[Any], bytes | None] | None = None,
        page_size: int | None = None,
        pack: Callable[[Any], bytes] | None = None,
    ):
        super().__init__(name)
        self._source = source
        self._page_size = page_size
        self._dir = tempfile.TemporaryDirectory(prefix="soa-spool-")
        self.path = os.path.join(self._dir.name, "spool.sqlite3")
        _create(self.path)
        # Items packed otherwise than by pickle are read back only whole, by drain().
        self._writer = partial(_write_pages, path=self.path, key=key, pack=pack or _pack)
        self._ready: queue.Queue = queue.Queue()  # (first, last) rowid of each page written, then _DONE or _Failed
        self._taken = bytearray()  # one bit per row handed over by take()
        self.taken = 0
        self._closed_size: int | None = None
        self._child: multiprocessing.process.BaseProcess | None = None
        if process:
            context = multiprocessing.get_context("fork")
            self._receive, send = context.Pipe(duplex=False)
            self._child = context.Process(target=_child, args=(source, self._writer, send), name=name)
            self._child.start()
            send.close()
        # Opened after the fork: a SQLite connection must not cross one.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.thread.start()

    def _run(self) -> None:
        if self._child is not None:
            self._relay()
            return
        try:
            self._writer(self._source(), tell=self._ready.put, stopping=self.stopping)
        except BaseException as error:  # noqa: BLE001 - handed to the caller, which raises it
            self._ready.put(_Failed(error))
            return
        self._ready.put(_DONE)

    def _relay(self) -> None:
        """The child's messages, passed on to the caller as the thread's own would be."""
        try:
            while True:
                kind, *rest = self._receive.recv()
                if kind == "page":
                    self._ready.put(tuple(rest))
                elif kind == "error":
                    self._ready.put(_Failed(pickle.loads(rest[0])))  # noqa: S301 - from our own child
                    return
                else:
                    self._ready.put(_DONE)
                    return
        except (EOFError, OSError):
            child = self._child
            if child is not None:
                child.join(_JOIN_SECONDS)
            code = child.exitcode if child is not None else None
            self._ready.put(_Failed(RuntimeError(f"The reader process {self.thread.name} ended (exit code {code}).")))

    @property
    def finished(self) -> bool:
        """Whether the reader is done (or failed): everything it will ever spool is spooled."""
        return not self.thread.is_alive()

    def wait(self) -> None:
        """Until the reader is done (or failed)."""
        self.thread.join()

    def size(self) -> int:
        """Bytes the spool's files take on disk (their last size once the spool is closed)."""
        if self._closed_size is None:
            names = [self.path, f"{self.path}-wal"]
            return sum(os.path.getsize(name) for name in names if os.path.exists(name))
        return self._closed_size

    def has(self, keys: Iterable[bytes]) -> set[bytes]:
        """Which of ``keys`` the spool has read an item under so far (taken or not)."""
        return _keys_among(self._db, "SELECT DISTINCT key FROM items WHERE key IN ({marks})", keys)

    def _mark(self, rowid: int) -> bool:
        """Mark a row taken; False when it already was."""
        index, bit = divmod(rowid, 8)
        if index >= len(self._taken):
            self._taken.extend(bytes(index + 1 - len(self._taken) + 4096))
        if self._taken[index] & (1 << bit):
            return False
        self._taken[index] |= 1 << bit
        return True

    def _is_taken(self, rowid: int) -> bool:
        index, bit = divmod(rowid, 8)
        return index < len(self._taken) and bool(self._taken[index] & (1 << bit))

    def take(self, keys: Iterable[bytes]) -> dict[bytes, list[Any]]:
        """The items read so far under each of ``keys`` (in the order read), which iterating will no longer give.
        A key whose item has not been read yet is absent: that item arrives in its turn."""
        found: dict[bytes, list[Any]] = {}
        query = "SELECT rowid, key, data FROM items WHERE key IN ({marks}) ORDER BY rowid"
        for rowid, key, data in _rows_among(self._db, query, keys):
            if self._mark(rowid):
                found.setdefault(bytes(key), []).append(_unpack(data))
                self.taken += 1
        return found

    def __iter__(self) -> Iterator[Any]:
        try:
            pending: list[Any] = []
            for first, last in _handed_over(self._ready):
                rows = self._db.execute("SELECT rowid, data FROM items WHERE rowid BETWEEN ? AND ?", (first, last))
                page = [_unpack(data) for rowid, data in rows if not self._is_taken(rowid)]
                if self._page_size is None:
                    if page:
                        yield page
                    continue
                pending.extend(page)
                while len(pending) >= self._page_size:
                    yield pending[: self._page_size]
                    del pending[: self._page_size]
            if pending:
                yield pending
        finally:
            self.close()

    def drain(self) -> list[tuple[bytes | None, bytes]] | None:
        """The rows (key, packed item) of the pages read since the last call, without waiting and without unpacking
        them; None once the reader is done and everything was given. The reader's error is raised here. For a
        spool whose items go elsewhere whole (a spread import's SharedSpool); not to be mixed with iterating."""
        rows: list[tuple[bytes | None, bytes]] = []
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                return rows
            if item is _DONE:
                self._ready.put(_DONE)  # the next call says so too
                return rows or None
            if isinstance(item, _Failed):
                raise item.error
            first, last = item
            found = self._db.execute("SELECT key, data FROM items WHERE rowid BETWEEN ? AND ?", (first, last))
            rows.extend((bytes(key) if key is not None else None, bytes(data)) for key, data in found)

    def close(self) -> None:
        self.stopping.set()
        child = self._child
        if child is not None and child.is_alive():
            child.terminate()
            child.join(_JOIN_SECONDS)
        super().close()
        if not self.thread.is_alive():
            if self._closed_size is None:
                self._closed_size = self.size()
            self._db.close()
            self._dir.cleanup()
            if child is not None:
                self._receive.close()


class Held:
    """Items put aside on disk, each under a key, for later: the directory entries an import's directory pass leaves
    until their Exchange objects have been read. Only the creating thread uses it.

    An item put ``early`` may be given back as soon as an item under its key is in a spool (``ready``); the others
    only at the end, in the order put (``pages``). ``blocks`` are further keys that ``holds`` answers for."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="soa-held-")
        self._db = sqlite3.connect(os.path.join(self._dir.name, "held.sqlite3"), isolation_level=None)
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE items (rowid INTEGER PRIMARY KEY, key BLOB NOT NULL, data BLOB NOT NULL, "
            "early INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0)"
        )
        self._db.execute("CREATE INDEX items_key ON items (key)")
        self._db.execute("CREATE INDEX items_waiting ON items (early, done)")  # ready() visits only the waiting
        self._db.execute("CREATE TABLE blocks (key BLOB NOT NULL)")
        self._db.execute("CREATE INDEX blocks_key ON blocks (key)")
        self._attached: str | None = None
        self.count = 0
        self.early = 0
        self.given_early = 0

    def put(self, items: list[tuple[bytes, Any, bool]], blocks: Iterable[bytes] = ()) -> None:
        rows = [(key, _pack(item), early) for key, item, early in items]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO items (key, data, early) VALUES (?, ?, ?)", rows)
        self._db.executemany("INSERT INTO blocks (key) VALUES (?)", [(key,) for key in blocks])
        self._db.execute("COMMIT")
        self.count += len(rows)
        self.early += sum(1 for _, _, early in items if early)

    def savepoint(self) -> tuple[int, int, int, int]:
        """Where the store stands, for ``rollback``: a page merged again after its transaction failed puts its
        users aside again, not twice."""
        items = self._db.execute("SELECT coalesce(max(rowid), 0) FROM items").fetchone()[0]
        blocks = self._db.execute("SELECT coalesce(max(rowid), 0) FROM blocks").fetchone()[0]
        return items, blocks, self.count, self.early

    def rollback(self, point: tuple[int, int, int, int]) -> None:
        """Forget what was put aside since ``point`` (items given back meanwhile stay given)."""
        items, blocks, self.count, self.early = point
        self._db.execute("DELETE FROM items WHERE rowid > ?", (items,))
        self._db.execute("DELETE FROM blocks WHERE rowid > ?", (blocks,))

    def holds(self, keys: Iterable[bytes]) -> set[bytes]:
        """Which of ``keys`` some item put aside is under, or a block names."""
        if not self.count:
            return set()
        query = "SELECT key FROM items WHERE key IN ({marks}) UNION SELECT key FROM blocks WHERE key IN ({marks})"
        return _keys_among(self._db, query, keys)

    def ready(self, spool: Any, size: int) -> list[Any]:
        """Up to ``size`` early items, in the order put, whose key ``spool`` has read an item under; given once.
        ``spool`` is a Spool (its file is joined to this one's) or anything with ``has(keys)``."""
        if not self.count or self.early == self.given_early:
            return []
        if not isinstance(spool, Spool):
            pending = self._db.execute("SELECT rowid, key FROM items WHERE early = 1 AND done = 0 ORDER BY rowid")
            pending = pending.fetchall()
            read = spool.has(bytes(key) for _, key in pending)
            chosen = [rowid for rowid, key in pending if bytes(key) in read][:size]
            rows = list(_rows_among(self._db, "SELECT rowid, data FROM items WHERE rowid IN ({marks})", chosen))
            rows.sort()
        else:
            if self._attached is None:
                self._db.execute("ATTACH DATABASE ? AS spool", (spool.path,))
                self._attached = spool.path
            # A correlated EXISTS looks each waiting key up in the spool's index. "key IN (SELECT key FROM
            # spool.items)" made SQLite list every key read so far on each call: at 1,000,000 mailboxes that was
            # more than half the directory pass's time, growing with the spool.
            rows = self._db.execute(
                "SELECT rowid, data FROM items AS held WHERE early = 1 AND done = 0 AND EXISTS "
                "(SELECT 1 FROM spool.items AS read WHERE read.key = held.key) ORDER BY rowid LIMIT ?",
                (size,),
            ).fetchall()
        if rows:
            self._db.executemany("UPDATE items SET done = 1 WHERE rowid = ?", [(rowid,) for rowid, _ in rows])
            self.given_early += len(rows)
        return [_unpack(data) for _, data in rows]

    def pages(self, size: int) -> Iterator[list[Any]]:
        """Everything put aside and not given back yet, in the order put, ``size`` items a page."""
        last = 0
        while rows := self._db.execute(
            "SELECT rowid, data FROM items WHERE rowid > ? AND done = 0 ORDER BY rowid LIMIT ?", (last, size)
        ).fetchall():
            last = rows[-1][0]
            yield [_unpack(data) for _, data in rows]

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# SQLite's limit on a statement's variables is 32,766 since 3.32 and 999 before; a page's keys stay under both.
_SQL_VARIABLES = 900


def _rows_among(db: sqlite3.Connection, query: str, keys: Iterable[bytes]) -> Iterator[tuple]:
    """The rows ``query`` finds, asked a chunk of ``keys`` at a time; each ``{marks}`` in it takes the chunk."""
    wanted = list(dict.fromkeys(keys))
    for start in range(0, len(wanted), _SQL_VARIABLES):
        chunk = wanted[start : start + _SQL_VARIABLES]
        statement = query.format(marks=",".join("?" * len(chunk)))
        yield from db.execute(statement, chunk * query.count("{marks}"))


def _keys_among(db: sqlite3.Connection, query: str, keys: Iterable[bytes]) -> set[bytes]:
    return {bytes(key) for (key,) in _rows_among(db, query, keys)}


def _create(path: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE items (rowid INTEGER PRIMARY KEY, key BLOB, data BLOB NOT NULL)")
        db.execute("CREATE INDEX items_key ON items (key) WHERE key IS NOT NULL")
        db.commit()
    finally:
        db.close()


def _pack(item: Any) -> bytes:
    # Plain pickles: deflating each item (with or without a preset dictionary) cost the import more time than the
    # disk it saved (measured at 10,000 users on PostgreSQL: 13.8 s against 10.2 s), about 1.8 KB an object on disk.
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - our own file


def _write_pages(
    pages: Iterable[Any],
    *,
    path: str,
    key: Callable[[Any], bytes | None] | None,
    pack: Callable[[Any], bytes],
    tell: Callable,
    stopping,
) -> None:
    """Store each page's items, one committed transaction a page, and ``tell`` which rows it filled."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")  # a temporary file: a crash loses the run anyway
        for page in pages:
            if stopping.is_set():
                return
            if not page:
                continue
            rows = [(key(item) if key else None, pack(item)) for item in page]
            db.execute("BEGIN")
            del page
            first = db.execute("SELECT coalesce(max(rowid), 0) + 1 FROM items").fetchone()[0]
            db.executemany("INSERT INTO items (key, data) VALUES (?, ?)", rows)
            db.execute("COMMIT")
            tell((first, first + len(rows) - 1))
    finally:
        db.close()


class _Orphaned:
    """Set once the parent is gone: a reader nobody will read from stops after its page."""

    def __init__(self, parent: int):
        self.parent = parent

    def is_set(self) -> bool:
        return os.getppid() != self.parent


def _child(source: Callable[[], Iterable[Any]], writer: Callable, send) -> None:
    # The parent's handlers (an RQ work horse's, say) are not this process's business: terminate() must end it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        writer(source(), tell=lambda place: send.send(("page", *place)), stopping=_Orphaned(os.getppid()))
    except BaseException as error:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            payload = pickle.dumps(error)
            pickle.loads(payload)  # noqa: S301 - an error that does not come back whole is sent as text
        except Exception:  # noqa: BLE001
            payload = pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}"))
        send.send(("error", payload))
        return
    send.send(("done",))
