"""read_ahead: a source's chunks produced on a thread, in order, errors and early stops included."""
from __future__ import annotations

import threading
import time

import pytest

from syncrunner.adapters.sources.readahead import WAIT, read_ahead


def test_items_come_in_order_from_another_thread():
    threads = set()

    def produce():
        for i in range(50):
            threads.add(threading.current_thread().name)
            yield i

    assert list(read_ahead(produce(), depth=2)) == list(range(50))
    assert threads == {"sr-read"}


def test_an_error_comes_after_the_items_before_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("source broke")

    got = []
    with pytest.raises(ValueError, match="source broke"):
        for item in read_ahead(produce()):
            got.append(item)
    assert got == [1, 2]


def test_stopping_early_closes_the_producer_and_its_thread():
    produced, closed = [], threading.Event()

    def produce():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    it = read_ahead(produce(), depth=2)
    assert [next(it), next(it)] == [0, 1]
    it.close()
    assert closed.is_set()  # the generator's finally ran (on the producer thread, before close returned)
    assert len(produced) <= 5  # never more than `depth` ahead of what was taken
    assert not any(t.name == "sr-read" for t in threading.enumerate())


def test_wait_holds_the_producer_until_everything_before_it_was_taken():
    """A source's last query must run only once the engine asked past its last chunk."""
    events = []

    def produce():
        yield 1
        yield 2
        events.append("producer asks again")
        yield WAIT
        events.append("last query")
        yield 3

    it = read_ahead(produce(), depth=4)
    assert next(it) == 1
    time.sleep(0.2)  # room for the producer to run ahead
    assert events == ["producer asks again"]
    assert next(it) == 2
    time.sleep(0.2)
    assert events == ["producer asks again"]  # 2 taken, but nothing asked after it yet
    assert next(it) == 3  # never WAIT itself
    assert events == ["producer asks again", "last query"]
    assert list(it) == []


def test_the_switch_interval_is_short_while_any_read_ahead_runs_and_restored_after():
    import sys
    before = sys.getswitchinterval()
    seen = []

    def produce(n):
        for i in range(n):
            yield i

    first = read_ahead(produce(5))
    next(first)
    seen.append(sys.getswitchinterval())
    second = read_ahead(produce(5))
    next(second)
    first.close()  # an early stop: the other one still runs
    seen.append(sys.getswitchinterval())
    assert list(second) == [1, 2, 3, 4]
    assert seen == [0.001, 0.001] and before > 0.001
    assert sys.getswitchinterval() == before
