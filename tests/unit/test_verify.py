"""verify's pure parts: chunk planning, SQL rendering, the row comparison, the report,
and the live re-check rule with fake tables."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from replicator.mapping.columns import SOURCE_COLUMNS, TARGET_COLUMNS
from replicator.mapping.rows import map_to_tuple
from replicator.stream.source.ends import NotCaughtUp
from replicator.verify import runner
from replicator.verify import sql as vs
from replicator.verify.report import (
    KeyDiff,
    RepairSummary,
    Report,
    Unmappable,
    compare,
    diff_rows,
    rich_table,
    summary_lines,
)
from replicator.verify.runner import Options, recheck
from replicator.verify.tables import Observed, image_of, merge_chunks, prefetched


def source_row(run_id: str, **changes: Any) -> tuple[Any, ...]:
    row = dict.fromkeys(SOURCE_COLUMNS)
    row.update(id=run_id, workflow_name="w", message="m", total_cost=1.25, result="r")
    row["created_at"] = datetime(2024, 1, 1, 12, 0, 0, 123456)
    row.update(changes)
    return tuple(row[c] for c in SOURCE_COLUMNS)


def mapped(run_id: str, **changes: Any) -> tuple[Any, ...]:
    values, _ = map_to_tuple(dict(zip(SOURCE_COLUMNS, source_row(run_id, **changes), strict=True)))
    return values


# --------------------------------------------------------------------------- planning


@pytest.mark.parametrize(
    ("rows", "chunk_rows", "expected"),
    [
        (0, 10, []),
        (10, 10, []),
        (11, 10, [0.5]),
        (30, 10, [1 / 3, 2 / 3]),
        (5, 1, [0.2, 0.4, 0.6, 0.8]),
    ],
)
def test_boundary_fractions(rows: int, chunk_rows: int, expected: list[float]) -> None:
    assert vs.boundary_fractions(rows, chunk_rows) == pytest.approx(expected)


def test_boundary_fractions_refuse_empty_chunks() -> None:
    with pytest.raises(ValueError):
        vs.boundary_fractions(10, 0)


def test_distinct_sorted_drops_nulls_and_repeats_keeping_database_order() -> None:
    assert vs.distinct_sorted(["a", "a", None, "b", "b", "c"]) == ["a", "b", "c"]
    assert vs.distinct_sorted(["B", "a"]) == ["B", "a"]  # "C" order: upper case first


def test_block_slices_cover_the_table_and_stay_open_at_the_end() -> None:
    assert vs.block_slices(0, 10) == [("(0,0)", vs.END_OF_TABLE)]
    assert vs.block_slices(25, 10) == [
        ("(0,0)", "(10,0)"),
        ("(10,0)", "(20,0)"),
        ("(20,0)", vs.END_OF_TABLE),
    ]
    with pytest.raises(ValueError):
        vs.block_slices(10, 0)


def test_batches() -> None:
    assert vs.batches(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    assert vs.batches([], 2) == []


# --------------------------------------------------------------------------- SQL


def test_both_sides_hash_the_22_target_columns_in_order() -> None:
    assert list(vs.SOURCE_EXPRESSIONS) == list(vs.TARGET_EXPRESSIONS) == list(TARGET_COLUMNS)
    source = vs.row_hash(vs.source_side()).as_string(None)
    target = vs.row_hash(vs.target_side("workflow_runs")).as_string(None)
    assert source.startswith("hash_record_extended(ROW(p.id, p.workflow_name, p.message,")
    assert "'{\"result\": ' || to_json(p.\"result\")::text || '}'" in source
    assert "round(p.total_cost::text::numeric, 4)" in source
    assert source.endswith(
        "('[]'::json)::text, ('{}'::json)::text, ('{}'::json)::text, ('{}'::json)::text), 0)"
    )
    assert target.count("::text") == 6  # the JSON columns as their exact text
    assert 't."result_data"::text' in target and 't."total_cost",' in target


def test_checksum_query_buckets_in_collate_c_and_slices_by_ctid() -> None:
    side = vs.target_side("wr x")
    whole = vs.checksums(side, sliced=False).as_string(None)
    assert whole.startswith('SELECT width_bucket("t"."run_id" COLLATE "C", %(bounds)s::text[])')
    assert 'FROM "wr x" AS "t" GROUP BY 1' in whole and "ctid" not in whole
    sliced = vs.checksums(side, sliced=True).as_string(None)
    assert 'WHERE "t".ctid >= %(first)s::tid AND "t".ctid < %(last)s::tid GROUP BY 1' in sliced
    plan = vs.plan_boundaries(vs.source_side()).as_string(None)
    assert 'WITHIN GROUP (ORDER BY "p"."id" COLLATE "C")' in plan


def test_row_reads_take_json_columns_as_text_on_the_target_only() -> None:
    target = vs.rows_by_key(vs.target_side("wr")).as_string(None)
    assert '"t"."result_data"::text' in target and target.endswith("= ANY(%(keys)s::text[])")
    source = vs.rows_by_key(vs.source_side()).as_string(None)
    assert "::text" not in source.split("FROM")[0]  # the raw legacy row, mapped in Python
    hashes = vs.row_hashes(vs.source_side()).as_string(None)
    assert hashes.startswith('SELECT width_bucket("p"."id" COLLATE "C", %(bounds)s::text[])')
    assert '"p"."id", hash_record_extended(ROW(p.id,' in hashes
    assert hashes.endswith("= ANY(%(chunks)s) ORDER BY 1")


# --------------------------------------------------------------------------- comparing


def test_compare_kinds() -> None:
    row = mapped("a")
    assert compare("a", row, row) is None
    assert compare("a", None, None) is None
    assert compare("a", row, None) == KeyDiff("a", "missing")
    assert compare("a", None, row) == KeyDiff("a", "extra")
    assert compare("a", Unmappable("bad"), row) == KeyDiff(
        "a", "unmappable", reason="bad", in_target=True
    )
    assert compare("a", Unmappable("bad"), None) == KeyDiff("a", "unmappable", reason="bad")
    changed = list(row)
    changed[TARGET_COLUMNS.index("status")] = "zzz"
    changed[TARGET_COLUMNS.index("result_data")] = '{"result":  "r"}'  # same JSON, other text
    assert compare("a", row, tuple(changed)) == KeyDiff("a", "different", ("status", "result_data"))


def test_compare_numbers_by_value_and_nulls_strictly() -> None:
    row = mapped("a")
    cost = TARGET_COLUMNS.index("total_cost")
    same = list(row)
    same[cost] = Decimal("1.25")  # the target's numeric(10,4) reads back as 1.2500
    assert row[cost] == Decimal("1.2500") and compare("a", row, tuple(same)) is None
    nulled = list(row)
    nulled[TARGET_COLUMNS.index("git_branch")] = ""
    assert compare("a", mapped("a", git_branch=None), tuple(nulled)).columns == ("git_branch",)


def test_diff_rows_covers_both_sides() -> None:
    expected = {"a": mapped("a"), "b": mapped("b"), "c": Unmappable("x")}
    actual = {"a": mapped("a"), "d": mapped("d")}
    assert diff_rows(expected, actual) == {
        "b": KeyDiff("b", "missing"),
        "c": KeyDiff("c", "unmappable", reason="x"),
        "d": KeyDiff("d", "extra"),
    }


def test_image_of_maps_or_says_why_not() -> None:
    assert image_of(source_row("a")) == ("a", mapped("a"))
    run_id, image = image_of(source_row("bad", total_cost=float("nan")))
    assert run_id == "bad" and isinstance(image, Unmappable) and "total_cost" in image.reason


def test_merge_pairs_chunks_present_on_either_side() -> None:
    source = iter([(0, {"a": 1}), (2, {"c": 3})])
    target = iter([(1, {"b": 2}), (2, {"c": 4})])
    assert list(merge_chunks(prefetched(source), target)) == [
        (0, {"a": 1}, {}),
        (1, {}, {"b": 2}),
        (2, {"c": 3}, {"c": 4}),
    ]


def test_prefetched_hands_errors_over() -> None:
    def broken() -> Any:
        yield 1
        raise RuntimeError("database went away")

    out = prefetched(broken())
    assert next(out) == 1
    with pytest.raises(RuntimeError, match="went away"):
        next(out)


# --------------------------------------------------------------------------- the report


def test_report_json_lists_the_first_n_and_the_totals() -> None:
    report = Report("workflow_processes", "wr", 10, 9, chunks=3, chunks_differing=1)
    report.drift = {
        "m2": KeyDiff("m2", "missing"),
        "m1": KeyDiff("m1", "missing"),
        "x": KeyDiff("x", "extra"),
        "d": KeyDiff("d", "different", ("status",)),
    }
    report.unmappable = {"u": KeyDiff("u", "unmappable", reason="NaN")}
    out = report.to_dict(max_report=1)
    assert (out["status"], out["exit_code"], out["confirmed"]) == ("drift", 1, True)
    assert out["missing"] == {"total": 2, "ids": ["m1"]}
    assert out["extra"] == {"total": 1, "ids": ["x"]}
    assert out["different"] == {"total": 1, "rows": [{"run_id": "d", "columns": ["status"]}]}
    assert out["unmappable"]["rows"] == [{"run_id": "u", "reason": "NaN", "target": "no row"}]
    assert json.loads(json.dumps(out)) == out


def test_exit_codes() -> None:
    report = Report("s", "t")
    assert (report.status, report.exit_code) == ("in_sync", 0)
    report.busy = ["b"]
    assert report.exit_code == 0  # changing at every re-check: no difference confirmed
    report.drift = {"a": KeyDiff("a", "missing")}
    assert report.exit_code == 1
    report.error = "the replicator did not catch up"
    assert (report.status, report.exit_code, report.to_dict()["confirmed"]) == (
        "unverified",
        2,
        False,
    )


@pytest.mark.parametrize("in_target", [True, False], ids=["older image", "no row"])
def test_an_unmappable_source_row_is_not_in_sync(in_target: bool) -> None:
    """A source row updated to a value the mapping refuses: the target keeps the older
    image (or, for a row first inserted so, has none).  Either way not in sync: exit 1,
    drift, with the reason and what the target holds."""
    source = {"u": Unmappable("total_cost: 'NaN' is not a finite number")}
    target = {"u": mapped("u")} if in_target else {}
    report = Report("workflow_processes", "wr", 1, len(target))
    report.unmappable = diff_rows(source, target)
    assert not report.drift
    assert (report.status, report.exit_code) == ("drift", 1)
    held = "older image" if in_target else "no row"
    out = report.to_dict()
    assert (out["status"], out["exit_code"]) == ("drift", 1)
    assert out["unmappable"] == {
        "total": 1,
        "rows": [{"run_id": "u", "reason": source["u"].reason, "target": held}],
    }
    lines = summary_lines(report)
    assert ": drift in " in lines[0]
    assert any(line.startswith("unmappable source rows, not in sync (1)") for line in lines)
    assert f"  u: total_cost: 'NaN' is not a finite number (target: {held})" in lines
    report.error = "the replicator did not catch up"
    assert report.exit_code == 2  # could not tell still wins


def test_a_repair_is_not_attempted_for_unmappable_rows_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing a repair could write: verify --repair reports them (exit 1) and repairs
    nothing."""
    found = Report("workflow_processes", "wr")
    found.unmappable = {"u": KeyDiff("u", "unmappable", reason="NaN", in_target=True)}
    monkeypatch.setattr(runner, "_compared", lambda *_a: found)
    monkeypatch.setattr(runner, "_after_cutover", lambda *_a: None)
    monkeypatch.setattr(runner, "Tables", lambda *_a: None)

    def no_repair(*_a: Any) -> None:
        raise AssertionError("nothing to repair")

    monkeypatch.setattr(runner, "repair", no_repair)
    settings = SimpleNamespace(
        source_dsn=SimpleNamespace(get_secret_value=lambda: "s"),
        target_dsn=SimpleNamespace(get_secret_value=lambda: "t"),
        target_table="wr",
    )
    report = runner.verify(settings, catch_up=lambda _t: None, repair_drift=True)  # type: ignore[arg-type]
    assert report is found and (report.status, report.exit_code) == ("drift", 1)


def test_people_get_lines_and_a_table() -> None:
    report = Report("workflow_processes", "wr", 3, 3, chunks=1, seconds=1.5)
    report.drift = {"d": KeyDiff("d", "different", ("status", "max_turns"))}
    report.repair = RepairSummary(from_source=1, converged=True)
    lines = summary_lines(report)
    assert lines[0].startswith("workflow_processes (3 rows) vs wr (3 rows): drift")
    assert "  d: status, max_turns" in lines
    assert lines[-1].startswith("repair: 1 rows written from the source, 0 extra rows deleted")
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    Console(file=out, width=120).print(rich_table(report))
    assert "different" in out.getvalue() and "status, max_turns" in out.getvalue()


# --------------------------------------------------------------------------- re-checking


class FakeTables:
    """``by_key`` answers from scripted rounds of (source images, target rows[, versions])."""

    def __init__(self, rounds: list[tuple]) -> None:
        self.rounds = rounds
        self.asked: list[list[str]] = []

    def by_key(self, keys: Any) -> Observed:
        self.asked.append(sorted(keys))
        images, targets, *versions = self.rounds.pop(0)
        return Observed(images, targets, versions[0] if versions else {})


OPTIONS = Options(settle_s=0, rounds=3)


def seen(images: dict, targets: dict, versions: dict | None = None) -> dict:
    observed = Observed(images, targets, versions or {})
    return {k: observed.of(k) for k in images.keys() | targets.keys()}


def run_recheck(rounds: list[tuple], suspects: dict, first: dict) -> Report:
    report = Report("s", "t")
    recheck(FakeTables(rounds), suspects, first, lambda _t: None, OPTIONS, report, 0.0)  # type: ignore[arg-type]
    return report


def test_a_difference_the_replicator_fixed_meanwhile_is_not_drift() -> None:
    a = mapped("a")
    report = run_recheck([({"a": a}, {"a": a})], {"a": KeyDiff("a", "missing")}, seen({"a": a}, {}))
    assert not report.drift and report.rechecks == 1 and report.status == "in_sync"


def test_a_difference_nothing_moved_across_the_catch_up_is_drift() -> None:
    a, b = mapped("a"), mapped("b")
    first = seen({"a": a, "b": None}, {"b": b}, {"a": (5, False), "b": (3, False)})
    report = run_recheck(
        [({"a": a}, {"b": b}, {"a": (5, False), "b": (3, False)})],
        {"a": KeyDiff("a", "missing"), "b": KeyDiff("b", "extra")},
        first,
    )
    assert set(report.drift) == {"a", "b"} and report.rechecks == 1


def test_a_row_deleted_and_inserted_again_meanwhile_is_not_drift() -> None:
    """Source absent at both reads (deleted, inserted, deleted again after the probe):
    the target still holds the row inserted again, but its version moved."""
    b1, b2 = mapped("b", status="first"), mapped("b", status="again")
    first = seen({"b": None}, {"b": b1}, {"b": (10, False)})
    report = run_recheck(
        [({}, {"b": b2}, {"b": (30, False)}), ({}, {}, {"b": (40, True)})],
        {"b": KeyDiff("b", "extra")},
        first,
    )
    assert not report.drift and report.rechecks == 2
    # the same image coming back in the target is not enough either: the version moved
    report = run_recheck(
        [({}, {"b": b1}, {"b": (30, False)}), ({}, {}, {"b": (40, True)})],
        {"b": KeyDiff("b", "extra")},
        first,
    )
    assert not report.drift


def test_a_row_still_changing_is_checked_again_then_reported_as_still_changing() -> None:
    v = [mapped("a", status=f"s{i}") for i in range(5)]
    old = mapped("a", status="old")
    # round 1: source moved on (v1) -> again; round 2: agrees -> cleared
    report = run_recheck(
        [({"a": v[1]}, {"a": old}), ({"a": v[1]}, {"a": v[1]})],
        {"a": KeyDiff("a", "different", ("status",))},
        seen({"a": v[0]}, {"a": old}),
    )
    assert not report.drift and not report.busy and report.rechecks == 2
    # changing at every round: not drift, "still changing"
    report = run_recheck(
        [({"a": v[i]}, {"a": old}) for i in (1, 2, 3)],
        {"a": KeyDiff("a", "different", ("status",))},
        seen({"a": v[0]}, {"a": old}),
    )
    assert not report.drift and report.busy == ["a"] and report.rechecks == 3


def test_unmappable_rows_are_reported_apart_and_are_not_in_sync() -> None:
    bad = Unmappable("NaN")
    report = run_recheck(
        [({"u": bad}, {})], {"u": KeyDiff("u", "unmappable", reason="NaN")}, seen({"u": bad}, {})
    )
    assert not report.drift and set(report.unmappable) == {"u"}
    assert (report.status, report.exit_code) == ("drift", 1)


def test_no_catch_up_means_could_not_verify() -> None:
    def late(_timeout: float) -> None:
        raise NotCaughtUp("the replicator did not catch up", {0: (None, 5)})

    report = Report("s", "t")
    suspects = {"a": KeyDiff("a", "missing")}
    tables = FakeTables([])
    recheck(tables, suspects, seen({"a": mapped("a")}, {}), late, OPTIONS, report, 0.0)  # type: ignore[arg-type]
    assert report.status == "unverified" and "did not catch up" in (report.error or "")
    assert set(report.drift) == {"a"} and not tables.asked


def test_a_repaired_row_that_never_agrees_is_reported_as_not_repaired_once_caught_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replicator applied all the topic holds and the row still differs (a change the
    target refuses): the report says it was not repaired, not "is replicator run
    running?"."""
    monkeypatch.setattr(runner, "MIN_REPAIR_PATIENCE_S", 0.0)
    monkeypatch.setattr(runner.time, "sleep", lambda _s: None)
    a = mapped("a")
    tables = FakeTables([({"a": a}, {})] * 5)
    tables.target = SimpleNamespace(table="t")  # type: ignore[attr-defined]  # its name, shown
    options = Options(settle_s=0, rounds=3, catch_up_timeout_s=0.0, repair_timeout_s=30)
    left = runner._await_resync(tables, {"a"}, options, lambda _t: None)  # type: ignore[arg-type]
    assert left == {"a"}
    report = Report("s", "t", repair=RepairSummary(from_source=1, unrepaired=["a"]))
    assert any("not repaired (1)" in line for line in summary_lines(report))

    def behind(_timeout: float) -> None:
        raise NotCaughtUp("behind", {})

    tables.rounds = [({"a": a}, {})] * 5
    with pytest.raises(NotCaughtUp, match="is `replicator run` running"):
        runner._await_resync(tables, {"a"}, options, behind)  # type: ignore[arg-type]


def test_after_a_cutover_drift_still_fails_and_finalized_is_no_comparison() -> None:
    from replicator.verify.report import KeyDiff, Report

    agreed = Report("workflow_processes_archive", "workflow_runs", cut_over="cut over at ...")
    agreed.changed_since_cutover = 3
    assert (agreed.status, agreed.exit_code) == ("in_sync", 0)
    assert agreed.to_dict()["changed_since_cutover"] == 3
    drifted = Report("workflow_processes_archive", "workflow_runs", cut_over="cut over at ...")
    drifted.drift["a"] = KeyDiff("a", "different")
    assert (drifted.status, drifted.exit_code) == ("drift", 1)
    done = Report("workflow_processes_archive", "workflow_runs", cut_over="...", finalized=True)
    assert (done.status, done.exit_code) == ("finalized", 0)


def test_the_drift_query_after_a_cutover_leaves_out_the_logged_rows() -> None:
    from replicator.verify.after_cutover import drift_query

    text = drift_query("public", "workflow_processes_archive", "workflow_runs").as_string(None)
    assert '"public"."workflow_processes_archive" AS p' in text
    assert 'NOT EXISTS (SELECT FROM "public"."replicator_cutover_changes" c' in text
