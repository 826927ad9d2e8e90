from __future__ import annotations

import threading
import time

import pytest

from replicator.stream.apply.worker import ApplyWorker


def test_items_are_applied_in_order_and_collected() -> None:
    seen: list[int] = []
    worker: ApplyWorker[int, int] = ApplyWorker(lambda n: (seen.append(n), n * 2)[1])
    for n in range(10):
        worker.submit(n)
    done = worker.finished(wait=True)
    worker.close()
    assert seen == list(range(10))
    assert [f.result for f in done] == [n * 2 for n in range(10)]
    assert worker.idle


def test_after_a_failure_queued_items_are_discarded_until_reset() -> None:
    gate = threading.Event()
    applied: list[int] = []

    def apply(n: int) -> int:
        gate.wait(5)
        if n == 1:
            raise RuntimeError("boom")
        applied.append(n)
        return n

    worker: ApplyWorker[int, int] = ApplyWorker(apply, depth=5)
    for n in range(4):
        worker.submit(n)
    gate.set()
    done = worker.finished(wait=True)
    assert applied == [0]
    assert done[0].result == 0
    assert isinstance(done[1].error, RuntimeError)
    assert [(f.result, f.error) for f in done[2:]] == [(None, None), (None, None)]
    worker.reset()
    worker.submit(7)
    assert worker.finished(wait=True)[0].result == 7
    worker.close()


def test_submit_blocks_beyond_depth() -> None:
    release = threading.Event()
    worker: ApplyWorker[int, int] = ApplyWorker(lambda n: (release.wait(5), n)[1], depth=1)
    worker.submit(1)  # being applied
    worker.submit(2)  # waiting
    blocked = threading.Thread(target=worker.submit, args=(3,))
    blocked.start()
    time.sleep(0.2)
    assert blocked.is_alive()
    release.set()
    blocked.join(5)
    assert [f.result for f in worker.finished(wait=True)] == [1, 2, 3]
    worker.close()


def test_finished_without_wait_returns_only_what_is_done() -> None:
    release = threading.Event()
    worker: ApplyWorker[int, int] = ApplyWorker(lambda n: (release.wait(5), n)[1])
    worker.submit(1)
    assert worker.finished() == []
    assert not worker.idle
    release.set()
    assert [f.result for f in worker.finished(wait=True)] == [1]
    worker.close()


@pytest.mark.parametrize("depth", [1, 3])
def test_many_items(depth: int) -> None:
    worker: ApplyWorker[int, int] = ApplyWorker(lambda n: n, depth=depth)
    total = 0
    for n in range(500):
        worker.submit(n)
        total += sum(f.result or 0 for f in worker.finished())
    total += sum(f.result or 0 for f in worker.finished(wait=True))
    worker.close()
    assert total == sum(range(500))
