"""``replicator backfill``: the initial load of the target straight from the source table.

Debezium's initial snapshot sends every existing row through Kafka Connect, the broker
and the consumer.  The backfill reads ``workflow_processes`` in primary-key chunks and
writes the mapped rows itself, several chunks in flight, while the connector streams
every change made meanwhile:

* ``sql``, source and target in one database (the default deployment): each chunk is
  one statement inside the database, the mapping written in SQL
  (:mod:`replicator.backfill.chunks`, proven equal to :func:`map_to_tuple` by tests);
* ``copy``, separate databases: binary COPY of the chunk's source rows, as they are,
  into a temporary table of the target, then the same statement there;
* ``python`` (``--via python``): binary COPY out, :func:`map_to_tuple`, and the sink's
  COPY + set-based merge (:meth:`PostgresSink.apply`) with version 0.

``auto`` picks ``sql`` or ``copy``; bench/backfill.py measures all three against the
in-database ``INSERT ... SELECT``.  The workers are in :mod:`replicator.backfill.workers`.

Resumable: the chunk plan (id boundaries in ``COLLATE "C"`` order) is computed once and
stored in the target (``replicator_backfill_chunks``), and a chunk's finished mark
commits in the same transaction as its rows.  Killed at any instant, a rerun loads only
the unfinished chunks: at most the chunks in flight (one per worker) are loaded twice.
Rows that cannot be mapped are stored in ``replicator_backfill_rejects`` with the reason,
reported at the end, and make the command exit 1; every other row is loaded.

Why the result equals the source, however the backfill and the stream race
---------------------------------------------------------------------------

Premise: the connector's replication slot exists before the backfill reads anything
(``replicator connector apply --snapshot-mode no_data`` first; the backfill refuses to
start without a logical slot on the source database).  So every change committed after
a chunk's read snapshot S is in the stream, and ``replicator run`` applies it with its
LSN (> 0) as version.

Rule: the ordering rule of :mod:`replicator.stream.apply.versions`, claimed by the same
statement on every path (the sink's claim for ``python``, the in-database statement's for
``sql`` and ``copy``).  A backfilled row carries version ``(0, 0)``, the weakest there
is: it is written only where the row has no entry or one of ``(0, 0)`` (another
snapshot image), and not behind the table's truncate floor; the entry is claimed
(inserted, or updated and so row-locked) in the transaction that writes the row.  Every
streamed change, every snapshot read of a later generation and every delete of one (a
sweep's) wins over it and is never overwritten by it; a delete keeps its entry, so no
backfilled image can bring the row back.  Claims on one run_id serialise on the versions
row: whichever transaction commits second sees the other's entry.

Take a source row r and the snapshot S at which its chunk was read.

1. No change of r commits after S: what the backfill read (r's image, or r's absence)
   is final.  Streamed changes of r, if any, committed before S, and the last of them
   is that same final state.  Applied before the backfill's write, they hold a version
   > 0 and the backfill's claim fails; applied after, they overwrite it in LSN order.
   Either way the target ends at r's final state.
2. Some change of r commits after S (updated or deleted while its chunk was copied, or
   inserted after): the last such change L is in the stream and is r's final state.  The
   backfill's older image is either written before L is applied (L, version > 0,
   overwrites it, or deletes it) or refused (L already holds the entry; a delete keeps
   it).  The older image never replaces a newer streamed one.

Two version-0 images of r (a Debezium snapshot read, a chunk loaded again after a
crash, a ``--restart``) can replace each other; both were read once the slot existed,
so if r changed in between, that change is streamed and wins; if not, they are equal.
A chunk and a streamed batch that lock the same versions rows in different orders can
deadlock: PostgreSQL aborts one, which retries (the chunk from scratch, with a warning).

Known limits: an UPDATE that left a TOASTed column unchanged arrives without that value
(REPLICA IDENTITY DEFAULT).  If it is applied before the backfill wrote r, the sink
cannot complete the row and logs it as unresolved; the backfill then writes the image
read at S, older than that update.  Set ``REPLICA IDENTITY FULL`` on the source during
the backfill, or resync the ids the consumer logged.  A source TRUNCATE applied to the
target (``--on-truncate apply``) raises the table's floor above version ``(0, 0)``: from
then on the backfill writes nothing (a chunk read before the truncate
would bring its rows back), and the rows the source has after it were inserted after it,
so they stream.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

from replicator.backfill import chunks as bsql
from replicator.backfill.checks import (
    check_source,
    check_target,
    create_state_tables,
    identity,
    require_slot,
    same_database,
)
from replicator.backfill.indexes import defer_indexes, restore_indexes
from replicator.backfill.workers import (
    CopyWorker,
    Counts,
    Job,
    PythonWorker,
    SqlWorker,
    Worker,
    connect,
)
from replicator.errors import ConfigurationError, TargetUnavailable, TerminalError
from replicator.mapping.columns import SOURCE_TABLE
from replicator.observe.progress import Progress
from replicator.settings import Settings

log = logging.getLogger("replicator.backfill")

LoadPath = Literal["sql", "copy", "python"]
_HOW = {
    "sql": "in-database SQL",
    "copy": "binary COPY into the target, mapped there in SQL",
    "python": "COPY + map_to_tuple in Python + the sink's merge",
}
_RETRIES = 8
_SHOWN_REJECTS = 20


@dataclass
class BackfillReport:
    """What a run did.  Counts are of this run; ``rejects`` are all still outstanding."""

    table: str
    path: LoadPath
    workers: int
    chunks: int
    chunks_before: int  # finished by earlier runs
    rows_read: int = 0
    rows_loaded: int = 0
    rows_skipped: int = 0  # the ordering rule refused it: a change already held the row
    rows_rejected: int = 0
    seconds: float = 0.0  # loading the chunks
    indexes_deferred: int = 0  # dropped by this run
    indexes_created: int = 0  # created again after the last chunk (deferred by any run)
    index_seconds: float = 0.0
    rejects_total: int = 0
    rejects: list[tuple[str, str]] = field(default_factory=list)
    rows_before: int = 0  # read by the earlier runs that finished chunks
    source_rows: int | None = None  # counted when an earlier run had finished every chunk

    @property
    def rate(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> list[str]:
        how = _HOW[self.path]
        if self.chunks and self.chunks_before == self.chunks:
            return [
                f"backfill {self.table}: already complete: its {self.chunks} chunks were loaded"
                f" by an earlier run ({self.rows_before:,} rows read then; the source holds"
                f" {self.source_rows or 0:,} rows now, later changes arrive through the stream);"
                " `replicator backfill --restart` plans and loads again"
            ]
        lines = [
            f"backfill {self.table} ({how}, {self.workers} workers): "
            f"{self.chunks - self.chunks_before} of {self.chunks} chunks in {self.seconds:.1f} s"
            f" ({self.chunks_before} finished earlier), {self.rows_read:,} rows read"
            f" ({self.rate:,.0f} rows/s): {self.rows_loaded:,} loaded, {self.rows_skipped:,}"
            f" already streamed, {self.rows_rejected:,} rejected"
        ]
        if self.indexes_deferred or self.indexes_created:
            lines.append(
                f"indexes: {self.indexes_deferred} dropped before loading, {self.indexes_created}"
                f" created after the last chunk in {self.index_seconds:.1f} s"
            )
        if self.rejects_total:
            lines.append(
                f"{self.rejects_total} source rows could not be mapped and were not loaded"
                f" (all in {bsql.REJECTS_TABLE}); fix them in the source and the stream"
                " applies the fix:"
            )
            lines += [f"  {run_id}: {reason}" for run_id, reason in self.rejects]
            if self.rejects_total > len(self.rejects):
                lines.append(f"  ... and {self.rejects_total - len(self.rejects)} more")
        return lines


def backfill(
    settings: Settings,
    *,
    workers: int = 2,
    chunk_rows: int = 50_000,
    restart: bool = False,
    via: Literal["auto", "sql", "copy", "python"] = "auto",
    check_slot: bool = True,
    defer: bool = False,
    progress: Progress | None = None,
) -> BackfillReport:
    """Load every source row into ``settings.target_table``; see the module docstring."""
    if workers < 1 or chunk_rows < 1:
        raise ConfigurationError("--workers and --chunk-rows must be at least 1")
    settings = settings.as_admin()  # it creates its state tables (and drops indexes on request)
    if settings.source_dsn is None:
        raise ConfigurationError(
            "backfill needs the source database: set REPLICATOR_SOURCE_DSN (or"
            " REPLICATOR_ADMIN_SOURCE_DSN)"
        )
    target_dsn = settings.target_dsn.get_secret_value()
    source_dsn = settings.source_dsn.get_secret_value()
    run = _Run(source_dsn, target_dsn, settings.target_table, settings.versions_table)
    progress = progress or Progress(enabled=False)
    return run.run(workers, chunk_rows, restart, via, check_slot, defer, progress)


# --------------------------------------------------------------------------- the job


class _Run:
    def __init__(self, source_dsn: str, target_dsn: str, table: str, versions: str) -> None:
        self.job = Job(source_dsn, target_dsn, table, versions, sql.Identifier(SOURCE_TABLE))
        self.table, self.versions = table, versions
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []

    def run(
        self,
        workers: int,
        chunk_rows: int,
        restart: bool,
        via: str,
        check_slot: bool,
        defer: bool,
        progress: Progress,
    ) -> BackfillReport:
        job = self.job
        with connect(job.source_dsn, "source") as src, connect(job.target_dsn, "target") as tgt:
            self.job = job = dataclasses.replace(job, source=check_source(src))
            if check_slot:
                require_slot(src)
            check_target(tgt, self.table, self.versions)
            same = same_database(identity(src), identity(tgt))
            path: LoadPath = ("sql" if same else "copy") if via == "auto" else via  # type: ignore[assignment]  # argparse's choices are LoadPath's values
            if path == "sql" and not same:
                raise ConfigurationError("--via sql needs the source table in the target database")
            locked = tgt.execute(
                "SELECT pg_try_advisory_lock(hashtext('replicator.backfill'), hashtext(%s))",
                [self.table],
            ).fetchone()
            if not (locked and locked[0]):
                raise TerminalError(f"another backfill into {self.table!r} is running")
            chunks = self._load_plan(src, tgt, chunk_rows, restart)
            todo = [c for c, done in chunks if not done]
            report = BackfillReport(self.table, path, workers, len(chunks), len(chunks) - len(todo))
            done_rows = tgt.execute(
                f"SELECT coalesce(sum(rows_read), 0) FROM {bsql.CHUNKS_TABLE}"
                " WHERE target_table = %s AND finished_at IS NOT NULL",
                [self.table],
            ).fetchone()[0]  # type: ignore[index]  # an aggregate or a function call: always one row
            report.rows_before = int(done_rows)
            if not todo:
                (report.source_rows,) = src.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(self.job.source)
                ).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
            total = int(done_rows) + sum(c.planned_rows for c in todo)
            log.info("backfill %s: %d chunks to load via %s", self.table, len(todo), path)
            if defer and todo:
                report.indexes_deferred = defer_indexes(tgt, self.table)
            started = time.monotonic()
            progress.start(f"backfill {self.table}", total, "rows", done=int(done_rows))
            try:
                self._run_workers(todo, min(workers, max(1, len(todo))), path, report, progress)
            except BaseException:
                if defer:
                    log.warning("the indexes of %s stay dropped until a backfill ends", self.table)
                raise
            finally:
                progress.finish()
                report.seconds = time.monotonic() - started
            report.indexes_created = restore_indexes(tgt, self.table)  # every chunk is loaded
            report.index_seconds = time.monotonic() - started - report.seconds
            self._collect_rejects(tgt, report)
        return report

    def _load_plan(
        self, src: psycopg.Connection[Any], tgt: psycopg.Connection[Any], rows: int, restart: bool
    ) -> list[tuple[bsql.Chunk, bool]]:
        chunks, rejects = sql.Identifier(bsql.CHUNKS_TABLE), sql.Identifier(bsql.REJECTS_TABLE)
        with tgt.transaction():
            create_state_tables(tgt)
            if restart:
                for t in (chunks, rejects):
                    tgt.execute(
                        sql.SQL("DELETE FROM {} WHERE target_table = %s").format(t), [self.table]
                    )
            stored = tgt.execute(
                sql.SQL(
                    "SELECT chunk_no, lower_id, upper_id, planned_rows, finished_at IS NOT NULL"
                    " FROM {} WHERE target_table = %s ORDER BY chunk_no"
                ).format(chunks),
                [self.table],
            ).fetchall()
            if stored:
                return [
                    (bsql.Chunk(n, lo, hi, planned), done) for n, lo, hi, planned, done in stored
                ]
            with src.transaction():
                src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                count = src.execute(sql.SQL("SELECT count(*) FROM {}").format(self.job.source))
                total = int(count.fetchone()[0])  # type: ignore[index]  # an aggregate or a function call: always one row
                bounds = [r[0] for r in src.execute(bsql.plan_boundaries(self.job.source, rows))]
            plan = bsql.plan_chunks(bounds, total, rows)
            with tgt.cursor() as cur:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (target_table, chunk_no, lower_id, upper_id, planned_rows)"
                        " VALUES (%s, %s, %s, %s, %s)"
                    ).format(chunks),
                    [(self.table, c.number, c.lower, c.upper, c.planned_rows) for c in plan],
                )
            log.info("backfill %s: planned %d chunks for %d rows", self.table, len(plan), total)
            return [(c, False) for c in plan]

    def _run_workers(
        self,
        todo: list[bsql.Chunk],
        workers: int,
        path: LoadPath,
        report: BackfillReport,
        progress: Progress,
    ) -> None:
        queue: Iterator[bsql.Chunk] = iter(todo)
        worker_cls = {"sql": SqlWorker, "copy": CopyWorker, "python": PythonWorker}[path]

        def work() -> None:
            try:
                with worker_cls(self.job) as worker:
                    while not self._stop.is_set():
                        with self._lock:
                            chunk = next(queue, None)
                        if chunk is None:
                            return
                        counts = self._with_retries(worker, chunk)
                        with self._lock:
                            report.rows_read += counts[0]
                            report.rows_loaded += counts[1]
                            report.rows_skipped += counts[2]
                            report.rows_rejected += counts[3]
                        progress.advance(counts[0])
            except BaseException as exc:
                with self._lock:
                    self._errors.append(exc)
                self._stop.set()

        threads = [threading.Thread(target=work, name=f"backfill-{n}") for n in range(workers)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            self._stop.set()
            raise
        if self._errors:
            raise self._errors[0]

    def _with_retries(self, worker: Worker, chunk: bsql.Chunk) -> Counts:
        """Load a chunk, retrying what a retry can fix (deadlock with the stream, outage)."""
        delay = 0.5
        for attempt in range(1, _RETRIES + 1):
            try:
                worker.count_attempt(chunk)
                return worker.load(chunk)
            except (TargetUnavailable, psycopg.OperationalError) as exc:
                if attempt == _RETRIES or self._stop.is_set():
                    raise TargetUnavailable(f"chunk {chunk.number}: {exc}") from exc
                log.warning("chunk %d: %s; retrying in %.1f s", chunk.number, exc, delay)
                worker.reset()
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except psycopg.Error as exc:  # the data or the schema: a retry fails the same way
                raise TerminalError(
                    f"chunk {chunk.number} (ids from {chunk.lower!r} to {chunk.upper!r}):"
                    f" {type(exc).__name__}: {str(exc).strip()}"
                ) from exc
        raise AssertionError("unreachable")

    def _collect_rejects(self, tgt: psycopg.Connection[Any], report: BackfillReport) -> None:
        """Rejects no streamed change has replaced since (those are resolved)."""
        rows = tgt.execute(
            sql.SQL(
                "SELECT r.run_id, r.reason, count(*) OVER () FROM {r} r WHERE r.target_table = %s"
                " AND NOT EXISTS (SELECT FROM {v} v WHERE v.run_id = r.run_id AND v.source_lsn > 0)"
                " ORDER BY r.run_id LIMIT %s"
            ).format(r=sql.Identifier(bsql.REJECTS_TABLE), v=sql.Identifier(self.versions)),
            [self.table, _SHOWN_REJECTS],
        ).fetchall()
        report.rejects = [(run_id, reason) for run_id, reason, _ in rows]
        report.rejects_total = int(rows[0][2]) if rows else 0
