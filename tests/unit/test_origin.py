"""A stored position is used only in the log it belongs to (stream/origin.py)."""

from __future__ import annotations

import pytest

from replicator.errors import PositionGap
from replicator.events import PartitionPosition
from replicator.stream.source.ends import PartitionEnd
from replicator.stream.source.origin import TopicView, starts

T = "legacy.public.workflow_processes"


def stored(**offsets: tuple[int, str | None]) -> dict[int, PartitionPosition]:
    return {
        int(p[1:]): PartitionPosition(T, int(p[1:]), o, None, i) for p, (o, i) in offsets.items()
    }


def view(topic_id: str | None, *ends: tuple[int, int]) -> TopicView:
    return TopicView(topic_id, {p: PartitionEnd(p, low, end) for p, (low, end) in enumerate(ends)})


def test_a_position_of_the_same_topic_inside_the_log_is_used() -> None:
    found = starts([0, 1, 2], stored(p0=(5, "A"), p1=(0, "A")), view("A", (0, 9), (0, 0), (0, 3)))
    assert found.offsets == {0: 5, 1: 0, 2: None} and found.reset == {}


def test_a_position_of_another_topic_id_is_set_aside_even_inside_the_log() -> None:
    found = starts([0], stored(p0=(5, "old")), view("new", (0, 9)))
    assert found.offsets == {0: None}
    assert found.reset[0][0] == "topic_recreated" and "old" in found.reset[0][1]


def test_without_ids_on_either_side_the_bounds_decide() -> None:
    assert starts([0], stored(p0=(5, None)), view("A", (0, 9))).offsets == {0: 5}
    assert starts([0], stored(p0=(5, "A")), view(None, (0, 9))).offsets == {0: 5}
    beyond = starts([0], stored(p0=(10, None)), view(None, (0, 9)))
    assert beyond.offsets == {0: None} and beyond.reset[0][0] == "beyond_end"


def test_the_end_itself_is_a_valid_position() -> None:
    assert starts([0], stored(p0=(9, "A")), view("A", (0, 9))).offsets == {0: 9}
    assert starts([0], stored(p0=(4, "A")), view("A", (4, 9))).offsets == {0: 4}


def test_a_gap_stops_unless_accepted() -> None:
    with pytest.raises(PositionGap, match=r"partition 1: offsets 2\.\.6 are gone"):
        starts([0, 1], stored(p0=(8, "A"), p1=(2, "A")), view("A", (0, 9), (7, 9)))
    found = starts([1], stored(p1=(2, "A")), view("A", (0, 9), (7, 9)), accept_gap=True)
    assert found.offsets == {1: 7} and found.reset[1][0] == "gap_accepted"


def test_unknown_ends_keep_the_stored_position() -> None:
    assert starts([0], stored(p0=(5, "A")), TopicView("A")).offsets == {0: 5}
