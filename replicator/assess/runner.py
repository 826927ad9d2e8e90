"""``replicator assess``: the plan's success criteria measured on the live tables.

Read-only on the live tables: counts, ``verify``, the consumer's lag and the slot's
retained WAL; the questions of :mod:`replicator.assess.questions`, both tables
interleaved (:mod:`~replicator.assess.timing`); each table's storage by component and
each index's scans over that measuring window (:mod:`~replicator.assess.storage`); the
equal-index comparison with hypothetical indexes (:mod:`~replicator.assess.hypothetical`);
the floors and the advice on a temporary copy (:mod:`~replicator.assess.scratch`).
Works as the service role: SELECT on both tables, TEMP on the new table's database
(PostgreSQL grants it to every role by default), HypoPG's functions (every role's).

After a cutover the legacy side is the archive (the legacy table, frozen at the
cutover): its questions and its storage are measured there, ``verify`` compares it with
the new table on every row the application has not written since, and the stream's
figures (lag, slot) are reported as closed, not as a lag nobody will ever apply.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from replicator.assess import hypothetical, scratch
from replicator.assess.advice import Column, candidates
from replicator.assess.criteria import (
    answers_check,
    loss_criterion,
    loss_floor,
    migrated_loss_criterion,
    query_criterion,
    query_floor,
    storage_criterion,
    storage_floor,
)
from replicator.assess.equal import EqualMeasured, measure_equal
from replicator.assess.questions import LEGACY, NEW, QUESTIONS, Question, quote
from replicator.assess.report import Assessment
from replicator.assess.storage import (
    TableStorage,
    flush_statistics,
    measure_table,
    scans,
    with_window,
)
from replicator.assess.timing import Side, TableSide, measure
from replicator.db.connect import connect, mapped_errors
from replicator.errors import ConfigurationError, ReplicatorError
from replicator.mapping.sql import problem
from replicator.settings import Settings
from replicator.stream.apply.checkpoint import read_positions
from replicator.stream.source.ends import lagging, probe_ends
from replicator.verify.runner import Options, verify

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
_COLUMNS = (
    "SELECT a.attname, t.typlen, t.typalign FROM pg_attribute a"
    " JOIN pg_type t ON t.oid = a.atttypid"
    " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
    " ORDER BY a.attnum"
)
NO_SCRATCH = "not measured: --no-scratch"


def assess(settings: Settings, *, runs: int = 7, use_scratch: bool = True) -> Assessment:
    """Measure everything (module docstring); errors end in ``Assessment.error``."""
    if settings.source_dsn is None:
        raise ConfigurationError("assess needs the source: set REPLICATOR_SOURCE_DSN")
    if settings.target_table != "workflow_runs":
        raise ConfigurationError("assess compares workflow_processes with workflow_runs only")
    out = Assessment()
    try:
        legacy_dsn, new_dsn = _replication(settings, out)
        _measure(out, legacy_dsn, new_dsn, runs, use_scratch)
    except ReplicatorError as exc:
        out.error = str(exc)
        return out
    _judge(out)
    return out


def _replication(settings: Settings, out: Assessment) -> tuple[str, str]:
    """verify, lag and slot; the DSNs of the legacy side and of the new table."""
    assert settings.source_dsn is not None
    source_dsn = settings.source_dsn.get_secret_value()
    target_dsn = settings.target_dsn.get_secret_value()
    report = verify(settings, options=Options(catch_up_timeout_s=30))
    out.verify_status = report.status
    out.cut_over, out.changed_since_cutover = report.cut_over, report.changed_since_cutover
    out.legacy_table = report.source_table
    # the archive lives beside workflow_runs (a cutover needs one database)
    legacy_dsn = source_dsn if out.cut_over is None else target_dsn
    if out.cut_over is None:
        out.consumer_lag = _lag(settings)
        with connect(legacy_dsn, "the source database") as source:
            out.slot_retained_bytes = _slot(source, settings.slot_name)
    return legacy_dsn, target_dsn


def _measure(out: Assessment, legacy_dsn: str, new_dsn: str, runs: int, use_scratch: bool) -> None:
    legacy, new = out.legacy_table, out.new_table
    with (
        connect(legacy_dsn, "the legacy table's database") as lconn,
        connect(new_dsn, "the target database") as nconn,
    ):
        out.parameters = _parameters(nconn, new)
        flush_statistics(nconn)  # the sampling's own scans stay out of the window
        before = scans(lconn, legacy), scans(nconn, new)
        sides: dict[str, Side] = {
            LEGACY: TableSide(lconn, LEGACY, legacy),
            NEW: TableSide(nconn, NEW, new),
        }
        out.questions = measure(QUESTIONS, sides, out.parameters, runs)
        flush_statistics(lconn)
        flush_statistics(nconn)
    with connect(legacy_dsn, "the legacy table's database") as lconn:
        out.legacy = with_window(measure_table(lconn, legacy, new=False), before[0])
        out.refused_by_mapping = _refused(lconn, legacy)
    with connect(new_dsn, "the target database") as nconn:
        out.new = with_window(measure_table(nconn, new, new=True), before[1])
        columns = _columns(nconn, new)
    with (
        connect(legacy_dsn, "the legacy table's database") as lconn,
        connect(new_dsn, "the target database") as nconn,
    ):
        out.equal_indexes = hypothetical.compare(
            lconn, nconn, _asked(out, paired=True), out.parameters, (legacy, new),
            (out.legacy.indexes, out.new.indexes),
        )  # fmt: skip
    if use_scratch:
        _on_copies(out, legacy_dsn, new_dsn, runs, columns)
    else:
        out.scratch = scratch.Scratch(False, NO_SCRATCH)
        out.equal_copies = EqualMeasured(False, NO_SCRATCH)


def _asked(out: Assessment, *, paired: bool) -> list[Question]:
    """The questions asked of the new table (``paired``: of both tables)."""
    found = {a.name for a in out.questions if (a.paired if paired else a.new is not None)}
    return [q for q in QUESTIONS if q.name in found]


def _buffers_kb(storage: TableStorage) -> int:
    """Local buffers for a temporary copy of ``storage``'s table: three times its size,
    between 8 MiB and 1 GiB."""
    return min(max(storage.total_bytes * 3 // 1024, 8192), 1024 * 1024)


def _on_copies(
    out: Assessment, legacy_dsn: str, new_dsn: str, runs: int, columns: list[Column]
) -> None:
    """The equal-index comparison on copies, then the advice and the floors."""
    assert out.legacy is not None and out.new is not None and out.equal_indexes is not None
    hot = [out.parameters["status"]] if out.parameters.get("status") else []
    found = candidates(out.new.indexes, hot, columns)
    live = (out.new_table, out.new.indexes)
    with connect(new_dsn, "the target database (a scratch copy)") as sconn:
        base = scratch.prepare(sconn, *live, _buffers_kb(out.new))
        try:
            with connect(legacy_dsn, "the legacy table's database (a scratch copy)") as lconn:
                out.equal_copies = measure_equal(
                    lconn,
                    sconn,
                    (out.legacy_table, out.legacy.indexes, out.equal_indexes.indexes),
                    (_asked(out, paired=True), out.parameters, runs),
                    _buffers_kb(out.legacy),
                )
        except ReplicatorError as exc:
            out.equal_copies = EqualMeasured(False, f"not measured: {exc}")
        asked = (_asked(out, paired=False), out.parameters, runs)
        out.scratch = scratch.advise(sconn, live, base, asked, found)


def _judge(out: Assessment) -> None:
    assert out.legacy is not None and out.new is not None
    s = out.scratch
    measured = s is not None and s.measured
    best = {a.name: s.best_ms(a.name) if s is not None else None for a in out.questions}
    floor_bytes = s.floor_heap_bytes + s.floor_toast_bytes if s is not None and measured else None
    rows = s.rows if s is not None else 0
    loss = (
        loss_criterion(
            out.verify_status, out.legacy.rows, out.new.rows, loss_floor(out.refused_by_mapping)
        )
        if out.cut_over is None
        else migrated_loss_criterion(
            out.verify_status, out.changed_since_cutover, loss_floor(out.refused_by_mapping)
        )
    )
    out.criteria = [
        query_criterion(out.questions, query_floor(out.questions, best)),
        storage_criterion(out.legacy, out.new, storage_floor(out.legacy, floor_bytes, rows)),
        loss,
    ]
    out.checks = [answers_check(out.questions, out.verify_status, out.changed_since_cutover)]


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


def _slot(conn: psycopg.Connection[Any], slot: str) -> int | None:
    with mapped_errors("read the replication slot"):
        row = conn.execute(_SLOT, [slot]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _refused(conn: psycopg.Connection[Any], table: str) -> int:
    """Legacy rows the mapping refuses (mapping/sql.py's ``problem``)."""
    query = sql.SQL("SELECT count(*) FROM {} p WHERE {} IS NOT NULL").format(
        sql.Identifier(table), problem()
    )
    with mapped_errors("count the rows the mapping refuses"):
        (n,) = conn.execute(query).fetchone() or (0,)
    return int(n)


def _columns(conn: psycopg.Connection[Any], table: str) -> list[Column]:
    with mapped_errors(f"read the columns of {table}"):
        return [
            Column(n, int(length), a) for n, length, a in conn.execute(_COLUMNS, [quote(table)])
        ]


def _parameters(conn: psycopg.Connection[Any], table: str) -> dict[str, Any]:
    """Values that exist in the data, so that every question finds rows."""
    with mapped_errors("sample the questions' parameters"):
        row = conn.execute(_SAMPLE.format(t=quote(table))).fetchone()
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
