"""Reading a source in a thread while the caller works on what was read before: the inventory's two sides.

An import's reads wait on the directory and on Exchange Online, and its merge waits on the database; done one after
the other, each waits for the others. ``ReadAhead`` keeps up to ``depth`` items of an iterator read ahead in
memory (the directory's next pages while the current one is merged). ``Spool`` reads a whole iterator of pages
in a thread as fast as its source gives them, into a temporary file (pickled, zlib level 1: about a fifth of the
pickled size for Get-Mailbox objects, and both calls release the GIL), and hands them back in order when the
caller gets to them: Exchange Online is read during the directory pass, whose merge must come first.

The thread never touches the database. An error in it is raised in the caller, at the point the caller reaches
it; ``close()`` (or leaving the ``with`` block) tells the thread to stop after the item it is reading.
"""

from __future__ import annotations

import os
import pickle
import queue
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

_DONE = object()
# How long the caller waits, at most, for a thread to stop when it closes early: the item being read (one HTTP
# request, one LDAP page) is not interrupted, and the thread is a daemon, so a slow one does not hold the caller.
_JOIN_SECONDS = 5.0


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


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
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self.close()


class Spool(_Reader):
    """Read every page of ``pages`` now, into a temporary file; iterate them later, in order."""

    def __init__(self, pages: Iterable[Any], *, name: str = "spool"):
        super().__init__(name)
        self._pages = pages
        self._file = tempfile.TemporaryFile(prefix="soa-spool-")  # noqa: SIM115 - closed by close()
        self._ready: queue.Queue = queue.Queue()  # (offset, length) of each page written, then _DONE or _Failed
        self.bytes_written = 0
        self.thread.start()

    def _run(self) -> None:
        fd, offset = self._file.fileno(), 0
        try:
            for page in self._pages:
                if self.stopping.is_set():
                    return
                data = zlib.compress(pickle.dumps(page, protocol=pickle.HIGHEST_PROTOCOL), 1)
                del page
                os.pwrite(fd, data, offset)
                self._ready.put((offset, len(data)))
                offset += len(data)
                self.bytes_written = offset
        except BaseException as error:  # noqa: BLE001 - handed to the caller, which raises it
            self._ready.put(_Failed(error))
            return
        self._ready.put(_DONE)

    def __iter__(self) -> Iterator[Any]:
        fd = self._file.fileno()
        try:
            while True:
                item = self._ready.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                offset, length = item
                yield pickle.loads(zlib.decompress(os.pread(fd, length, offset)))  # noqa: S301 - our own file
        finally:
            self.close()

    def close(self) -> None:
        super().close()
        if not self.thread.is_alive():
            self._file.close()
