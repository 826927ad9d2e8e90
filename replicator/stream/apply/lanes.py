"""Apply lanes: the batches of different partitions applied on several target
connections at once.

One connection applies a batch at about the speed of one PostgreSQL backend, which is
then the pipeline's bound; a second lane lets the target work on two batches at once.

Invariants (the consumer, stream/replicator.py, relies on them):

1. A partition always goes to the same lane (:func:`lane_of`), and a lane applies
   its batches strictly in submission order (:class:`ApplyWorker`): a partition's
   batches commit in log order, so its stored position only moves forward.
2. Lanes share no row of the target they write, as long as each row's events are in
   one partition (Debezium keys them by the primary key): partitions' positions are
   different rows of the positions table, their rows' changes different run_ids.  If a
   row's events ever are in two partitions (the topic was re-partitioned), the order
   guard still decides: the versions row is locked by the first lane that claims it and
   the newer ``(generation, lsn)`` wins; a deadlock between lanes is a transient error.
3. After a batch failed in one lane, :meth:`Lanes.finished` with ``wait`` collects every
   lane: the other lanes' batches are applied or discarded in their own order.  The
   consumer then re-reads every partition from its stored position, which covers both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from replicator.stream.apply.worker import ApplyWorker, Finished

Item = TypeVar("Item")
Result = TypeVar("Result")


def lane_of(partition: int, lanes: int) -> int:
    """Pure. The lane of ``partition`` among ``lanes`` (invariant 1: always the same)."""
    return partition % lanes


class Lanes(Generic[Item, Result]):
    """One :class:`ApplyWorker` per apply function; a partition goes to lane
    :func:`lane_of`.  Called from one thread only (as an ApplyWorker is)."""

    def __init__(self, applies: Sequence[Callable[[Item], Result]]) -> None:
        if not applies:
            raise ValueError("at least one apply lane")
        self._workers = [ApplyWorker(apply) for apply in applies]

    @property
    def idle(self) -> bool:
        """Nothing submitted to any lane is still waiting to be collected."""
        return all(w.idle for w in self._workers)

    def lane_idle(self, lane: int) -> bool:
        return self._workers[lane].idle

    def accepts(self, lane: int) -> bool:
        """:meth:`submit` on ``lane`` would not block now."""
        return self._workers[lane].accepts

    def submit(self, lane: int, item: Item) -> None:
        """Queue ``item`` on ``lane`` (blocks while that lane's queue is full)."""
        self._workers[lane].submit(item)

    def finished(self, wait: bool = False) -> list[Finished[Item, Result]]:
        """Collect what is done in every lane; with ``wait``, everything submitted."""
        return [done for w in self._workers for done in w.finished(wait)]

    def collect(
        self, account: Callable[[Finished[Item, Result]], None], wait: bool = False
    ) -> None:
        """Hand each item applied to ``account``.  After a failure, first let every lane
        finish what it was given (invariant 3), then raise the first failure, ready for
        work again."""
        error: BaseException | None = None
        for done in self.finished(wait):
            if done.error is not None:
                error = error or done.error
            elif done.result is not None:
                account(done)
        if error is None:
            return
        for done in self.finished(wait=True):  # applied in their lane's order, or discarded
            if done.error is None and done.result is not None:
                account(done)
        self.reset()
        raise error

    def reset(self) -> None:
        """Accept work again after a failure (call once everything was collected)."""
        for w in self._workers:
            w.reset()

    def close(self) -> None:
        for w in self._workers:
            w.close()
