"""The backfill's pure parts: chunk planning, SQL rendering, path choice, report, CLI."""

from __future__ import annotations

import io
import re
import struct
from datetime import datetime

import pytest
from psycopg import sql

from replicator.backfill import chunks as bsql
from replicator.backfill.checks import same_database
from replicator.backfill.runner import BackfillReport
from replicator.backfill.workers import TolerantTimestampLoader
from replicator.cli import main as cli
from replicator.cli.backfill import cmd_backfill
from replicator.errors import MappingError
from replicator.mapping import sql as mapped_sql
from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TYPES, TARGET_COLUMNS
from replicator.mapping.rows import map_to_tuple
from replicator.observe.progress import Progress
from replicator.stream.apply import versions

# --------------------------------------------------------------------------- planning


def test_plan_of_an_empty_table_is_one_unbounded_chunk() -> None:
    assert bsql.plan_chunks([], 0, 100) == [bsql.Chunk(0, None, None, 0)]


def test_plan_covers_every_id_with_open_ends() -> None:
    plan = bsql.plan_chunks(["b", "d"], 250, 100)
    assert plan == [
        bsql.Chunk(0, None, "b", 100),
        bsql.Chunk(1, "b", "d", 100),
        bsql.Chunk(2, "d", None, 50),
    ]


@pytest.mark.parametrize(("bounds", "rows"), [(["b", "a"], 10), (["a", "a"], 10), (["a"], 0)])
def test_plan_refuses_bad_input(bounds: list[str], rows: int) -> None:
    with pytest.raises(ValueError):
        bsql.plan_chunks(bounds, 300, rows)


def test_plan_boundaries_orders_in_c_collation() -> None:
    text = bsql.plan_boundaries(sql.Identifier("public", "workflow_processes"), 500).as_string(None)
    assert 'ORDER BY id COLLATE "C"' in text
    assert "mod(n - 1, 500) = 0" in text
    assert '"public"."workflow_processes"' in text


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("lower", "upper", "expected"),
    [
        (None, None, "TRUE"),
        ("a", None, """"p".id COLLATE "C" >= 'a'"""),
        (None, "z", """"p".id COLLATE "C" < 'z'"""),
        ("o'k", "100%", """"p".id COLLATE "C" >= 'o''k' AND "p".id COLLATE "C" < '100%'"""),
    ],
)
def test_chunk_ranges_are_literal_and_collate_c(
    lower: str | None, upper: str | None, expected: str
) -> None:
    assert bsql.in_chunk(bsql.Chunk(0, lower, upper, 1)).as_string(None) == expected


def test_sql_mapping_has_every_target_column_in_order() -> None:
    assert tuple(mapped_sql.MAPPED) == TARGET_COLUMNS
    rendered = {k: v.as_string(None) for k, v in mapped_sql.MAPPED.items()}
    assert rendered["result_data"].startswith("""(CASE WHEN p."result" IS NULL THEN '{}'""")
    assert """'{"result": ' || to_json(p."result")::text || '}'""" in rendered["result_data"]
    assert """'{"error": ' || to_json(p."error_message")::text""" in rendered["error_details"]
    assert rendered["total_cost"] == "round(p.total_cost::text::numeric, 4)"
    assert rendered["status"] == "COALESCE(p.status, 'pending')"
    assert [rendered[c] for c in ("tags", "metadata", "progress_data", "resource_usage")] == [
        "'[]'::json",
        "'{}'::json",
        "'{}'::json",
        "'{}'::json",
    ]


def test_problem_checks_every_column_map_to_tuple_can_refuse() -> None:
    text = mapped_sql.problem().as_string(None)
    for column in ("workflow_name", "message", "session_name", "git_branch", "repository_url"):
        assert f"""p."{column}" = '__debezium_unavailable_value'""" in text
    for column in ("created_at", "updated_at", "started_at", "completed_at"):
        assert f"""p."{column}" NOT BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999'""" in text
    assert "p.total_cost IN ('NaN', 'Infinity', '-Infinity')" in text
    assert "abs(round(p.total_cost::text::numeric, 4)) >= 1e6" in text
    # map_to_tuple's column order decides which problem is named first
    named = re.findall(r"'workflow_processes\.(\w+): '", text)
    assert named == sorted(named, key=SOURCE_COLUMNS.index)


def names() -> bsql.Names:
    return bsql.Names(sql.Identifier("public", "workflow_processes"), "wr", "wr_versions")


def test_chunk_statement_claims_version_zero_with_the_sinks_rule() -> None:
    text = bsql.load_chunk_in_database(names(), bsql.Chunk(7, "a", "b", 10)).as_string(None)
    # the very statement of the sink's claim, with version (0, 0) for every mappable row
    sink = versions.claim("wr_versions", "wr", sql.Identifier("stage"))
    rule = sink[sink.index("INSERT INTO") : sink.index(" FROM (SELECT s.run_id")]
    assert rule in text and "SELECT i.i, 0, 0::bigint, false FROM (SELECT p.id FROM" in text
    tail = sink[sink.index(") AS c(run_id, gen, lsn, del)") : sink.index(" RETURNING v.run_id")]
    assert tail in text and "replicator_truncated" in tail  # the truncate floor too
    # only claimed rows are written, and only mappable rows are claimed
    assert "JOIN claimed c ON c.run_id = p.id" in text
    assert ") IS NULL) AS i(i)) AS c(run_id, gen, lsn, del)" in text
    assert "SELECT 'wr', p.id, 7, (" in text  # refused rows go to the rejects table
    # every read of the source is the same chunk
    assert text.count(bsql.in_chunk(bsql.Chunk(7, "a", "b", 10)).as_string(None)) == 4
    # run without parameters: a '%' in an id must not be taken for a placeholder
    assert "%s" not in text and "%(" not in text


def test_copy_statements_use_the_source_columns_in_order() -> None:
    text = bsql.copy_chunk_out(sql.Identifier("x"), bsql.Chunk(0, None, "m", 1)).as_string(None)
    assert text.startswith('COPY (SELECT "p"."id", "p"."workflow_name"')
    assert text.endswith("""WHERE "p".id COLLATE "C" < 'm') TO STDOUT (FORMAT BINARY)""")
    stage = bsql.CREATE_STAGE.as_string(None)
    assert list(SOURCE_TYPES) == list(SOURCE_COLUMNS)
    assert '"total_cost" real' in stage and "ON COMMIT DELETE ROWS" in stage


# --------------------------------------------------------------------------- the rest


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("db", 5432, "71", "h1"), ("db", 5432, "71", "h2"), True),  # one cluster, two names
        (("db", 5432, "71", "h"), ("db", 5432, "72", "h"), False),  # two clusters
        (("db", 5432, "71", "h"), ("other", 5432, "71", "h"), False),
        (("db", 5432, "71", "h"), ("db", 5433, "71", "h"), False),
        (("db", 5432, None, "h"), ("db", 5432, None, "h"), True),  # no system id: the host
        (("db", 5432, None, "h1"), ("db", 5432, "71", "h2"), False),
    ],
)
def test_same_database(a: tuple, b: tuple, same: bool) -> None:
    assert same_database(a, b) is same


def test_tolerant_timestamp_loader_hands_out_of_range_values_to_the_mapping() -> None:
    loader = TolerantTimestampLoader(0)
    assert loader.load(struct.pack("!q", 1)) == datetime(2000, 1, 1, 0, 0, 0, 1)
    infinity = loader.load(struct.pack("!q", 2**63 - 1))
    assert isinstance(infinity, int)
    row = dict.fromkeys(SOURCE_COLUMNS)
    row.update(id="x", workflow_name="w", message="m", created_at=infinity)
    with pytest.raises(MappingError, match=r"created_at.*outside the datetime range"):
        map_to_tuple(row)


def test_report_lists_outstanding_rejects() -> None:
    report = BackfillReport("wr", "sql", 2, 10, 4, rows_read=600, seconds=2.0)
    report.rows_loaded, report.rows_skipped, report.rows_rejected = 590, 7, 3
    report.rejects_total, report.rejects = 25, [("a", "why"), ("b", "why not")]
    lines = report.summary()
    assert lines[0].startswith("backfill wr (in-database SQL, 2 workers): 6 of 10 chunks")
    assert "600 rows read (300 rows/s): 590 loaded, 7 already streamed, 3 rejected" in lines[0]
    assert lines[2:] == ["  a: why", "  b: why not", "  ... and 23 more"]
    report.indexes_deferred, report.indexes_created, report.index_seconds = 9, 9, 1.25
    assert report.summary()[1] == (
        "indexes: 9 dropped before loading, 9 created after the last chunk in 1.2 s"
    )


def test_plain_progress_lines_of_a_resumed_step() -> None:
    out = io.StringIO()
    progress = Progress(out, interval=0.0)
    progress.start("bf", 100, "rows", done=40)
    progress.advance(30)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("bf: 70/100 rows (70%)")
    assert lines[-1].startswith("bf: 70/100 rows (70%)")


def test_a_step_that_did_nothing_prints_nothing() -> None:
    out = io.StringIO()
    progress = Progress(out, interval=0.0)
    progress.start("bf", 100, "rows", done=100)
    progress.finish()
    assert out.getvalue() == ""


def test_cli_backfill_arguments() -> None:
    args = cli.build_parser().parse_args(["backfill"])
    assert (args.workers, args.chunk_rows, args.restart, args.via) == (2, 50_000, False, "auto")
    assert args.slot_check and args.target_table is None and args.func is cmd_backfill
    assert not args.defer_indexes
    flags = "--workers 3 --chunk-rows 10 --restart --via python --defer-indexes --no-slot-check"
    args = cli.build_parser().parse_args(["backfill", *flags.split()])
    assert (args.workers, args.chunk_rows, args.restart, args.via) == (3, 10, True, "python")
    assert args.defer_indexes and not args.slot_check


def test_connector_apply_overrides_the_snapshot_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: dict[str, str] = {}

    class FakeClient:
        def __init__(self, url: str) -> None:
            pass

        def put_config(self, name: str, config: dict[str, str]) -> None:
            sent.update(config)

        def apply(self, name: str, config: dict[str, str], timeout: float) -> dict:
            self.put_config(name, config)
            return self.status(name)

        def get_config(self, name: str) -> dict[str, str]:
            return sent

        def status(self, name: str) -> dict:
            return {"connector": {"state": "RUNNING"}, "tasks": [{"state": "RUNNING"}]}

    monkeypatch.setattr("replicator.cli.connector.ConnectClient", FakeClient)
    monkeypatch.setenv("REPLICATOR_TARGET_DSN", "postgresql://x@h/db")
    monkeypatch.setenv("REPLICATOR_KAFKA_BOOTSTRAP", "h:9092")
    monkeypatch.setenv("REPLICATOR_CONNECT_URL", "http://h:8083")
    monkeypatch.setenv("REPLICATOR_ENV_FILE", "/dev/null")
    assert cli.main(["connector", "apply", "--snapshot-mode", "no_data"]) == 0
    assert sent["snapshot.mode"] == "no_data"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["connector", "apply", "--snapshot-mode", "sometimes"])


def test_a_backfill_with_nothing_left_says_it_is_complete_and_how_to_start_again() -> None:
    report = BackfillReport("wr", "sql", 2, 3, 3, rows_before=0, source_rows=50_002)
    (line,) = report.summary()
    assert "already complete" in line and "--restart" in line
    assert "0 rows read then" in line and "50,002 rows now" in line
