"""``replicator verify`` after a cutover: nothing streams any more, so the question is no
longer "has the stream delivered everything" but "would a rollback lose anything".

The archive (``workflow_processes_archive``, frozen at the cutover) and the change log
(``replicator_cutover_changes``: every run_id the application has written in
``workflow_runs`` since) together are what a rollback rebuilds the legacy table from: the
logged rows from ``workflow_runs``, every other row from the archive as it is.  So every
row of either table that the log does not name must be the same in both, mapped: a row
that differs there is drift (exit 1).  The logged rows are the application's writes since
the cutover; they are counted, not compared.

After ``cutover --finalize`` the change log is gone and the rollback window closed: there
is nothing left to compare, and the report says so (exit 0)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from replicator.cutover import catalog, compare, objects
from replicator.cutover.guard import describe
from replicator.mapping.columns import SOURCE_TABLE
from replicator.verify.report import KeyDiff, Kind, Report

q = sql.SQL


def drift_query(schema: str, archive: str, target: str) -> sql.Composed:
    """``(run_id, gone, absent)`` of every row not in the change log where the mapped
    archive and ``target`` differ (``gone``: only the target has it; ``absent``: only the
    archive has it)."""
    s = sql.Identifier(schema)
    return q(
        "SELECT d.run_id, d.gone, NOT EXISTS (SELECT FROM {s}.{t} t WHERE t.run_id = d.run_id)"
        " FROM ({differing}) d"
        " WHERE NOT EXISTS (SELECT FROM {s}.{log} c WHERE c.run_id = d.run_id)"
        " ORDER BY 1"
    ).format(
        s=s,
        t=sql.Identifier(target),
        log=sql.Identifier(objects.CHANGES),
        differing=compare.differing(schema, target, source=archive),
    )


def verify_after_cutover(conn: psycopg.Connection[Any], table: str) -> Report | None:
    """The report after the cutover into ``table`` (module docstring); None when the stream
    into ``table`` is open (never cut over, or rolled back)."""
    record = objects.latest(conn, SOURCE_TABLE)
    if record is None or record.state == "rolled_back" or record.target_table != table:
        return None
    report = Report(record.archive_table, table, cut_over=describe(record))
    schema = catalog.schema_of(conn, table)
    s = sql.Identifier(schema)
    with conn.transaction():  # one snapshot: the counts and the comparison agree
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        report.source_rows, report.target_rows = (
            _count(conn, s, name) for name in (record.archive_table, table)
        )
        if record.state == "finalized":
            report.finalized = True
            return report
        report.changed_since_cutover = _count(conn, s, objects.CHANGES)
        report.chunks = 1
        for run_id, gone, absent in conn.execute(drift_query(schema, record.archive_table, table)):
            kind: Kind = "extra" if gone else "missing" if absent else "different"
            report.drift[run_id] = KeyDiff(run_id, kind)
        report.chunks_differing = int(bool(report.drift))
    return report


def _count(conn: psycopg.Connection[Any], schema: sql.Identifier, name: str) -> int:
    row = conn.execute(q("SELECT count(*) FROM {}.{}").format(schema, sql.Identifier(name)))
    return int(row.fetchone()[0])  # type: ignore[index]  # an aggregate or a function call: always one row
