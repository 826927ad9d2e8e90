"""Apply batches on a background thread while the next batch is decoded.

Decoding and mapping run in Python; applying runs mostly inside PostgreSQL.  With the
apply on its own thread (psycopg releases the GIL while the server works), the two
overlap and use two cores instead of one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

Item = TypeVar("Item")
Result = TypeVar("Result")

_STOP = object()


@dataclass(frozen=True, slots=True)
class Finished(Generic[Item, Result]):
    """One submitted item: its result, or the error that stopped it, or neither (discarded)."""

    item: Item
    result: Result | None
    error: BaseException | None
    seconds: float


class ApplyWorker(Generic[Item, Result]):
    """Runs ``apply`` on submitted items, one at a time, strictly in submission order.

    Invariant: after an item fails, every item still queued is discarded unapplied
    (reported as :class:`Finished` with neither result nor error) until :meth:`reset`;
    so nothing submitted after a failure is applied out of order.  At most ``depth``
    items wait; :meth:`submit` blocks beyond that (backpressure).  :meth:`finished` and
    :meth:`submit` are called from one thread only.
    """

    def __init__(self, apply: Callable[[Item], Result], depth: int = 1) -> None:
        self._apply = apply
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._done: queue.Queue[Finished[Item, Result]] = queue.Queue()
        self._failed = threading.Event()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="apply", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """Nothing submitted is still waiting to be collected."""
        return self._pending == 0

    @property
    def accepts(self) -> bool:
        """:meth:`submit` would not block now."""
        return not self._queue.full()

    def submit(self, item: Item) -> None:
        self._pending += 1
        self._queue.put(item)

    def finished(self, wait: bool = False) -> list[Finished[Item, Result]]:
        """Collect what is done; with ``wait``, everything submitted so far."""
        out: list[Finished[Item, Result]] = []
        while self._pending:
            try:
                entry = self._done.get(block=wait)
            except queue.Empty:
                break
            self._pending -= 1
            out.append(entry)
        return out

    def reset(self) -> None:
        """Accept work again after a failure (call once everything was collected)."""
        self._failed.clear()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread once it finished what it was given, waiting at most about
        ``timeout`` (a daemon thread still stuck then is left behind: the process ends)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            got = self._queue.get()
            if got is _STOP:
                return
            item = cast(Item, got)  # everything but the sentinel was submitted as an Item
            if self._failed.is_set():
                self._done.put(Finished(item, None, None, 0.0))
                continue
            started = time.monotonic()
            try:
                result = self._apply(item)
            except BaseException as exc:  # handed to the submitting thread
                self._failed.set()
                self._done.put(Finished(item, None, exc, time.monotonic() - started))
            else:
                self._done.put(Finished(item, result, None, time.monotonic() - started))
