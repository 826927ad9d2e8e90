"""``replicator assess``: the plan's success criteria measured on the live tables.

Read-only: counts, ``verify``, the consumer's lag and the slot's retained WAL, the query
set of :mod:`replicator.assess.criteria` (each query run once to warm, then ``runs``
times; the median, and EXPLAIN to tell whether an index served it), the size of each
table.  Works as the service role (SELECT on both tables; the slot's
position is readable by every role).

After a cutover the legacy side is the archive (the legacy table, frozen at the
cutover): its queries and its storage are measured there, ``verify`` compares it with
``workflow_runs`` on every row the application has not written since, and the stream's
figures (lag, slot) are reported as closed, not as a lag nobody will ever apply.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from replicator.assess.criteria import (
    QUERIES,
    Criterion,
    QueryTiming,
    Storage,
    index_used,
    loss_criterion,
    median,
    migrated_loss_criterion,
    on_table,
    query_criterion,
    storage_criterion,
)
from replicator.db.connect import connect, mapped_errors
from replicator.errors import ConfigurationError, ReplicatorError
from replicator.mapping.columns import SOURCE_TABLE
from replicator.settings import Settings
from replicator.stream.apply.checkpoint import read_positions
from replicator.stream.source.ends import lagging, probe_ends
from replicator.verify.runner import Options, verify

_SIZES = (
    "SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid),"
    " coalesce(pg_total_relation_size(c.reltoastrelid), 0)"
    " FROM pg_class c WHERE c.oid = to_regclass(%s)"
)
_SLOT = (
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
    " FROM pg_replication_slots WHERE slot_name = %s"
)
_SAMPLE = """
    SELECT (SELECT run_id FROM {t} ORDER BY created_at DESC NULLS LAST LIMIT 1),
           (SELECT workflow_type FROM {t} GROUP BY 1 ORDER BY count(*) DESC LIMIT 1),
           (SELECT status FROM {t} GROUP BY 1 ORDER BY count(*) DESC LIMIT 1),
           (SELECT user_id FROM {t} WHERE user_id IS NOT NULL LIMIT 1),
           (SELECT percentile_disc(ARRAY[0.45, 0.55]) WITHIN GROUP (ORDER BY created_at)
              FROM {t}),
           (SELECT percentile_disc(ARRAY[0.45, 0.55]) WITHIN GROUP (ORDER BY completed_at)
              FROM {t})"""


@dataclass
class Assessment:
    """What ``assess`` measured, and the criteria judged from it."""

    source: Storage | None = None
    target: Storage | None = None
    verify_status: str = "unverified"
    legacy_table: str = SOURCE_TABLE  # the archive after a cutover
    cut_over: str | None = None  # after a cutover: what is true (cutover/guard.py)
    changed_since_cutover: int | None = None
    consumer_lag: int | None = None
    slot_retained_bytes: int | None = None
    queries: dict[str, tuple[QueryTiming | None, QueryTiming]] = field(default_factory=dict)
    criteria: list[Criterion] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return 2
        measured = [c.passed for c in self.criteria if c.passed is not None]
        return 0 if measured and all(measured) else 1

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for side in ("source", "target"):
            storage = getattr(self, side)
            if storage is not None:
                out[side]["total_bytes"] = storage.total_bytes
                out[side]["bytes_per_row"] = storage.bytes_per_row
        out["queries"] = {
            name: {"legacy": _timing(old), "new": _timing(new)}
            for name, (old, new) in self.queries.items()
        }
        out["exit_code"] = self.exit_code
        return out


def _timing(t: QueryTiming | None) -> dict[str, Any] | None:
    return None if t is None else dataclasses.asdict(t)


def assess(settings: Settings, *, runs: int = 7) -> Assessment:
    """Measure everything (module docstring); errors end in ``Assessment.error``."""
    if settings.source_dsn is None:
        raise ConfigurationError("assess needs the source: set REPLICATOR_SOURCE_DSN")
    if settings.target_table != "workflow_runs":
        raise ConfigurationError("assess compares workflow_processes with workflow_runs only")
    out = Assessment()
    source_dsn = settings.source_dsn.get_secret_value()
    target_dsn = settings.target_dsn.get_secret_value()
    try:
        report = verify(settings, options=Options(catch_up_timeout_s=30))
        out.verify_status = report.status
        out.cut_over, out.changed_since_cutover = report.cut_over, report.changed_since_cutover
        out.legacy_table = report.source_table
        # the archive lives beside workflow_runs (a cutover needs one database)
        legacy_dsn = source_dsn if out.cut_over is None else target_dsn
        if out.cut_over is None:
            out.consumer_lag = _lag(settings)
        with connect(legacy_dsn, "the source database") as source:
            out.source = _storage(source, out.legacy_table)
            if out.cut_over is None:
                out.slot_retained_bytes = _slot(source, settings.slot_name)
        with connect(target_dsn, "the target database") as target:
            out.target = _storage(target, "workflow_runs")
            params = _parameters(target)
            timings = {q.name: _time(target, q.new, params, runs) for q in QUERIES}
        with connect(legacy_dsn, "the source database") as source:
            for q in QUERIES:
                legacy = None if q.legacy is None else on_table(q.legacy, out.legacy_table)
                old = None if legacy is None else _time(source, legacy, params, runs)
                out.queries[q.name] = (old, timings[q.name])
    except ReplicatorError as exc:
        out.error = str(exc)
        return out
    loss = (
        loss_criterion(out.verify_status, out.source.rows, out.target.rows)
        if out.cut_over is None
        else migrated_loss_criterion(out.verify_status, out.changed_since_cutover)
    )
    out.criteria = [
        query_criterion(out.queries),
        storage_criterion(out.source, out.target),
        loss,
    ]
    return out


def _lag(settings: Settings) -> int:
    """Events in the topic the replicator has not applied yet."""
    ends = probe_ends(settings.kafka_bootstrap, settings.topic, settings.kafka_config)
    stored = read_positions(
        settings.target_dsn.get_secret_value(),
        settings.offsets_table,
        settings.target_table,
        settings.topic,
    )
    return sum(
        end - (pos if pos is not None else ends[p].low)
        for p, (pos, end) in lagging(stored, ends).items()
    )


def _storage(conn: psycopg.Connection[Any], table: str) -> Storage:
    with mapped_errors(f"measure {table}"):
        (rows,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone() or (0,)
        sizes = conn.execute(_SIZES, [table]).fetchone()
    if sizes is None:
        raise ConfigurationError(f"table {table} does not exist")
    return Storage(int(rows), *map(int, sizes))


def _slot(conn: psycopg.Connection[Any], slot: str) -> int | None:
    with mapped_errors("read the replication slot"):
        row = conn.execute(_SLOT, [slot]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _parameters(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Values that exist in the data, so that every query finds rows."""
    with mapped_errors("sample query parameters"):
        row = conn.execute(_SAMPLE.format(t="workflow_runs")).fetchone()
    assert row is not None
    run_id, wtype, status, user, created, completed = row
    created, completed = created or [None, None], completed or [None, None]
    return {
        "id": run_id,
        "type": wtype,
        "status": status,
        "user": user,
        "created_lo": created[0],
        "created_hi": created[1],
        "completed_lo": completed[0],
        "completed_hi": completed[1],
    }


def _time(
    conn: psycopg.Connection[Any], query: str, params: dict[str, Any], runs: int
) -> QueryTiming:
    with mapped_errors("time a query"):
        (plan,) = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone() or ([],)
        conn.execute(query, params).fetchall()  # warm the cache
        seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(query, params).fetchall()
            seconds.append((time.perf_counter() - started) * 1000)
    return QueryTiming(round(median(seconds), 3), runs, index_used(plan))
