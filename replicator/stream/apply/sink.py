"""The PostgreSQL sink: apply a batch of row changes and the positions it consumed.

Invariants (the rest of the package relies on them):

1. One transaction per :meth:`PostgresSink.apply`: target rows, versions and partition
   positions commit together or not at all, so a stored position never disagrees with
   the table's content.  Errors are classified by :mod:`replicator.db.connect`: a
   transient failure raises :class:`~replicator.errors.TargetUnavailable` (the next call
   reconnects); the target rejecting data raises :class:`~replicator.errors.EventError`
   with reason ``target_rejected``; a missing table or privilege raises
   :class:`~replicator.errors.ConfigurationError`.  Retrying a batch after any failure is
   safe: applying the same change twice is harmless.
2. Order guard: every change is claimed by the ordering rule of
   :mod:`~replicator.stream.apply.versions` (its version ``(generation, lsn)`` against the
   row's entry and the table's truncate floor) before anything is written; a change the
   rule refuses is skipped (stale, or behind the floor).  LSN 0 is the weakest version
   of a generation: the transform gives it to snapshot reads, which then fill rows no
   streamed change of their generation has touched.  A batch stamped before a generation
   was recorded rolls back (``stamped``).  Deletes keep their entry, so an older image
   can never bring a deleted row back; with ``apply_deletes=False`` the target row stays
   but the version is still recorded.
3. Columns named in ``RowChange.unavailable`` (unchanged TOASTed values) are never
   written.  Such a change updates an existing row only; when the row is absent it is
   not inserted (it could not be complete), not versioned, and reported in
   ``ApplyResult.unresolved``.
4. Speed: changes are folded to one per ``run_id`` (:func:`~replicator.stream.apply.batch.fold`),
   staged with one binary COPY and applied with the set-based statements of
   :mod:`replicator.stream.apply.sink_sql`.  No per-batch DDL.
5. Positions are stored through :class:`~replicator.stream.apply.checkpoint.Checkpoint`, fenced
   when it has a fence (compare-and-set: ``PositionsFenced`` rolls the batch back).
6. Bounded (``timeouts``, the settings' ``apply_lock_timeout_s`` and
   ``apply_statement_timeout_s`` for ``run``): a lock held on the target or a statement
   that does not end fails the batch as transient; nothing waits for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

from replicator.db.connect import classify, connect, with_application_name
from replicator.db.schema import check_target_names, cost_column, ensure_target
from replicator.errors import EventError, GenerationChanged, TargetUnavailable
from replicator.events import ApplyResult, PartitionPosition, RowChange
from replicator.mapping.columns import TARGET_COLUMNS, TARGET_INDEX, CostColumn
from replicator.settings import Settings
from replicator.stream.apply import generations
from replicator.stream.apply.batch import fold
from replicator.stream.apply.checkpoint import Checkpoint, PositionFence
from replicator.stream.apply.sink_sql import COPY_TYPES, STAGE_BUFFERS, SinkStatements

_NULLS = (None,) * (len(TARGET_COLUMNS) - 1)


class PostgresSink:
    """Applies folded batches to ``table`` with their positions, one transaction each."""

    def __init__(
        self,
        conninfo: str,
        *,
        table: str = "workflow_runs",
        offsets_table: str = "replicator_offsets",
        versions_table: str | None = None,
        apply_deletes: bool = True,
        connect_timeout: float = 5.0,
        fence: PositionFence | None = None,
        timeouts: tuple[float, float] | None = None,
    ) -> None:
        self.table = table
        self.offsets_table = offsets_table
        self.versions_table = versions_table or f"{table}_versions"
        self.apply_deletes = apply_deletes
        check_target_names(table, offsets_table, self.versions_table)
        self.checkpoint = Checkpoint(offsets_table, table, fence)
        self._conninfo = with_application_name(conninfo)  # a bad DSN is reported here
        self._connect_timeout = connect_timeout
        self._timeouts = timeouts  # (lock, statement) seconds of the session, if bounded
        self._conn: psycopg.Connection[Any] | None = None
        self._sql = SinkStatements(table, self.versions_table)

    @classmethod
    def of(cls, settings: Settings, fence: PositionFence | None, **options: Any) -> PostgresSink:
        """The sink of ``settings``' target table, its positions fenced by ``fence``."""
        return cls(
            settings.target_dsn.get_secret_value(),
            table=settings.target_table,
            offsets_table=settings.offsets_table,
            fence=fence,
            timeouts=(settings.apply_lock_timeout_s, settings.apply_statement_timeout_s),
            **options,
        )

    @property
    def fence(self) -> PositionFence | None:
        return self.checkpoint.fence

    # -- public API --------------------------------------------------------------------

    def ensure_schema(self) -> list[str]:
        """Create what is missing (users, target + indexes, offsets, versions); report each."""
        with self._transaction("create the schema") as conn:
            return ensure_target(conn, self.table, self.offsets_table, self.versions_table)

    def cost_column(self) -> CostColumn:
        """The target's ``total_cost`` type, whose limits the mapping applies."""
        with self._transaction("read the column types") as conn:
            return cost_column(conn, self.table)

    def load_positions(self, topic: str) -> dict[int, PartitionPosition]:
        """The stored positions of ``topic`` for this target table, by partition."""
        with self._transaction("load positions") as conn:
            return self.checkpoint.load(conn, topic)

    def stream_closed(self, topic: str) -> bool:
        """``replicator cutover`` closed the stream of ``topic`` into this table."""
        with self._transaction("read the positions") as conn:
            return self.checkpoint.closed(conn, topic)

    def load_generations(self, topic: str) -> list[generations.Generation]:
        """The snapshot generations recorded for ``topic``."""
        with self._transaction("read the snapshot generations") as conn:
            return generations.load(conn, topic)

    def record_recreated(self, topic: str, topic_id: str, partitions: list[int]) -> int | None:
        """A generation for the re-created topic ``topic_id`` (:func:`~replicator.stream.
        apply.generations.record_recreated`); its number, None when one exists already."""
        with self._transaction("record a snapshot generation") as conn:
            return generations.record_recreated(conn, topic, topic_id, partitions)

    def complete_generation(self, topic: str, number: int, marks: dict[int, int]) -> None:
        """Generation ``number`` of ``topic`` is wholly in the log, below ``marks``."""
        with self._transaction("complete a snapshot generation") as conn:
            generations.complete(conn, topic, number, marks)

    def sweep(self, topic: str) -> tuple[int, int] | None:
        """Remove the rows a completed re-snapshot of ``topic`` did not have, once this
        table's positions reach its marks (:func:`~replicator.stream.apply.generations.sweep`)."""
        with self._transaction("sweep after a snapshot") as conn:
            generation = generations.due(conn, self.table, topic)
            if generation is None or not self.checkpoint.reached(
                conn, topic, generation.marks or {}, generation.topic_id
            ):
                return None
            removed = generations.sweep(
                conn,
                generation,
                table=self.table,
                versions=self.versions_table,
                topic=topic,
                apply_deletes=self.apply_deletes,
            )
            return None if removed is None else (generation.number, removed)

    def apply(
        self,
        changes: Sequence[RowChange],
        positions: Sequence[PartitionPosition],
        *,
        then: Callable[[psycopg.Connection[Any], ApplyResult], None] | None = None,
        stamped: tuple[str, int] | None = None,
        fenced: Sequence[PartitionPosition] = (),
        rehearse: bool = False,
    ) -> ApplyResult:
        """Apply ``changes`` (log order per run_id) and store ``positions``, atomically.

        ``then(conn, result)`` runs last, inside the same transaction (the backfill
        records its finished chunk there).  ``stamped``: (topic, the newest generation
        the changes were stamped knowing); a newer one recorded since raises
        :class:`GenerationChanged` (nothing is applied).  ``fenced``: positions not
        stored but checked against the fence (:meth:`Checkpoint.check`): a part of a
        batch applied without its positions commits only while they are still ours.
        ``rehearse``: everything is done and then rolled back; the result says exactly
        what applying would do (``dlq redrive --dry-run``)."""
        try:
            return self._apply(fold(changes), positions, then, stamped, fenced, rehearse)
        except _Rehearsed as done:
            return done.result

    def _apply(
        self,
        folded: list[RowChange],
        positions: Sequence[PartitionPosition],
        then: Callable[[psycopg.Connection[Any], ApplyResult], None] | None,
        stamped: tuple[str, int] | None,
        fenced: Sequence[PartitionPosition],
        rehearse: bool,
    ) -> ApplyResult:
        result = ApplyResult(0, 0, 0, ())
        with self._transaction("apply a batch") as conn:
            if stamped is not None and generations.latest(conn, stamped[0]) != stamped[1]:
                raise GenerationChanged(
                    f"a snapshot generation of {stamped[0]} was recorded after generation"
                    f" {stamped[1]}: re-reading from the stored positions"
                )
            if folded:
                result = self._write(conn, folded)
            # after the rows: positions are locked in the order every writer takes them
            # (versions, rows, positions; the cutover too)
            self.checkpoint.check(conn, fenced)
            stored = self.checkpoint.store(conn, positions)
            if then is not None:
                then(conn, result)
            if rehearse:
                raise _Rehearsed(result)  # rolls the transaction back
        self.checkpoint.committed(stored)
        return result

    def truncate(self, generation: int, lsn: int, positions: Sequence[PartitionPosition]) -> int:
        """Apply a source TRUNCATE at version ``(generation, lsn)`` and store
        ``positions``, in one transaction: delete the rows no later change wrote, mark
        their versions deleted at the truncate's and raise the table's truncate floor to
        it (argument: truncation.py).  A lock, DELETE, UPDATE and INSERT within the service
        role's privileges.  Returns the rows deleted."""
        at = {"g": generation, "l": lsn}
        with self._transaction("apply a source TRUNCATE") as conn:
            lock, rows, versions, floor = self._sql.truncate
            conn.execute(lock)
            deleted = conn.execute(rows, at).rowcount
            conn.execute(versions, at)
            conn.execute(floor, at)
            stored = self.checkpoint.store(conn, positions)
        self.checkpoint.committed(stored)
        return deleted

    def empty(self) -> None:
        """Empty the table and its versions and forget its positions (a replay's shadow
        table, before it is rebuilt from the start of the topic)."""
        with self._transaction("empty the table") as conn:
            for statement in self._sql.empty:
                conn.execute(statement)
            self.checkpoint.forget(conn)
        self.checkpoint.committed([], replace=True)

    def backend_pid(self) -> int:
        """The process id of this sink's PostgreSQL backend (the bench reads its CPU time)."""
        with self._transaction("read the backend's process id") as conn:
            return int(conn.info.backend_pid)

    def ping(self) -> None:
        """Raise :class:`TargetUnavailable` unless the target answers."""
        with self._transaction("ping") as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self._discard()

    def __enter__(self) -> PostgresSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _write(self, conn: psycopg.Connection[Any], folded: list[RowChange]) -> ApplyResult:
        n_deletes, n_partial = self._stage(conn, folded)
        skipped = conn.execute(self._sql.claim_versions).fetchall()
        unresolved = tuple(run_id for run_id, _, missing, _ in skipped if missing)
        behind = sum(1 for *_, behind_floor in skipped if behind_floor)
        stale = len(skipped) - len(unresolved) - behind
        deletes = n_deletes - sum(1 for _, is_delete, _, _ in skipped if is_delete)
        upserted = len(folded) - n_deletes - (len(skipped) - (n_deletes - deletes))
        deleted = 0
        if deletes and self.apply_deletes:
            conn.execute(self._sql.delete_rows)
            deleted = deletes
        if len(folded) > n_deletes + n_partial:
            conn.execute(self._sql.upsert_full)
        if n_partial:
            conn.execute(self._sql.update_partial)
        return ApplyResult(upserted, deleted, stale, unresolved, behind)

    def _stage(self, conn: psycopg.Connection[Any], folded: list[RowChange]) -> tuple[int, int]:
        """COPY the folded batch into the staging table; the number of deletes and partials."""
        n_deletes = n_partial = 0
        with conn.cursor().copy(self._sql.copy_stage) as copy:
            copy.set_types(COPY_TYPES)
            write = copy.write_row
            ch = None
            try:
                for ch in folded:
                    if ch.delete:
                        n_deletes += 1
                        write((ch.generation, ch.lsn, True, None, ch.run_id, *_NULLS))
                    elif ch.unavailable:
                        n_partial += 1
                        write((ch.generation, ch.lsn, False, *_partial_row(ch)))
                    else:
                        write((ch.generation, ch.lsn, False, None, *ch.values))  # type: ignore[misc]  # a change that is not a delete has values
            except (TypeError, OverflowError, psycopg.DataError) as exc:
                run_id = ch.run_id if ch else "?"
                raise EventError(
                    f"run_id {run_id!r}: a value cannot be written to {self.table!r}: {exc}",
                    reason="target_rejected",
                ) from exc
        return n_deletes, n_partial

    @contextmanager
    def _transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            conn = self._connection()
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            error = classify(exc, f"{what} on {self.table!r}")
            if isinstance(error, TargetUnavailable) or (self._conn and self._conn.broken):
                self._discard()
            raise error from exc
        except TargetUnavailable:
            self._discard()
            raise

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._discard()
        conn = connect(self._conninfo, "the target database", connect_timeout=self._connect_timeout)
        try:
            # Statements are replanned every time: a cached generic plan would carry the
            # staging table's size at the moment it was prepared.
            conn.prepare_threshold = None
            # A batch's stage (up to batch_max_bytes) stays in memory: with the default 8 MB
            # of temporary buffers, it spilled to disk and every commit's truncation of the
            # stage (ON COMMIT DELETE ROWS) waited on that.  Allowed only before the
            # session's first temporary table; memory is taken as the stage grows.
            conn.execute(STAGE_BUFFERS)
            conn.execute(self._sql.create_stage)
            if self._timeouts is not None:
                # a lock held on the target (a long transaction, a migration) makes the
                # batch fail as transient and retry, instead of stalling its lane for ever
                lock_s, statement_s = self._timeouts
                conn.execute(f"SET lock_timeout = '{int(lock_s * 1000)}ms'")
                conn.execute(f"SET statement_timeout = '{int(statement_s * 1000)}ms'")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()


class _Rehearsed(Exception):
    """A rehearsed apply's result, raised to roll its transaction back."""

    def __init__(self, result: ApplyResult) -> None:
        super().__init__("rehearsed")
        self.result = result


def _partial_row(ch: RowChange) -> tuple[Any, ...]:
    """Unavailable columns are staged as NULL: their placeholder must not reach a cast."""
    values = list(ch.values)  # type: ignore[arg-type]  # a change that is not a delete has values
    for name in ch.unavailable:
        index = TARGET_INDEX.get(name, 0)
        if index == 0:  # unknown name or run_id: a mapping bug, not bad data
            raise ValueError(f"{ch.run_id}: {name!r} cannot be an unavailable column")
        values[index] = None
    return (sorted(ch.unavailable), *values)
