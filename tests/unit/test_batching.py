"""How the loop sizes its batches: at once when the lane is free and nothing waits (the
latency of a trickle), whole while catching up (the throughput of a backlog)."""

from __future__ import annotations

from replicator.stream.source.consumer import POLL_MAX
from tests.unit.test_replicator_loop import Message, RecordingSink, ScriptedSource, replicate


def _sizes(sink: RecordingSink) -> list[int]:
    return [len(run_ids) for run_ids, _ in sink.applies]


def test_a_backlog_is_applied_in_whole_batches_not_one_per_poll() -> None:
    """Polls that come back full mean more is waiting: the batch grows to its limit (or
    to what is there) even though its lane is free, so the backlog does not pay a batch's
    fixed cost per poll."""
    count = 2 * POLL_MAX + POLL_MAX // 2
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(count)], chunk=POLL_MAX)
    sink = RecordingSink()
    replicate(source, sink, batch_max_rows=10_000, batch_max_ms=60_000)
    assert _sizes(sink) == [count]
    assert sink.positions == {0: count}


def test_a_backlog_still_stops_at_the_batch_limit() -> None:
    count = 3 * POLL_MAX
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(count)], chunk=POLL_MAX)
    sink = RecordingSink()
    replicate(source, sink, batch_max_rows=2 * POLL_MAX, batch_max_ms=60_000)
    assert _sizes(sink) == [2 * POLL_MAX, POLL_MAX]
    assert sink.positions == {0: count}


def test_a_trickle_is_applied_as_it_arrives() -> None:
    """A poll that is not full leaves nothing waiting: a free lane applies it at once,
    without waiting for the batch's time limit."""
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(6)], chunk=2)
    sink = RecordingSink()
    replicate(source, sink, batch_max_rows=100, batch_max_ms=60_000)
    assert _sizes(sink)[0] == 2
    assert sink.positions == {0: 6}
