"""Reading ahead in a thread or a child process (writeback.read_ahead): every item arrives once, in order; an error
in the reader reaches the caller as itself, where the caller gets to it; closing early stops the reader, and a
child whose parent is gone stops on its own. Pure unit tests: the sources are plain generators."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.writeback.test_inventory_one_write import _ReadSoFar
from writeback.exchange import ExoAuthError
from writeback.read_ahead import Held, ReadAhead, Spool


def pages(count: int, size: int = 3):
    for number in range(count):
        yield [{"page": number, "item": item, "text": "é" * item} for item in range(size)]


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_a_spool_gives_every_page_once_in_order(process):
    with Spool(lambda: pages(40), process=process) as spool:
        assert list(spool) == list(pages(40))


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_an_empty_source_is_an_empty_spool(process):
    with Spool(lambda: iter(()), process=process) as spool:
        assert list(spool) == []


def failing(after: int, error: BaseException):
    yield from pages(after)
    raise error


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_an_error_in_the_reader_reaches_the_caller_after_the_pages_before_it(process):
    error = ExoAuthError("token refused", status=401, cmdlet="Get-Mailbox", request_id="r-1")
    with Spool(lambda: failing(5, error), process=process) as spool:
        seen = []
        with pytest.raises(ExoAuthError) as raised:
            for page in spool:
                seen.append(page)
    assert seen == list(pages(5))
    # Across the process boundary too, the error keeps its type and what the run records from it.
    assert str(raised.value) == str(error) and raised.value.status == 401 and raised.value.request_id == "r-1"


class Unpicklable(Exception):
    def __init__(self, message: str, *, lock: threading.Lock):
        super().__init__(message)
        self.lock = lock


def test_an_error_that_cannot_cross_the_process_boundary_arrives_as_text():
    source = lambda: failing(1, Unpicklable("held", lock=threading.Lock()))  # noqa: E731
    with Spool(source, process=True) as spool, pytest.raises(RuntimeError, match="Unpicklable: held"):
        list(spool)


def test_a_child_that_dies_without_a_word_is_reported():
    def dying():
        yield from pages(2)
        os._exit(3)

    with Spool(dying, process=True) as spool, pytest.raises(RuntimeError, match="exit code 3"):
        list(spool)


def slow(count: int, started: list[float]):
    for number in range(count):
        started.append(time.monotonic())
        time.sleep(0.01)
        yield [number]


def test_closing_a_process_spool_early_ends_the_child():
    spool = Spool(lambda: slow(10_000, []), process=True)
    first = next(iter(spool))
    assert first == [0]
    spool.close()
    assert not spool._child.is_alive()


def test_closing_a_thread_spool_early_stops_its_reading():
    started: list[float] = []
    spool = Spool(lambda: slow(10_000, started), process=False)
    next(iter(spool))
    spool.close()
    read = len(started)
    time.sleep(0.1)
    assert len(started) <= read + 1 and not spool.thread.is_alive()


def test_read_ahead_keeps_order_and_raises_where_the_error_was():
    items = ReadAhead(failing(4, ValueError("bad entry")), depth=2)
    seen = []
    with pytest.raises(ValueError, match="bad entry"):
        for item in items:
            seen.append(item)
    assert seen == list(pages(4))


def test_read_ahead_holds_no_more_than_its_depth():
    started: list[float] = []
    reader = ReadAhead(slow(50, started), depth=2)
    iterator = iter(reader)
    next(iterator)
    time.sleep(0.2)  # the reader could have read all 50 by now; it may hold 2 and be reading a third
    assert len(started) <= 4
    reader.close()
    assert not reader.thread.is_alive()


ORPHAN_SCRIPT = """
import os, sys, time
from writeback.read_ahead import Spool

def slow():
    while True:
        time.sleep(0.01)
        yield [1]

spool = Spool(slow, process=True)
next(iter(spool))
print(spool._child.pid, flush=True)
os._exit(0)  # killed, as a work horse is: no close(), no cleanup
"""


def test_a_child_whose_parent_died_stops_by_itself(tmp_path):
    import subprocess
    import sys

    from django.conf import settings

    done = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT], capture_output=True, text=True, timeout=60, cwd=settings.BASE_DIR
    )
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, 9)
    pytest.fail("the reader process outlived its parent")


def keyed_pages(count: int, size: int = 4):
    for number in range(count):
        yield [{"id": bytes([number, item]), "page": number, "text": "é" * item} for item in range(size)]


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_taken_items_are_not_given_again_and_the_rest_come_in_order_in_pages_of_the_size_asked(process):
    with Spool(lambda: keyed_pages(10), process=process, key=lambda item: item["id"], page_size=7) as spool:
        spool.wait()
        assert spool.finished
        wanted = [bytes([3, 1]), bytes([3, 2]), bytes([9, 0]), b"never read"]
        assert spool.has(wanted) == set(wanted[:3])
        taken = spool.take(wanted)
        assert {key: [item["id"] for item in items] for key, items in taken.items()} == {k: [k] for k in wanted[:3]}
        assert spool.take(wanted) == {} and spool.taken == 3  # given once
        rest = list(spool)
    expected = [item for page in keyed_pages(10) for item in page if item["id"] not in wanted]
    assert [item for page in rest for item in page] == expected
    assert [len(page) for page in rest] == [7] * 5 + [2]


def test_two_items_under_one_key_are_both_taken_in_the_order_read():
    source = lambda: iter([[{"id": b"k", "n": 1}, {"id": b"j", "n": 2}], [{"id": b"k", "n": 3}]])  # noqa: E731
    with Spool(source, key=lambda item: item["id"]) as spool:
        spool.wait()
        assert [item["n"] for item in spool.take([b"k"])[b"k"]] == [1, 3]
        assert [item["n"] for page in spool for item in page] == [2]


def test_an_item_without_a_key_is_never_taken():
    with Spool(lambda: iter([[{"n": 1}]]), key=lambda item: None) as spool:
        spool.wait()
        assert spool.has([b""]) == set() and spool.take([b""]) == {}
        assert list(spool) == [[{"n": 1}]]


def test_held_items_come_back_early_once_their_key_is_read_and_the_rest_at_the_end_in_order():
    with Spool(lambda: keyed_pages(2), key=lambda item: item["id"]) as spool, Held() as held:
        spool.wait()
        held.put([(bytes([0, 1]), "a", True), (b"unread", "b", True), (bytes([1, 3]), "c", False)], [b"row's"])
        assert held.holds([b"unread", b"row's", b"other"]) == {b"unread", b"row's"}
        assert held.ready(spool, 10) == ["a"]  # "c" was read too, but it waits to the end: it is not early
        assert held.ready(spool, 10) == [] and held.given_early == 1 and held.early == 2
        assert list(held.pages(1)) == [["b"], ["c"]]


def test_held_items_come_back_early_from_anything_that_says_which_keys_it_has_read():
    with Held() as held:
        held.put([(b"k1", "a", True), (b"k2", "b", True), (b"k3", "c", True), (b"k4", "d", False)])
        assert held.ready(_ReadSoFar({b"k3", b"k4"}), 10) == ["c"]  # k4's item is not early
        assert held.ready(_ReadSoFar({b"k1", b"k2", b"k3"}), 1) == ["a"]  # in the order put, no more than asked
        assert held.ready(_ReadSoFar({b"k1", b"k2", b"k3"}), 10) == ["b"] and held.given_early == 3
        assert list(held.pages(10)) == [["d"]]


def test_a_rollback_forgets_what_was_put_aside_since_the_savepoint_and_nothing_before():
    with Held() as held:
        held.put([(b"k1", "a", True)], [b"b1"])
        point = held.savepoint()
        held.put([(b"k2", "b", True), (b"k3", "c", False)], [b"b2"])
        held.rollback(point)
        assert (held.count, held.early) == (1, 1)
        assert held.holds([b"k1", b"b1", b"k2", b"k3", b"b2"]) == {b"k1", b"b1"}
        assert list(held.pages(10)) == [["a"]]


def _packed(item) -> bytes:
    return repr(item).encode()


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_drain_gives_each_page_s_rows_once_as_packed_then_none_when_the_reader_is_done(process):
    pages = [[{"id": b"a"}, {"id": b"b"}], [{"id": b"c"}]]
    with Spool(lambda: iter(pages), process=process, key=lambda item: item["id"], pack=_packed) as spool:
        spool.wait()
        rows = spool.drain()
        assert rows == [(b"a", repr({"id": b"a"}).encode()), (b"b", repr({"id": b"b"}).encode()),
                        (b"c", repr({"id": b"c"}).encode())]  # fmt: skip
        assert spool.drain() is None and spool.drain() is None


def test_drain_raises_the_reader_s_error():
    def failing():
        yield [{"id": b"a"}]
        raise ExoAuthError("token refused")

    with Spool(failing, key=lambda item: item["id"], pack=_packed) as spool:
        spool.wait()
        with pytest.raises(ExoAuthError, match="token refused"):
            while spool.drain() is not None:
                pass
