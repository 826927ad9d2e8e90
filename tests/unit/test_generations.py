"""Snapshot generations (pure parts): which generation an event belongs to, and when
Connect's committed offsets say the snapshot is wholly written."""

from __future__ import annotations

from replicator.clients.connect import snapshot_done
from replicator.stream.apply.generations import Generation, Generations, unfinished


def test_an_event_belongs_to_the_newest_generation_that_began_at_or_before_it() -> None:
    gens = Generations(
        [Generation(2, "t", {0: 50, 1: 70}), Generation(1, "t", {0: 10, 1: 20})], "t"
    )
    assert gens.latest == 2
    assert [gens.at(0, o) for o in (0, 9, 10, 49, 50, 99)] == [0, 0, 1, 1, 2, 2]
    assert [gens.at(1, o) for o in (19, 20, 69, 70)] == [0, 1, 1, 2]
    assert gens.at(5, 0) == 2  # a partition added since: wholly of the newest


def test_without_generations_everything_is_generation_zero() -> None:
    gens = Generations()
    assert gens.latest == 0 and gens.at(3, 10**9) == 0


def test_a_topic_created_after_a_generation_is_wholly_of_it() -> None:
    gens = Generations([Generation(1, "old", {0: 500}), Generation(2, "new", {0: 30})], "new")
    assert [gens.at(0, 0), gens.at(0, 29), gens.at(0, 30)] == [1, 1, 2]


def test_without_topic_ids_boundaries_apply() -> None:
    gens = Generations([Generation(1, None, {0: 5})], None)
    assert [gens.at(0, 4), gens.at(0, 5)] == [0, 1]


def offset(**fields: object) -> list[dict[str, object]]:
    return [{"partition": {"server": "legacy"}, "offset": fields}]


def test_the_snapshot_is_done_once_connect_committed_an_offset_past_it() -> None:
    assert not snapshot_done([])  # nothing committed yet
    assert not snapshot_done(offset(lsn=1, snapshot="INITIAL", snapshot_completed=False))
    assert snapshot_done(offset(lsn=1, snapshot="INITIAL", last_snapshot_record=True))
    assert snapshot_done(offset(lsn=1, snapshot="INITIAL", snapshot_completed=True))
    assert snapshot_done(offset(lsn=2, txId=7, lsn_commit=2))  # streaming


def test_an_unfinished_resnapshot_is_the_newest_generation_without_marks() -> None:
    done = Generation(1, None, {0: 4}, {0: 9})
    running = Generation(2, None, {0: 12})
    assert unfinished([]) is None
    assert unfinished([done]) is None
    assert unfinished([done, running]) is running
    # an interrupted one superseded by a newer generation that completed: nothing open
    assert unfinished([Generation(1, None, {0: 4}), Generation(2, None, {0: 6}, {0: 9})]) is None
