"""The workers of ``replicator backfill``: each loads one chunk at a time, in one
transaction with the chunk's finished mark (see :mod:`replicator.backfill.runner`).

* :class:`SqlWorker`: source and target in one database; one in-database statement.
* :class:`CopyWorker`: separate databases; binary COPY of the source rows, as they are,
  into a temporary table of the target, then the same in-database statement.
* :class:`PythonWorker`: separate databases; binary COPY out, :func:`map_to_tuple`, the
  sink's COPY + merge (:meth:`PostgresSink.apply`) with version ``(0, 0)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import Buffer, Loader
from psycopg.pq import Format

from replicator.backfill import chunks as bsql
from replicator.db.connect import connect as db_connect
from replicator.errors import MappingError
from replicator.events import SNAPSHOT_VERSION, ApplyResult, RowChange
from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TYPES
from replicator.mapping.reals import real_value
from replicator.mapping.rows import map_to_tuple
from replicator.stream.apply.sink import PostgresSink

Counts = tuple[int, int, int, int]  # rows read, loaded, skipped (streamed), rejected


@dataclass(frozen=True)
class Job:
    """What every worker of one backfill needs to know."""

    source_dsn: str
    target_dsn: str
    table: str
    versions: str
    source: sql.Composable  # the source table, schema-qualified


#: psycopg's names of the source types, for the binary COPY out.
_COPY_TYPES = [
    {"integer": "int4", "real": "float4", "timestamp without time zone": "timestamp"}.get(t, t)
    for t in SOURCE_TYPES.values()
]


def connect(dsn: str, what: str) -> psycopg.Connection[Any]:
    conn = db_connect(dsn, f"the {what} database", application_name="replicator-backfill")
    conn.prepare_threshold = None  # every chunk's statement is different
    return conn


_FINISH = sql.SQL(
    "UPDATE {} SET finished_at = clock_timestamp(), rows_read = %s, rows_loaded = %s,"
    " rows_skipped = %s, rows_rejected = %s WHERE target_table = %s AND chunk_no = %s"
).format(sql.Identifier(bsql.CHUNKS_TABLE))
_ATTEMPT = sql.SQL(
    "UPDATE {} SET attempts = attempts + 1, started_at = clock_timestamp()"
    " WHERE target_table = %s AND chunk_no = %s"
).format(sql.Identifier(bsql.CHUNKS_TABLE))


class Worker:
    """One connection (or two) loading one chunk at a time, each in one transaction."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._target: psycopg.Connection[Any] | None = None

    @property
    def target(self) -> psycopg.Connection[Any]:
        if self._target is None or self._target.closed or self._target.broken:
            conn = connect(self.job.target_dsn, "target")
            try:
                self.prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._target = conn
        return self._target

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Session set-up of a new target connection."""

    def count_attempt(self, chunk: bsql.Chunk) -> None:
        self.target.execute(_ATTEMPT, [self.job.table, chunk.number])  # its own transaction

    def load(self, chunk: bsql.Chunk) -> Counts:
        """(read, loaded, skipped, rejected), committed with the chunk's finished mark."""
        raise NotImplementedError

    def finish(
        self, conn: psycopg.Connection[Any], chunk: bsql.Chunk, counts: tuple[int, ...]
    ) -> None:
        conn.execute(_FINISH, [*counts, self.job.table, chunk.number])

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._target is not None:
            self._target.close()
            self._target = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqlWorker(Worker):
    def load(self, chunk: bsql.Chunk) -> Counts:
        names = bsql.Names(self.job.source, self.job.table, self.job.versions)
        statement = bsql.load_chunk_in_database(names, chunk)
        conn = self.target
        with conn.transaction():
            conn.execute("SET LOCAL jit = off")  # compiling costs more than it saves here
            read, claimed, rejected = conn.execute(statement).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
            counts = (read, claimed, read - claimed - rejected, rejected)
            self.finish(conn, chunk, counts)
        return counts


class CopyWorker(Worker):
    """The chunk's source rows, as they are, by binary COPY into a temporary table of the
    target, then mapped and merged there by the in-database statement."""

    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self._source: psycopg.Connection[Any] | None = None

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET temp_buffers = '128MB'")  # before the session's first temp table
        conn.execute(bsql.CREATE_STAGE)

    def load(self, chunk: bsql.Chunk) -> Counts:
        if self._source is None or self._source.closed or self._source.broken:
            self._source = connect(self.job.source_dsn, "source")
        names = bsql.Names(bsql.STAGE, self.job.table, self.job.versions)
        statement = bsql.load_chunk_in_database(names, bsql.Chunk(chunk.number, None, None, 0))
        conn = self.target
        with conn.transaction():
            out_sql = bsql.copy_chunk_out(self.job.source, chunk)
            with (
                self._source.cursor().copy(out_sql) as out,
                conn.cursor().copy(bsql.COPY_STAGE_IN) as into,
            ):
                for data in out:
                    into.write(data)
            conn.execute("SET LOCAL jit = off")
            conn.execute("SET LOCAL enable_nestloop = off")  # the stage has no statistics
            read, claimed, rejected = conn.execute(statement).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
            counts = (read, claimed, read - claimed - rejected, rejected)
            self.finish(conn, chunk, counts)
        return counts

    def close(self) -> None:
        super().close()
        if self._source is not None:
            self._source.close()
            self._source = None


class PythonWorker(Worker):
    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self._source: psycopg.Connection[Any] | None = None
        self._sink = PostgresSink(job.target_dsn, table=job.table, versions_table=job.versions)

    def load(self, chunk: bsql.Chunk) -> Counts:
        rows = self._read(chunk)
        changes: list[RowChange] = []
        rejects: list[tuple[str, str]] = []
        for row in rows:
            source = dict(zip(SOURCE_COLUMNS, row, strict=True))
            if source["total_cost"] is not None:  # the binary COPY's exact float32
                source["total_cost"] = real_value(source["total_cost"])
            try:
                values, unavailable = map_to_tuple(source)
            except MappingError as exc:
                rejects.append((row[0], str(exc)))
                continue
            if unavailable:
                rejects.append((row[0], f"{sorted(unavailable)} hold Debezium's placeholder"))
                continue
            changes.append(RowChange(values[0], SNAPSHOT_VERSION, False, values))
        counts: Counts = (len(rows), 0, 0, len(rejects))

        def then(conn: psycopg.Connection[Any], result: ApplyResult) -> None:
            nonlocal counts
            skipped = result.stale + result.behind_floor
            counts = (len(rows), result.upserted, skipped, len(rejects))
            if rejects:
                conn.execute(
                    bsql.STORE_REJECTS,
                    [
                        self.job.table,
                        chunk.number,
                        [r[0] for r in rejects],
                        [r[1] for r in rejects],
                    ],
                )
            self.finish(conn, chunk, counts)

        self._sink.apply(changes, [], then=then)
        return counts

    def _read(self, chunk: bsql.Chunk) -> list[tuple[Any, ...]]:
        if self._source is None or self._source.closed or self._source.broken:
            self._source = connect(self.job.source_dsn, "source")
        statement = bsql.copy_chunk_out(self.job.source, chunk)
        for tolerant in (False, True):
            cur = self._source.cursor()
            if tolerant:  # a timestamp Python cannot hold: let map_to_tuple refuse that row
                cur.adapters.register_loader("timestamp", TolerantTimestampLoader)
            try:
                with cur.copy(statement) as copy:
                    copy.set_types(_COPY_TYPES)
                    return list(copy.rows())
            except psycopg.DataError:
                if tolerant:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        super().close()
        self._sink.close()
        if self._source is not None:
            self._source.close()
            self._source = None


_INT8 = struct.Struct("!q")
_PG_EPOCH = datetime(2000, 1, 1)
_PG_TO_UNIX_US = 946_684_800_000_000


class TolerantTimestampLoader(Loader):
    """Binary TIMESTAMP -> naive datetime, or, out of Python's range (``infinity``, year
    10000...), integer microseconds since 1970, as Debezium would send them."""

    format = Format.BINARY

    def load(self, data: Buffer) -> datetime | int:
        (micros,) = _INT8.unpack(data)
        try:
            return _PG_EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            return int(micros) + _PG_TO_UNIX_US
