"""`replicator backfill` on the real stack: exact SQL mapping, races with the stream,
kill -9 and resume, separate target database, refused rows.

Equality always means every column of every row: the target rows with a test's id
prefix equal the mapped source rows with that prefix.  The backfill copies the whole
``workflow_processes`` table (rows of other tests too) into a fresh target table.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from replicator.backfill import chunks as bsql
from replicator.backfill.runner import BackfillReport, backfill
from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.db.schema import apply_source_schema, apply_target_schema
from replicator.errors import MappingError
from replicator.events import SNAPSHOT_VERSION, UNAVAILABLE, RowChange
from replicator.local.sample import insert_rows
from replicator.mapping import sql as mapped_sql
from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TYPES, TARGET_COLUMNS
from replicator.mapping.reals import real_value
from replicator.mapping.rows import map_to_tuple
from replicator.stream.apply.sink import PostgresSink
from tests.integration.conftest import (
    JSON_COLUMNS,
    RunningReplicator,
    StackInfo,
    churn_until,
    create_change_topic,
    execute,
    mapped_source,
    new_database,
    remove_slot,
    target_rows,
    unique,
    wait_converged,
)

pytestmark = pytest.mark.integration

COPY_TYPES = [
    {"integer": "int4", "real": "float4", "timestamp without time zone": "timestamp"}.get(t, t)
    for t in SOURCE_TYPES.values()
]


def chunk_state(dsn: str, table: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT chunk_no, attempts, finished_at, rows_read, rows_loaded, rows_skipped,"
            f" rows_rejected FROM {bsql.CHUNKS_TABLE} WHERE target_table = %s ORDER BY chunk_no",
            (table,),
        ).fetchall()


# --------------------------------------------------------------------------- the mapping


@pytest.fixture(scope="module")
def scratch(stack: StackInfo):
    """A connection with an empty temporary copy of workflow_processes: ``pg_temp.wp``."""
    with psycopg.connect(stack.source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE wp (LIKE workflow_processes INCLUDING ALL)")
        yield conn


def sql_mapping(conn: psycopg.Connection, rows: list[tuple]) -> dict[str, tuple]:
    """Rows through the backfill's SQL: id -> (mapped values..., problem)."""
    conn.execute("TRUNCATE pg_temp.wp")
    with conn.cursor().copy("COPY pg_temp.wp FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            copy.write_row(row)
    exprs = [
        sql.SQL("({})::text").format(e) if c in JSON_COLUMNS else e
        for c, e in mapped_sql.MAPPED.items()
    ]
    query = sql.SQL("SELECT {}, {} FROM pg_temp.wp p").format(
        sql.SQL(", ").join(exprs), mapped_sql.problem()
    )
    return {r[0]: r for r in conn.execute(query)}


def python_mapping(conn: psycopg.Connection) -> dict[str, tuple | None]:
    """The same stored rows through map_to_tuple: id -> values, or None when refused."""
    out: dict[str, tuple | None] = {}
    for row in conn.execute(f"SELECT {', '.join(SOURCE_COLUMNS)} FROM pg_temp.wp"):
        try:
            values, unavailable = map_to_tuple(dict(zip(SOURCE_COLUMNS, row, strict=True)))
        except MappingError:
            out[row[0]] = None
            continue
        out[row[0]] = None if unavailable else values
    return out


def assert_same_mapping(conn: psycopg.Connection, rows: list[tuple]) -> None:
    in_sql = sql_mapping(conn, rows)
    in_python = python_mapping(conn)
    assert set(in_sql) == set(in_python)
    for run_id, expected in in_python.items():
        *values, problem = in_sql[run_id]
        if expected is None:
            assert problem is not None, f"{run_id}: SQL maps a row map_to_tuple refuses"
            continue
        assert problem is None, f"{run_id}: SQL refuses a row map_to_tuple maps: {problem}"
        assert tuple(values) == expected
        cost = TARGET_COLUMNS.index("total_cost")
        assert str(values[cost]) == str(expected[cost])  # same digits, not only same value


TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40
) | st.sampled_from(
    ['"quoted" \\ back\\slash', "\x01\x1f\x7f\b\f\n\r\t", "\u2028\u2029 é ✓ 🙂", UNAVAILABLE, ""]
)
INT32 = st.integers(-(2**31), 2**31 - 1)
STAMP = st.datetimes()
COST = st.floats(width=32) | st.floats(-1e6, 1e6, width=32) | st.sampled_from([0.00005, -0.00005])


@st.composite
def legacy_rows_strategy(draw: st.DrawFn) -> list[tuple]:
    n = draw(st.integers(1, 30))
    return [
        (
            f"h-{i}",
            draw(TEXT),
            draw(TEXT),
            draw(st.none() | INT32),
            draw(st.none() | TEXT),
            draw(st.none() | TEXT),
            draw(st.none() | TEXT),
            draw(st.none() | STAMP),
            draw(st.none() | STAMP),
            draw(st.none() | TEXT),
            draw(st.none() | TEXT),
            draw(st.none() | TEXT),
            draw(st.none() | INT32),
            draw(st.none() | COST),
            draw(st.none() | STAMP),
            draw(st.none() | STAMP),
        )
        for i in range(n)
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=legacy_rows_strategy())
def test_sql_mapping_equals_map_to_tuple(scratch: psycopg.Connection, rows: list[tuple]) -> None:
    assert_same_mapping(scratch, rows)


@st.composite
def near_ties(draw: st.DrawFn) -> list[float]:
    """float32 values at and next to the rounding ties (2m+1)/20000, where rounding errs."""
    out = []
    for _ in range(50):
        digits = draw(st.integers(0, 10))  # ties of every magnitude, 0.00005 to 999999.99995
        tie = (2 * draw(st.integers(-(10**digits), 10**digits - 1)) + 1) / 20000
        (bits,) = struct.unpack("<i", struct.pack("<f", tie))
        for b in (bits - 1, bits, bits + 1):
            out.append(struct.unpack("<f", struct.pack("<i", b))[0])
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    costs=st.lists(st.floats(width=32, allow_nan=False), min_size=200, max_size=200),
    ties=near_ties(),
)
def test_total_cost_rounds_like_map_to_tuple(
    scratch: psycopg.Connection, costs: list[float], ties: list[float]
) -> None:
    base = ("x", "w", "m", None, None, None, None, None, None, None, None, None, None)
    rows = [(f"c-{i}", *base[1:], cost, None, None) for i, cost in enumerate(costs + ties)]
    assert_same_mapping(scratch, rows)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    costs=st.lists(st.floats(width=32, allow_nan=False), min_size=200, max_size=200),
    powers=st.lists(st.integers(-149, 127), min_size=20, max_size=20),
)
def test_real_value_is_what_postgresql_prints_for_a_real(
    scratch: psycopg.Connection, costs: list[float], powers: list[int]
) -> None:
    """Avro and a binary COPY give a REAL's exact float32; real_value turns it into the
    text PostgreSQL prints (and Debezium's JSON carries), which the mapping reads."""
    values = [*costs, *(2.0**p for p in powers), 35616752.0]  # a tie: never its text
    printed = scratch.execute(
        "SELECT v::real::text FROM unnest(%s::float8[]) WITH ORDINALITY AS u(v, n) ORDER BY n",
        [values],
    ).fetchall()
    assert [repr(real_value(v)) for v in values] == [repr(float(t)) for (t,) in printed]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    costs=st.lists(
        st.floats(allow_nan=False)
        | st.floats(-1e6, 1e6)
        | st.decimals(-(10**6), 10**6, places=5, allow_nan=False).map(float),
        min_size=100,
        max_size=100,
    )
)
def test_a_total_cost_widened_to_double_maps_alike_in_sql_and_python(
    scratch: psycopg.Connection, costs: list[float]
) -> None:
    """After ``ALTER COLUMN total_cost TYPE DOUBLE PRECISION`` the events carry doubles and
    verify reads a double column: both mappings take the value as printed, rounded."""
    scratch.execute(
        "CREATE TEMP TABLE IF NOT EXISTS wpd (LIKE workflow_processes);"
        " ALTER TABLE pg_temp.wpd ALTER COLUMN total_cost TYPE DOUBLE PRECISION;"
        " TRUNCATE pg_temp.wpd"
    )
    ids = [f"d-{i}" for i in range(len(costs))]
    with scratch.cursor() as cur:
        cur.executemany(
            "INSERT INTO pg_temp.wpd (id, workflow_name, message, total_cost)"
            " VALUES (%s, 'w', 'm', %s)",
            list(zip(ids, costs, strict=True)),
        )
    query = sql.SQL("SELECT p.id, {}, {} FROM pg_temp.wpd p").format(
        mapped_sql.MAPPED["total_cost"], mapped_sql.problem()
    )
    in_sql = {r[0]: r[1:] for r in scratch.execute(query)}
    legacy = dict.fromkeys(SOURCE_COLUMNS) | {"workflow_name": "w", "message": "m"}
    index = TARGET_COLUMNS.index("total_cost")
    for run_id, cost in zip(ids, costs, strict=True):
        mapped, problem = in_sql[run_id]
        try:
            values, _ = map_to_tuple(legacy | {"id": run_id, "total_cost": cost})
        except MappingError:
            assert problem is not None, f"{cost!r}: SQL maps what map_to_tuple refuses"
            continue
        assert problem is None, f"{cost!r}: {problem}"
        assert str(mapped) == str(values[index]), repr(cost)


def test_values_python_cannot_hold_are_refused_by_every_path(stack: StackInfo) -> None:
    """Rows map_to_tuple refuses are refused, stored and reported by each path alike."""
    source = new_database(stack, "src")  # no slot, no stream: these rows stay out of Kafka
    apply_source_schema(source)
    apply_target_schema(source)
    insert_rows(source, 50, prefix="ok-")
    bad = {
        "bad-nan": "total_cost = 'NaN'",
        "bad-inf": "total_cost = '-Infinity'",
        "bad-big": "total_cost = 1000000",
        "bad-stamp": "created_at = 'infinity'",
        "bad-year": "completed_at = '10000-01-01'",
        "bad-bc": "started_at = '0044-03-15 BC'",
        "bad-placeholder": f"git_branch = '{UNAVAILABLE}'",
    }
    for run_id, change in bad.items():
        execute(
            source,
            (
                "INSERT INTO workflow_processes (id, workflow_name, message) VALUES (%s, 'w', 'm')",
                (run_id,),
            ),
            (f"UPDATE workflow_processes SET {change} WHERE id = %s", (run_id,)),
        )
    execute(
        source,
        "INSERT INTO workflow_processes (id, workflow_name, message, total_cost)"
        " VALUES ('ok-edge', 'w', 'm', 999999.9375)",
    )
    separate = new_database(stack, "tgt")
    apply_target_schema(separate)
    for via, target in (("sql", source), ("copy", separate), ("python", separate)):
        table = unique("wr")
        apply_target_schema(target, table)
        s = stack.settings(source_dsn=source, target_dsn=target, target_table=table)
        report = backfill(s, chunk_rows=20, via=via, check_slot=False)
        assert report.path == via
        assert {r for r, _ in report.rejects} == set(bad), via
        assert report.rejects_total == len(bad) and report.rows_rejected == len(bad)
        assert report.rows_loaded == 51
        expected = mapped_source(source, "id LIKE %s", ("ok-%",))
        assert target_rows(target, table) == expected
        reasons = dict(report.rejects)
        assert "total_cost" in reasons["bad-nan"] and "created_at" in reasons["bad-stamp"]
        assert (
            "git_branch" in reasons["bad-placeholder"]
            or "placeholder" in reasons["bad-placeholder"]
        )


def test_cli_exits_1_and_lists_refused_rows(stack: StackInfo, cli_env: dict[str, str]) -> None:
    source = new_database(stack, "src")
    apply_source_schema(source)
    apply_target_schema(source)
    insert_rows(source, 10, prefix="ok-")
    execute(
        source,
        "INSERT INTO workflow_processes (id, workflow_name, message, total_cost)"
        " VALUES ('bad-1', 'w', 'm', 'NaN')",
    )
    env = cli_env | {
        f"REPLICATOR_{who}{side}_DSN": source
        for who in ("", "ADMIN_")
        for side in ("SOURCE", "TARGET")
    }
    cmd = [sys.executable, "-m", "replicator", "backfill"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no logical replication slot" in res.stderr
    res = subprocess.run(
        [*cmd, "--no-slot-check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1, res.stderr
    assert "11 rows read" in res.stdout and "10 loaded" in res.stdout
    assert "bad-1: workflow_processes.total_cost: NaN is not a finite number" in res.stdout
    assert "backfill workflow_runs: 11/11 rows (100%)" in res.stderr  # plain progress lines


# --------------------------------------------------------------------------- the guard


@pytest.mark.parametrize("via", ["sql", "copy", "python"])
def test_backfill_respects_the_order_guard(stack: StackInfo, via: str) -> None:
    """Deterministic: version 0 fills only what no streamed change holds, even when the
    streamed change commits while the backfill waits for its lock."""
    source = new_database(stack, "src")  # no slot: the stream is played by the sink
    apply_source_schema(source)
    insert_rows(source, 6, prefix="g-")
    target = source if via == "sql" else new_database(stack, "tgt")
    table = unique("wr")
    apply_target_schema(target, table)
    ids = sorted(mapped_source(source))
    newer, deleted, fresh, snapshot, racing, _untouched = ids
    old = mapped_source(source)
    stale_image = (old[snapshot][0], "older", *old[snapshot][2:])
    streamed_image = (old[newer][0], "streamed", *old[newer][2:])
    racing_image = (old[racing][0], "racing", *old[racing][2:])
    with PostgresSink(target, table=table) as sink:
        sink.apply(
            [
                RowChange(newer, 100, False, streamed_image),
                RowChange(deleted, 101, True, None),
                RowChange(snapshot, SNAPSHOT_VERSION, False, stale_image),
            ],
            [],
        )
    # a streamed change of `racing`, claimed but not committed while the backfill runs
    with psycopg.connect(target) as held:
        held.execute(
            f'INSERT INTO "{table}_versions" (run_id, source_lsn, deleted) VALUES (%s, 500, false)',
            (racing,),
        )
        cols = ", ".join(TARGET_COLUMNS)
        held.execute(
            f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join(["%s"] * len(cols.split(",")))})',
            racing_image,
        )
        s = stack.settings(source_dsn=source, target_dsn=target, target_table=table)
        result: list[BackfillReport] = []
        worker = threading.Thread(
            target=lambda: result.append(backfill(s, chunk_rows=2, via=via, check_slot=False))
        )
        worker.start()
        time.sleep(1.5)
        assert worker.is_alive(), "the backfill did not wait for the streamed change's lock"
        held.commit()
    worker.join(60)
    (report,) = result
    assert (report.rows_read, report.rows_loaded, report.rows_skipped) == (6, 3, 3)
    rows = target_rows(target, table)
    assert rows[newer] == streamed_image  # a streamed change is never overwritten
    assert deleted not in rows  # a streamed delete is never undone
    assert rows[racing] == racing_image  # nor one committed while the backfill waited
    assert rows[snapshot] == old[snapshot]  # an older version-0 image is replaced
    assert rows[fresh] == old[fresh] and rows[_untouched] == old[_untouched]
    with psycopg.connect(target) as conn:
        versions = dict(conn.execute(f'SELECT run_id, source_lsn FROM "{table}_versions"'))
    assert versions == {newer: 100, deleted: 101, racing: 500, snapshot: 0, fresh: 0, _untouched: 0}
    # and a later streamed change replaces a backfilled row
    with PostgresSink(target, table=table) as sink:
        sink.apply([RowChange(fresh, 200, False, (fresh, "later", *old[fresh][2:]))], [])
    assert target_rows(target, table)[fresh][1] == "later"


# --------------------------------------------------------------------------- the race


class Churn:
    def __init__(self, dsn: str, prefix: str, ids: int, seed: int = 3) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=churn_until, args=(dsn, prefix, ids, self.stop, seed), daemon=True
        )

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def assert_consistent(report: BackfillReport, state: list[tuple]) -> None:
    assert report.rows_read == report.rows_loaded + report.rows_skipped + report.rows_rejected
    assert all(finished is not None for _, _, finished, *_ in state)
    for _, _, _, read, loaded, skipped, rejected in state:
        assert read == loaded + skipped + rejected


@pytest.mark.parametrize("replicator_starts", ["before", "after"])
def test_backfill_races_the_stream(stack: StackInfo, table: str, replicator_starts: str) -> None:
    p = unique("race")
    insert_rows(stack.source_dsn, 50_000, prefix=f"{p}-")
    settings = stack.settings(target_table=table, group_id=unique("g"))
    if replicator_starts == "before":
        with RunningReplicator(settings):
            with Churn(stack.source_dsn, p, 50_000):
                report = backfill(settings, workers=2, chunk_rows=10_000)
            wait_converged(stack, table, p, timeout=240)
    else:
        with Churn(stack.source_dsn, p, 50_000):
            report = backfill(settings, workers=2, chunk_rows=10_000)
        with RunningReplicator(settings):
            wait_converged(stack, table, p, timeout=240)
    # the churn deletes and inserts while the chunks are read: the count read varies;
    # convergence above shows the backfill loaded every row nobody changed
    assert report.path == "sql" and report.rows_read > 0
    assert_consistent(report, chunk_state(stack.target_dsn, table))


def test_no_data_connector_then_backfill(
    stack: StackInfo, table: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The documented order, through the CLI: a connector with snapshot.mode=no_data
    first (rows written before it are never streamed), then the backfill, while the
    application keeps writing and `replicator run` streams."""
    p = unique("nodata")
    insert_rows(stack.source_dsn, 30_000, prefix=f"{p}-")
    spec = load_connector_file()
    name, prefix = unique("nodataconn"), unique("nodatatopic")
    spec = {
        "name": name,
        "config": {
            **spec["config"],
            "topic.prefix": prefix,
            "slot.name": name,  # the publication of schemas/roles.sql is shared
        },
    }
    connector_file = tmp_path / "connector.json"
    connector_file.write_text(json.dumps(spec))
    cli = [sys.executable, "-m", "replicator"]
    try:
        res = subprocess.run(
            [
                *cli,
                "connector",
                "apply",
                "--file",
                str(connector_file),
                "--snapshot-mode",
                "no_data",
            ],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert json.JSONDecoder().raw_decode(res.stdout)[0]["snapshot.mode"] == "no_data"
        topic = f"{prefix}.public.workflow_processes"
        create_change_topic(stack.bootstrap, topic)
        settings = stack.settings(target_table=table, group_id=unique("g"), topic=topic)
        with RunningReplicator(settings), Churn(stack.source_dsn, p, 30_000, seed=8):
            res = subprocess.run(
                [*cli, "backfill", "--target-table", table, "--chunk-rows", "10000"],
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert res.returncode == 0, res.stdout + res.stderr
        with RunningReplicator(settings):
            rows = wait_converged(stack, table, p, timeout=240)
        assert len(rows) > 20_000
        with psycopg.connect(stack.target_dsn) as conn:
            backfilled, streamed = conn.execute(
                "SELECT count(*) FILTER (WHERE source_lsn = 0), count(*) FILTER"
                f' (WHERE source_lsn > 0) FROM "{table}_versions" WHERE run_id LIKE %s',
                (p + "%",),
            ).fetchone()
        assert backfilled > 0 and streamed > 0  # both writers did part of the job
    finally:
        ConnectClient(stack.connect_url).delete(name)
        remove_slot(stack.source_dsn, name)


# --------------------------------------------------------------------------- resume


def index_definitions(dsn: str, table: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (table,)
            )
        )


def test_kill_9_midway_then_resume(stack: StackInfo, table: str, cli_env: dict[str, str]) -> None:
    """Interrupted at any point, the same command finishes the job, redoing at most the
    chunks in flight; indexes deferred by the killed run are created by the rerun."""
    p = unique("resume")
    insert_rows(stack.source_dsn, 40_000, prefix=f"{p}-")
    indexes = index_definitions(stack.target_dsn, table)
    assert len(indexes) == 10
    cmd = [
        sys.executable,
        "-m",
        "replicator",
        "backfill",
        "--target-table",
        table,
        "--chunk-rows",
        "2000",
        "--workers",
        "2",
        "--defer-indexes",
    ]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    finished: list[tuple] = []
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            finished = [c for c in chunk_state(stack.target_dsn, table) if c[2] is not None]
        except psycopg.errors.UndefinedTable:
            finished = []
        if len(finished) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    first = {c[0]: c for c in chunk_state(stack.target_dsn, table) if c[2] is not None}
    state = chunk_state(stack.target_dsn, table)
    assert 3 <= len(first) < len(state) - 2, "killed too late to test a resume"
    in_flight = [c for c in state if c[1] > 0 and c[2] is None]
    assert len(in_flight) <= 2
    assert list(index_definitions(stack.target_dsn, table)) == [f"{table}_pkey"]

    res = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(state) - len(first)} of {len(state)} chunks" in res.stdout
    assert "indexes: 0 dropped before loading, 9 created after the last chunk" in res.stdout
    assert index_definitions(stack.target_dsn, table) == indexes
    final = chunk_state(stack.target_dsn, table)
    assert [c[0] for c in final] == [c[0] for c in state]  # the stored plan was reused
    assert all(c[2] is not None for c in final)
    for chunk in final:
        if chunk[0] in first:  # not loaded again
            assert chunk == first[chunk[0]]
    # work done twice: at most the chunks in flight at the kill, one per worker
    assert sum(c[1] for c in final) - len(final) <= 2
    expected = mapped_source(stack.source_dsn, "id LIKE %s", (p + "%",))
    assert target_rows(stack.target_dsn, table, "run_id LIKE %s", (p + "%",)) == expected
    assert len(expected) == 40_000


# --------------------------------------------------------------------------- separate target


@pytest.mark.parametrize("via", ["auto", "python"])
def test_separate_target_database(stack: StackInfo, via: str) -> None:
    dsn = new_database(stack, "tgt")
    apply_target_schema(dsn)
    p = unique("sep")
    insert_rows(stack.source_dsn, 20_000, prefix=f"{p}-")
    settings = stack.settings(target_dsn=dsn, group_id=unique("g"))
    with RunningReplicator(settings), Churn(stack.source_dsn, p, 20_000, seed=21):
        report = backfill(settings, workers=2, chunk_rows=10_000, via=via)  # type: ignore[arg-type]
    assert report.path == ("copy" if via == "auto" else "python")
    with RunningReplicator(settings):
        wait_converged(dataclasses.replace(stack, target_dsn=dsn), "workflow_runs", p, timeout=240)
    assert_consistent(report, chunk_state(dsn, "workflow_runs"))
    assert report.rows_loaded > 0 and report.rows_read >= 20_000
