"""Bounded page concurrency (`pagination.concurrency`) for paging styles whose next call can be
guessed before the response is in: page numbers (`type: page`) and offsets (`type: offset`).

A window keeps at most `size` requests in flight: the page the source asks for and guesses of the
ones after it (`Paginator.ahead`). Pages come back strictly in the order the source asks for them,
so records are yielded, committed and checkpointed exactly as in a sequential run. A guess is only
a prefetch: the source still decides every next call from the response it got
(`Paginator.following`: the last page, an empty page, `total_pages` ...), and a guess it does not
ask for is dropped unread. So the listing ends where the sequential run ends it, at the cost of at
most size-1 requests past the end. A failed page raises when the source asks for it (the same
error, at the same place in the stream, as sequentially); failures of dropped guesses are ignored.
Every request still goes through the one HttpClient: its shared rate budget, retries, counters
(it gives each thread its own requests.Session)."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

from syncrunner.sources.http.client import Call

T = TypeVar("T")
Ahead = Callable[[Call | None, Call], Call | None]


class PagePool(Generic[T]):
    def __init__(self, send: Callable[[Call], T], ahead: Ahead, size: int):
        self._send, self._ahead, self.size = send, ahead, size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="page")
        self._window: list[tuple[Call, Future]] = []  # guesses in flight, in page order
        self._before: Call | None = None
        self.wasted = 0  # requests sent for pages never asked for (past the end, or a wrong guess)

    def send(self, call: Call) -> T:
        """`call`'s result (raises what sending it raised), fetched ahead when it was guessed; the
        pages after it are guessed and started before waiting for it."""
        future = _pop(self._window, call) or self._executor.submit(self._send, call)
        self._guess_after(call)
        self._before = call
        return future.result()

    def _guess_after(self, call: Call) -> None:
        """The window becomes the size-1 calls guessed after `call`: guesses already in flight are
        kept, the others dropped, the missing ones started."""
        old, self._window = self._window, []
        before, last = self._before, call
        while len(self._window) < self.size - 1:
            guess = self._ahead(before, last)
            if guess is None:
                break
            self._window.append((guess, _pop(old, guess) or self._executor.submit(self._send, guess)))
            before, last = last, guess
        for _, future in old:
            self._drop(future)

    def _drop(self, future: Future) -> None:
        if not future.cancel():  # already sent
            self.wasted += 1

    def drop_guesses(self) -> None:
        """The listing is done: the guesses left lie past its end."""
        for _, future in self._window:
            self._drop(future)
        self._window = []

    def close(self) -> None:
        """Waits for the requests already sent, so none of this run outlives it."""
        self.drop_guesses()
        self._executor.shutdown(wait=True, cancel_futures=True)


def _pop(window: list[tuple[Call, Future]], call: Call) -> Future | None:
    """The future of `call` taken out of `window`, if it is there."""
    for i, (guess, future) in enumerate(window):
        if guess == call:
            del window[i]
            return future
    return None


def page_pool(send: Callable[[Call], T], ahead: Ahead, concurrency: int) -> PagePool[T] | None:
    """The pool for `pagination.concurrency`; None when pages are fetched one at a time."""
    return PagePool(send, ahead, concurrency) if concurrency > 1 else None
