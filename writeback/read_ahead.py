"""Reading a source in a thread while the caller works on what was read before: the inventory's two sides.

An import's reads wait on the directory and on Exchange Online, and its merge waits on the database; done one after
the other, each waits for the others. ``ReadAhead`` keeps up to ``depth`` items of an iterator read ahead in
memory (the directory's next pages while the current one is merged). ``Spool`` reads a whole iterator of pages
in a thread (or a child process) as fast as its source gives them, into a temporary file (pickled, then zlib level
1: a quarter of the pickled size for the inventory's cut-down Get-Mailbox objects, 158 bytes a mailbox measured on
the emulator's, so about 160 MB at a million), and hands them back in order when the caller gets to them:
Exchange Online is read during the directory pass, whose merge must come first.

The thread and the child never touch the database. An error in either is raised in the caller, at the point the
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
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
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
    """Read every page ``source()`` gives now, into a temporary file; iterate them later, in order.

    With ``process``, ``source`` runs in a child process (forked, so it needs nothing passed to it): the decoding of
    what it reads (JSON, for Exchange Online) then takes another core instead of sharing this process's GIL with the
    merge. The child makes its own connections (``source`` must not reuse the parent's sockets), stops when this
    process ends, and hands its pages over through the file, so the pipe between them carries only their places.
    """

    def __init__(self, source: Callable[[], Iterable[Any]], *, name: str = "spool", process: bool = False):
        super().__init__(name)
        self._source = source
        self._file = tempfile.TemporaryFile(prefix="soa-spool-")  # noqa: SIM115 - closed by close()
        self._ready: queue.Queue = queue.Queue()  # (offset, length) of each page written, then _DONE or _Failed
        self._child: multiprocessing.process.BaseProcess | None = None
        if process:
            context = multiprocessing.get_context("fork")
            self._receive, send = context.Pipe(duplex=False)
            self._child = context.Process(target=_child, args=(source, self._file.fileno(), send), name=name)
            self._child.start()
            send.close()
        self.thread.start()

    def _run(self) -> None:
        if self._child is not None:
            self._relay()
            return
        try:
            _write_pages(self._source(), self._file.fileno(), self._ready.put, self.stopping)
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

    def __iter__(self) -> Iterator[Any]:
        fd = self._file.fileno()
        try:
            for offset, length in _handed_over(self._ready):
                yield pickle.loads(zlib.decompress(os.pread(fd, length, offset)))  # noqa: S301 - our own file
        finally:
            self.close()

    def close(self) -> None:
        self.stopping.set()
        child = self._child
        if child is not None and child.is_alive():
            child.terminate()
            child.join(_JOIN_SECONDS)
        super().close()
        if not self.thread.is_alive():
            self._file.close()
            if child is not None:
                self._receive.close()


def _write_pages(pages: Iterable[Any], fd: int, tell: Callable[[tuple[int, int]], None], stopping) -> None:
    offset = 0
    for page in pages:
        if stopping.is_set():
            return
        data = zlib.compress(pickle.dumps(page, protocol=pickle.HIGHEST_PROTOCOL), 1)
        del page
        os.pwrite(fd, data, offset)
        tell((offset, len(data)))
        offset += len(data)


class _Orphaned:
    """Set once the parent is gone: a reader nobody will read from stops after its page."""

    def __init__(self, parent: int):
        self.parent = parent

    def is_set(self) -> bool:
        return os.getppid() != self.parent


def _child(source: Callable[[], Iterable[Any]], fd: int, send) -> None:
    # The parent's handlers (an RQ work horse's, say) are not this process's business: terminate() must end it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _write_pages(source(), fd, lambda place: send.send(("page", *place)), _Orphaned(os.getppid()))
    except BaseException as error:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            payload = pickle.dumps(error)
            pickle.loads(payload)  # noqa: S301 - an error that does not come back whole is sent as text
        except Exception:  # noqa: BLE001
            payload = pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}"))
        send.send(("error", payload))
        return
    send.send(("done",))
