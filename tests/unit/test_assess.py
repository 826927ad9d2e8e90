"""``assess`` without a database: the questions, the interleaving, the criteria and their
floors, the equal-answers check, the advice and the JSON schema (replicator/assess/)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest

from replicator.assess import hypothetical
from replicator.assess.advice import Column, best_order, candidates, partial_hot, redundant, unused
from replicator.assess.criteria import (
    UNREACHABLE,
    answers_check,
    loss_criterion,
    loss_floor,
    migrated_loss_criterion,
    query_criterion,
    query_floor,
    storage_criterion,
    storage_floor,
)
from replicator.assess.plans import actual_rows, index_names, index_used, server_ms
from replicator.assess.questions import LEGACY, NEW, QUESTIONS, left_out, not_compared, render
from replicator.assess.report import SCHEMA_FILE, Assessment
from replicator.assess.scratch import Scratch, copy_definition
from replicator.assess.stats import Spread, median, quantile
from replicator.assess.storage import IndexFacts, TableStorage, plan_added_sql
from replicator.assess.timing import Answered, SideTiming, measure, order
from replicator.mapping.columns import SOURCE_COLUMNS, TARGET_INDEX
from replicator.mapping.rows import map_to_tuple

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / SCHEMA_FILE).read_text())
QUESTION = {q.name: q for q in QUESTIONS}
PARAMS = {
    "id": "wp-1",
    "type": "docs",
    "status": "pending",
    "user": None,
    "created_lo": "2025-01-01",
    "created_hi": "2025-02-01",
    "completed_lo": "2025-01-01",
    "completed_hi": "2025-02-01",
}


def s(ms: float) -> Spread:
    return Spread(ms, ms, ms, ms, ms, 5)


def side(server: float, client: float = 1.0, rows: int = 10, digest: str = "d") -> SideTiming:
    return SideTiming(s(server), s(client), rows, (), digest)


def pair(name: str, old: float, new: float, **kw: Any) -> Answered:
    return Answered(name, side(old, **kw), side(new, **kw))


def index(name: str, *columns: str, scans: int = 0, unique: bool = False) -> IndexFacts:
    return IndexFacts(name, f"CREATE INDEX {name} ON t ({', '.join(columns)})", 8192,
                      columns, True, unique, unique, scans, scans)  # fmt: skip


# ---- the same question of both tables -------------------------------------------------


def test_a_null_status_is_asked_as_the_mapping_reads_it() -> None:
    q = QUESTION["by workflow type and status"]
    legacy, new = render(q, LEGACY, "workflow_processes"), render(q, NEW, "workflow_runs")
    assert "COALESCE(status, 'pending') = %(status)s" in legacy
    assert "workflow_name = %(type)s" in legacy and 'FROM "workflow_processes"' in legacy
    assert "status = %(status)s" in new and "COALESCE" not in new
    # the expression is the mapping's: a legacy row with a NULL status maps to 'pending'
    row = dict.fromkeys(SOURCE_COLUMNS)
    row.update(id="x", workflow_name="docs", message="m")
    assert map_to_tuple(row)[0][TARGET_INDEX["status"]] == "pending"
    # so counting by status groups NULL with 'pending' on the legacy side too
    assert "COALESCE(status, 'pending')" in render(QUESTION["count by status"], LEGACY, "t")


def test_every_legacy_question_names_only_legacy_columns() -> None:
    for q in QUESTIONS:
        if q.legacy_answers:
            sql = render(q, LEGACY, "workflow_processes_archive")
            assert 'FROM "workflow_processes_archive"' in sql
            for new_only in ("run_id", "workflow_type", "user_id", "priority"):
                assert new_only not in sql, (q.name, sql)


def test_the_by_user_question_needs_a_real_user_or_is_left_out_with_the_reason() -> None:
    q = QUESTION["by user and status"]
    reason = left_out(q, PARAMS)
    assert reason is not None and "constant-false" in reason and "user_id" in reason
    assert left_out(q, PARAMS | {"user": "u-1"}) is None
    assert not_compared(q) is not None and "user_id" in (not_compared(q) or "")
    assert all(left_out(x, PARAMS) is None for x in QUESTIONS if x is not q)


# ---- interleaving ---------------------------------------------------------------------


class FakeSide:
    """Records every call; answers with fixed times."""

    def __init__(self, name: str, log: list[tuple[str, str, str]], ms: float) -> None:
        self.name, self.log, self.ms = name, log, ms

    def sql(self, question: Any) -> str:
        return question.name

    def server(self, sql: str, params: dict[str, Any]) -> tuple[float, int, tuple[str, ...]]:
        self.log.append((self.name, sql, "server"))
        return self.ms, 3, ("ix",)

    def client(self, sql: str, params: dict[str, Any]) -> tuple[float, int, str]:
        self.log.append((self.name, sql, "client"))
        return self.ms * 2, 3, "same"


def test_legacy_and_new_runs_are_interleaved_question_by_question() -> None:
    log: list[tuple[str, str, str]] = []
    sides = {LEGACY: FakeSide(LEGACY, log, 2.0), NEW: FakeSide(NEW, log, 1.0)}
    runs = 4
    answered = measure(QUESTIONS, sides, PARAMS | {"user": "u-1"}, runs)
    paired = [q.name for q in QUESTIONS if q.legacy_answers]
    # every round (one warm-up, then `runs`) asks each paired question of both sides
    # back to back: never all of one side, then all of the other
    groups: list[list[tuple[str, str, str]]] = []
    for call in log:
        if groups and groups[-1][0][1] == call[1]:
            groups[-1].append(call)
        else:
            groups.append([call])
    firsts: dict[str, list[str]] = {}
    rounds: list[list[str]] = []
    for group in groups:
        name = group[0][1]
        if name not in paired:
            assert {c[0] for c in group} == {NEW}  # asked of the new table only
            continue
        assert [c[0] for c in group].count(LEGACY) == 2 == len(group) / 2  # server, client
        firsts.setdefault(name, []).append(group[0][0])
        if name == paired[0]:
            rounds.append([])
        rounds[-1].append(group[0][0])
    assert len(rounds) == runs + 1 and all(len(r) == len(paired) for r in rounds)
    for sequence in [*firsts.values(), *rounds]:  # each side goes first in turn
        assert all(a != b for a, b in itertools.pairwise(sequence)), sequence
    assert order(0, 0) != order(1, 0) and order(0, 0) != order(0, 1)
    by_name = {a.name: a for a in answered}
    user = by_name["by user and status"]
    assert user.legacy is None and user.new is not None and user.not_compared
    lookup = by_name["lookup by id"]
    assert lookup.legacy is not None and lookup.new is not None
    assert lookup.legacy.server.runs == runs and lookup.legacy.server.median_ms == 2.0
    assert lookup.new.client.median_ms == 2.0 and lookup.new.rows == 3  # client apart


def test_a_left_out_question_is_never_asked() -> None:
    log: list[tuple[str, str, str]] = []
    sides = {LEGACY: FakeSide(LEGACY, log, 1), NEW: FakeSide(NEW, log, 1)}
    answered = {a.name: a for a in measure(QUESTIONS, sides, PARAMS, 1)}
    assert all(call[1] != "by user and status" for call in log)
    assert answered["by user and status"].left_out and answered["by user and status"].new is None


# ---- the criteria, their floors, the checks -------------------------------------------


def test_queries_are_judged_on_server_time_and_the_client_time_is_said_apart() -> None:
    answered = [pair("a", 10, 5), pair("b", 10, 8), Answered("user", None, side(99))]
    passed = query_criterion(answered)
    assert passed.passed and "server 20.00 ms -> 13.00 ms over 2 paired questions (35% faster)" in (
        passed.figure
    )
    assert "client 2.00 ms -> 2.00 ms" in passed.figure
    slow_client = [Answered("a", side(10, client=1), side(5, client=9))]
    assert query_criterion(slow_client).passed  # the client's decoding does not decide
    slower = query_criterion([pair("a", 10, 12)])
    assert not slower.passed and "(20% slower)" in slower.figure
    assert not query_criterion([Answered("user", None, side(1))]).passed


def test_the_query_floor_is_each_question_at_its_best_measured_time() -> None:
    answered = [pair("a", 10, 9), pair("b", 10, 9)]
    reachable = query_floor(answered, {"a": 2.0, "b": 20.0})  # b's best is the live 9
    assert reachable.reachable and reachable.value == 11.0 and reachable.target == 14.0
    missed = query_floor(answered, {"a": 8.0, "b": 8.0})
    assert missed.reachable is False and missed.figure.startswith(UNREACHABLE)
    assert "14.00" in missed.figure and "16.00" in missed.figure  # both figures
    assert query_floor(answered, {}).reachable is None


def table(
    rows: int, heap: int, indexes: int = 0, added: dict[str, int] | None = None
) -> TableStorage:
    facts = (IndexFacts("pk", "", indexes, ("id",), True, True, True, 0, 0),) if indexes else ()
    return TableStorage("t", rows, heap, 0, facts, added)


def test_storage_is_judged_per_row_with_its_floor() -> None:
    legacy = table(100, 10_000, 2_000)  # 120 per row
    assert storage_criterion(legacy, table(100, 9_000, 1_000), None).passed  # 100 per row
    fat = table(100, 12_000, 3_000, {"tags": 300})
    verdict = storage_criterion(legacy, fat, None)
    assert not verdict.passed and "120.0 -> 150.0 bytes per row (20% less efficient" in (
        verdict.figure
    )
    assert "the plan's added content 3.0" in verdict.figure
    floor = storage_floor(legacy, floor_bytes=11_000, rows=100)  # 110 > 120 / 1.2 = 100
    assert floor.reachable is False and floor.figure.startswith(UNREACHABLE)
    assert "100.00" in floor.figure and "110.00" in floor.figure
    assert storage_floor(legacy, 9_000, 100).reachable is True
    assert storage_floor(legacy, None, 100).reachable is None


def test_zero_data_loss_and_its_floor() -> None:
    assert loss_criterion("in_sync", 5, 5).passed
    assert not loss_criterion("in_sync", 5, 4).passed
    assert not loss_criterion("drift", 5, 5).passed
    assert loss_floor(0).reachable and loss_floor(None).reachable is None
    refused = loss_floor(3)
    assert refused.reachable is False and UNREACHABLE in refused.figure and "3" in refused.figure


def test_equal_answers_are_checked_when_the_tables_are_in_sync() -> None:
    same = [pair("a", 1, 1, rows=5, digest="x"), Answered("user", None, side(1))]
    assert answers_check(same, "in_sync").passed is True
    rows_differ = [Answered("st", side(1, rows=5568), side(1, rows=11306))]
    verdict = answers_check(rows_differ, "in_sync")
    assert verdict.passed is False and "st (5,568 legacy rows, 11,306 new)" in verdict.figure
    content_differs = [Answered("st", side(1, digest="x"), side(1, digest="y"))]
    assert answers_check(content_differs, "in_sync").passed is False
    assert answers_check(rows_differ, "drift").passed is None  # not in sync: not checked
    assert answers_check(rows_differ, "in_sync", changed_since=4).passed is None
    # a failed check fails the assessment, whatever the criteria say
    passing = loss_criterion("in_sync", 1, 1)
    assert Assessment(criteria=[passing], checks=[answers_check(same, "in_sync")]).exit_code == 0
    assert Assessment(criteria=[passing], checks=[verdict]).exit_code == 1


def test_after_a_cutover_no_loss_is_the_archive_agreeing_and_finalized_is_not_measured() -> None:
    agreed = migrated_loss_criterion("in_sync", 12)
    assert agreed.passed and "12 written since" in agreed.figure
    assert migrated_loss_criterion("drift", 0).passed is False
    finalized = migrated_loss_criterion("finalized", None)
    assert finalized.passed is None and "not measured" in finalized.figure
    passing = migrated_loss_criterion("in_sync", 0)
    assert Assessment(criteria=[passing, finalized]).exit_code == 0
    assert Assessment(criteria=[finalized]).exit_code == 1  # nothing measured: not a pass
    assert Assessment(criteria=[migrated_loss_criterion("drift", 0), finalized]).exit_code == 1


# ---- the equal-index comparison -------------------------------------------------------


def test_new_indexes_are_translated_through_the_mapping() -> None:
    legacy = [IndexFacts("wp_pkey", "", 1, ("id",), True, True, True, 0)]
    status = hypothetical.translate(index("s", "workflow_type", "status"), legacy)
    assert status.legacy_columns == "(workflow_name, (COALESCE(status, 'pending')))"
    assert status.definition("workflow_processes") == (
        "CREATE INDEX ON \"workflow_processes\" (workflow_name, (COALESCE(status, 'pending')))"
    )
    user = hypothetical.translate(index("u", "user_id", "status"), legacy)
    assert user.legacy_columns is None and "NULL into every row" in (user.skipped or "")
    priority = hypothetical.translate(index("p", "priority"), legacy)
    assert "'normal' into every row" in (priority.skipped or "")
    pk = hypothetical.translate(index("run_pk", "run_id", unique=True), legacy)
    assert pk.legacy_columns is None and "wp_pkey" in (pk.skipped or "")


class NoHypopg:
    """A connection whose database has no hypopg; any other statement fails the test."""

    def execute(self, query: str, params: Any = None) -> Any:
        assert "pg_extension" in query, query
        return self

    def fetchone(self) -> None:
        return None


def test_without_hypopg_the_comparison_says_not_measured() -> None:
    conn = cast(Any, NoHypopg())
    result = hypothetical.compare(
        conn, conn, QUESTIONS, PARAMS, ("workflow_processes", "workflow_runs"),
        ([], [index("s", "status")]),
    )  # fmt: skip
    assert not result.measured and (result.reason or "").startswith("not measured")
    assert "postgresql-15-hypopg" in (result.reason or "")
    assert result.indexes and result.shape_cost is None  # what it would have compared


# ---- advice ---------------------------------------------------------------------------


def test_advice_is_chosen_from_what_was_measured() -> None:
    pk = index("pk", "run_id", scans=5, unique=True)
    created = index("created", "created_at", scans=3)
    date_range = index("date_range", "created_at", "completed_at")
    status = index("status", "status", scans=2)
    type_status = index("type_status", "workflow_type", "status", scans=1)
    found = unused([pk, created, date_range, status])
    assert found is not None and found.drop == ("date_range",)  # never the primary key
    assert all(st.startswith("DROP INDEX CONCURRENTLY") for st in found.statements("t"))
    led = redundant([pk, created, date_range, status, type_status])
    assert led is not None and led.drop == ("created",) and "date_range" in led.reason
    hot = partial_hot([status, type_status], ["pending"])
    assert hot is not None and set(hot.drop) == {"status", "type_status"}
    bodies = [body for _, body in hot.create]
    assert "(workflow_type) WHERE status IN ('pending')" in bodies
    assert "(status) WHERE status IN ('pending')" in bodies
    assert partial_hot([status], []) is None


def test_column_order_puts_fixed_width_columns_first_widest_first() -> None:
    columns = [Column("a", -1, "i"), Column("n", 4, "i"), Column("t", 8, "d"), Column("b", -1, "i")]
    assert best_order(columns) == ("t", "n", "a", "b")
    kinds = [c.kind for c in candidates([], [], columns)]
    assert kinds == ["column_order"]
    assert candidates([], [], [Column("t", 8, "d"), Column("a", -1, "i")]) == []


def test_a_live_index_definition_is_rebuilt_for_the_copy() -> None:
    live = "CREATE UNIQUE INDEX workflow_runs_pkey ON public.workflow_runs USING btree (run_id)"
    assert copy_definition(live, "copy", "c0") == (
        'CREATE UNIQUE INDEX "c0" ON "copy" USING btree (run_id)'
    )
    with pytest.raises(ValueError):
        copy_definition("CREATE TABLE x ()", "copy", "c0")


# ---- measuring helpers ----------------------------------------------------------------


def test_statistics_and_plans() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    spread = Spread.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (spread.median_ms, spread.q1_ms, spread.q3_ms, spread.runs) == (3.0, 2.0, 4.0, 5)
    assert not Spread.of([1.0, 1.1]).overlaps(Spread.of([2.0, 2.1]))
    explained = [
        {
            "Plan": {
                "Node Type": "Limit",
                "Actual Rows": 50,
                "Actual Loops": 1,
                "Plans": [{"Node Type": "Index Scan", "Index Name": "ix_created"}],
            },
            "Planning Time": 0.25,
            "Execution Time": 1.5,
        }
    ]
    assert server_ms(explained) == 1.75 and actual_rows(explained) == 50
    assert index_names(explained) == ("ix_created",) and index_used(explained)
    assert not index_used([{"Plan": {"Node Type": "Seq Scan"}}])


def test_the_plans_own_content_is_measured_per_column() -> None:
    sql = plan_added_sql("workflow_runs")
    for name in ("tags", "metadata", "progress_data", "resource_usage", "priority"):
        assert f"pg_column_size({name})" in sql
    assert "result_data->>'result'" in sql and "error_details->>'error'" in sql
    assert "user_id" not in sql  # NULL costs nothing


# ---- the JSON schema ------------------------------------------------------------------


def full_assessment() -> Assessment:
    new = TableStorage(
        "workflow_runs", 10, 3000, 0, (index("ix", "created_at", scans=2),), {"tags": 30}
    )
    legacy = TableStorage("workflow_processes", 10, 2500, 0, (index("pk", "id", unique=True),))
    answered = [pair("lookup by id", 1, 2), Answered("by user and status", left_out="no user")]
    a = Assessment(
        verify_status="in_sync",
        consumer_lag=0,
        parameters=PARAMS,
        questions=answered,
        legacy=legacy,
        new=new,
        equal_indexes=hypothetical.EqualIndexes(False, hypothetical.MISSING),
        scratch=Scratch(False, "not measured: --no-scratch"),
    )
    a.criteria = [
        query_criterion(answered, query_floor(answered, {})),
        storage_criterion(legacy, new, storage_floor(legacy, 2800, 10)),
        loss_criterion("in_sync", 10, 10, loss_floor(0)),
    ]
    a.checks = [answers_check(answered, "in_sync")]
    return a


def test_the_json_output_validates_against_its_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    doc = json.loads(json.dumps(full_assessment().as_dict(), default=str))
    validator.validate(doc)
    assert doc["schema_version"] == 1 and doc["questions"][1]["left_out"] == "no user"
    failed = json.loads(json.dumps(Assessment(error="cannot connect").as_dict()))
    validator.validate(failed)
    assert failed["exit_code"] == 2
    # the schema is strict: a renamed or missing field does not pass
    doc["questions"][0]["legacy"]["median_ms"] = doc["questions"][0]["legacy"].pop("server_ms")
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(doc)


def test_the_human_report_and_the_chart() -> None:
    from replicator.assess.chart import html
    from replicator.assess.render import human

    a = full_assessment()
    text = human(a)
    assert "lookup by id" in text and "left out: no user" in text
    assert "FAIL  storage efficiency increased by 20%" in text and "floor:" in text
    assert "equal answers" in text and "postgresql-15-hypopg" in text
    page = html(a)
    assert page.count("<rect") == 4 and "lookup by id" in page and "<svg" in page
    assert human(Assessment(error="boom")) == "replicator: could not assess: boom"
