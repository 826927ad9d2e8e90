"""The dead-letter tooling's pure parts: selection, grouping, showing; the cost limits
that come from the target's column type."""

from __future__ import annotations

from decimal import Decimal

import pytest

from replicator.dlq.letters import DeadLetter
from replicator.dlq.listing import SHOWN_PAYLOAD_BYTES, event_dict, groups, list_lines, show_dict
from replicator.dlq.redrive import RedriveReport, selected
from replicator.errors import MappingError
from replicator.mapping.columns import CostColumn
from replicator.mapping.rows import map_to_tuple
from tests.unit.test_mapping import legacy_row


def letter(offset: int, reason: str, run_id: str, value: bytes | None = b"{}") -> DeadLetter:
    headers = (
        ("dlq.reason", reason.encode()),
        ("dlq.error", b"why"),
        ("dlq.topic", b"src"),
        ("dlq.partition", b"1"),
        ("dlq.offset", str(100 + offset).encode()),
    )
    key = f'{{"id":"{run_id}"}}'.encode()
    return DeadLetter(0, offset, 1_700_000_000_000 + offset, key, value, headers)


LETTERS = [
    letter(0, "mapping_error", "a"),
    letter(1, "invalid_json", "x"),
    letter(2, "mapping_error", "b"),
    letter(3, "mapping_error", "a"),
]


def test_selection_by_reason_and_event_id() -> None:
    assert [d.offset for d in selected(LETTERS, "mapping_error", None)] == [0, 2, 3]
    assert [d.offset for d in selected(LETTERS, None, "a")] == [0, 3]
    assert [d.offset for d in selected(LETTERS, None, '{"id":"b"}')] == [2]


def test_groups_count_time_origin_and_sample_keys() -> None:
    first, second = groups(LETTERS, {(0, 0): "applied", (0, 2): "failed", (0, 3): "dismissed"})
    assert (first.reason, first.count, first.redriven) == ("mapping_error", 3, 1)
    assert (first.failed, first.dismissed) == (1, 1)  # attempts and successes apart
    assert first.origins == {1: [100, 103]} and first.sample_keys == ['{"id":"a"}', '{"id":"b"}']
    assert first.first_ms == 1_700_000_000_000 and first.last_ms == 1_700_000_000_003
    lines = list_lines("src.dlq", [first, second])
    assert lines[0] == "src.dlq: 4 dead letters"
    assert "mapping_error: 3 (1 re-driven, 1 failed again, 1 dismissed)" in lines[1]
    assert "p1 100..103" in lines[1]
    assert list_lines("src.dlq", []) == ["src.dlq: no dead letters"]


def test_listing_never_carries_row_contents_and_show_caps_them() -> None:
    big = letter(5, "decode_error", "z", value=b"v" * (SHOWN_PAYLOAD_BYTES + 10))
    assert "value" not in event_dict(big, None)
    shown = show_dict(big, "failed")
    assert len(shown["value"]) == SHOWN_PAYLOAD_BYTES and shown["value_cut"]
    assert shown["headers"]["dlq.reason"] == "decode_error" and shown["redriven"] == "failed"


def test_the_exit_code_says_whether_some_failed_again() -> None:
    report = RedriveReport("src.dlq", 3)
    report.counts.update(applied=2, stale=1)
    assert report.exit_code == 0
    assert "2 applied, 1 stale" in report.summary()[0]
    report.counts["failed"] = 1
    assert report.exit_code == 1


@pytest.mark.parametrize("cost", [1_000_000.0, -5_000_000.0, 9.9e7])
def test_a_widened_cost_column_takes_what_the_plans_column_refuses(cost: float) -> None:
    row = legacy_row(total_cost=cost)
    with pytest.raises(MappingError, match=r"DECIMAL\(10,4\)"):
        map_to_tuple(row)
    values, _ = map_to_tuple(row, CostColumn(12, 4))
    assert values[17] == Decimal(cost).quantize(Decimal("0.0001"))
    with pytest.raises(MappingError, match=r"DECIMAL\(8,2\)"):
        map_to_tuple(row, CostColumn(8, 2))
    assert map_to_tuple(legacy_row(total_cost=1.23456), CostColumn(None, 2))[0][17] == Decimal(
        "1.23"
    )
