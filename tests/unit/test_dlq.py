"""The dead-letter tooling's pure parts: selection, grouping, showing; the cost limits
that come from the target's column type; the superseded rule, decided before mapping."""

from __future__ import annotations

from decimal import Decimal

import pytest

from replicator.dlq import redrive as redrive_module
from replicator.dlq import state
from replicator.dlq.letters import DeadLetter
from replicator.dlq.listing import SHOWN_PAYLOAD_BYTES, event_dict, groups, list_lines, show_dict
from replicator.dlq.redrive import RedriveReport, selected
from replicator.dlq.superseded import Superseded, query, version_of
from replicator.errors import MappingError
from replicator.events import ChangeEvent, KafkaPosition, Op
from replicator.mapping.columns import PLAN_COST, CostColumn
from replicator.mapping.rows import map_to_tuple
from replicator.stream.apply.generations import Generations
from replicator.stream.apply.transform import to_row_change
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
    assert (first.failed, first.dismissed, first.superseded) == (1, 1, 0)  # each apart
    assert first.origins == {1: [100, 103]} and first.sample_keys == ['{"id":"a"}', '{"id":"b"}']
    assert first.first_ms == 1_700_000_000_000 and first.last_ms == 1_700_000_000_003
    lines = list_lines("src.dlq", [first, second])
    assert lines[0] == "src.dlq: 4 dead letters"
    assert "mapping_error: 3 (1 re-driven, 0 superseded, 1 failed again, 1 dismissed)" in lines[1]
    assert "p1 100..103" in lines[1]
    assert list_lines("src.dlq", []) == ["src.dlq: no dead letters"]


def test_listing_never_carries_row_contents_and_show_caps_them() -> None:
    big = letter(5, "decode_error", "z", value=b"v" * (SHOWN_PAYLOAD_BYTES + 10))
    assert "value" not in event_dict(big, None)
    shown = show_dict(big, "failed")
    assert len(shown["value"]) == SHOWN_PAYLOAD_BYTES and shown["value_cut"]
    assert shown["headers"]["dlq.reason"] == "decode_error" and shown["redriven"] == "failed"


def test_the_exit_code_says_whether_some_failed_again() -> None:
    report = RedriveReport("src.dlq", 4)
    report.counts.update(applied=2, superseded=1, stale=1)
    assert report.exit_code == 0  # superseded letters are resolved, not failures
    assert "2 applied, 2 superseded (a newer change of the row is applied)" in report.summary()[0]
    report.counts["failed"] = 1
    assert report.exit_code == 1


def test_superseded_letters_are_listed_as_such_and_never_tried_again() -> None:
    outcomes = {(0, 0): "superseded", (0, 2): "stale", (0, 3): "applied"}
    (first, _) = groups(LETTERS, outcomes)
    assert (first.redriven, first.superseded, first.failed) == (1, 2, 0)
    assert first.to_dict()["superseded"] == 2
    assert (
        "mapping_error: 3 (1 re-driven, 2 superseded, 0 failed again"
        in (list_lines("src.dlq", [first])[1])
    )
    assert event_dict(LETTERS[0], "superseded")["redriven"] == "superseded"
    assert "superseded" in state.FINAL  # resolved like a re-driven letter


def change_event(op: Op, lsn: int | None, total_cost: float = 1.5) -> ChangeEvent:
    after = None if op is Op.DELETE else legacy_row(id="a", total_cost=total_cost)
    snapshot = "incremental" if op is Op.READ and lsn is None else None
    return ChangeEvent(op, "a", None, after, lsn, None, snapshot, KafkaPosition("src", 1, 100))


@pytest.mark.parametrize(
    ("op", "lsn", "expected"),
    [
        (Op.UPDATE, 900, (2, 900)),
        (Op.CREATE, 900, (2, 900)),
        (Op.DELETE, 900, (2, 900)),
        (Op.READ, 900, (2, 0)),  # a snapshot read's LSN does not order it
        (Op.READ, None, (2, 0)),  # an incremental snapshot read: none at all
        (Op.UPDATE, None, (2, 0)),
    ],
)
def test_a_letters_version_is_the_one_the_order_guard_compares(
    op: Op, lsn: int | None, expected: tuple[int, int]
) -> None:
    event = change_event(op, lsn)
    assert version_of(event, 2) == expected
    change = to_row_change(event, generation=2)  # what the guard compares when it applies
    assert change is not None and (change.generation, change.lsn) == expected


def test_the_superseded_query_compares_as_the_guard_does_and_writes_nothing() -> None:
    text = query("wr_versions").as_string(None)
    assert text.startswith("SELECT EXISTS (SELECT FROM ")
    assert '"wr_versions" v WHERE v.run_id = %(run_id)s' in text
    # strictly newer: the letter's own hold, or the same change, is not newer
    assert "(v.generation, v.source_lsn) > (%(g)s::integer, %(l)s::bigint)" in text
    assert not any(word in text for word in ("INSERT", "UPDATE", "DELETE"))


class FakeConn:
    def __init__(self, answer: bool) -> None:
        self.answer, self.asked = answer, []  # type: ignore[var-annotated]

    def execute(self, _query: object, params: dict[str, object]) -> FakeConn:
        self.asked.append(params)
        return self

    def fetchone(self) -> tuple[bool]:
        return (self.answer,)


def test_superseded_reads_the_rows_entry_at_the_letters_version() -> None:
    conn = FakeConn(True)
    newer = Superseded(conn, "wr_versions")  # type: ignore[arg-type]
    assert newer(change_event(Op.READ, None), 3)
    assert conn.asked == [{"run_id": "a", "g": 3, "l": 0}]
    assert not Superseded(FakeConn(False), "wr_versions")(change_event(Op.UPDATE, 7), 0)  # type: ignore[arg-type]


def nan_letter() -> DeadLetter:
    return letter(0, "mapping_error", "a", value=b"{}")


def one(superseded: bool, report: RedriveReport) -> str:
    event = change_event(Op.UPDATE, 500, total_cost=float("nan"))

    class NoSink:  # a superseded letter reaches no sink; a current one fails in the mapping
        def apply(self, *_args: object, **_kw: object) -> None:
            raise AssertionError("nothing may be applied")

    return redrive_module._one(
        nan_letter(),
        {},
        lambda _k, _v, _p: event,
        (PLAN_COST, Generations()),
        NoSink(),  # type: ignore[arg-type]
        report,
        lambda _e, _g: superseded,
    )


def test_a_superseded_letter_is_decided_before_it_is_mapped() -> None:
    """A NaN the source has since fixed: superseded, never mapped, nothing failed; the same
    letter with no newer change fails in the mapping, as before."""
    report = RedriveReport("src.dlq", 1)
    assert one(True, report) == "superseded" and not report.failures
    assert one(False, report) == "failed"
    assert "is not a finite number" in report.failures[0][1]


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
