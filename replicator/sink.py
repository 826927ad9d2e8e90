"""The PostgreSQL sink: apply a batch of row changes and the positions it consumed.

Invariants (the rest of the package relies on them):

1. One transaction per :meth:`PostgresSink.apply`: target rows, versions and partition
   positions commit together or not at all, so a stored position never disagrees with
   the table's content.  Connection loss and other transient failures raise
   :class:`~replicator.errors.TargetUnavailable` (the next call reconnects); the target
   rejecting data (constraint, type or size violations) raises
   :class:`~replicator.errors.EventError` with reason ``target_rejected``; a missing
   table or privilege raises :class:`~replicator.errors.ConfigurationError`.  Retrying a
   batch after any failure is safe: applying the same change twice is harmless.
2. Order guard: the versions table holds, per ``run_id``, the LSN of the newest applied
   change and whether it was a delete.  A change older than that is stale and skipped;
   an equal LSN is a redelivery and is applied again.  A change without an LSN
   (incremental snapshot read) is applied unconditionally and leaves the stored LSN as
   it was (-1 stands for "none").  LSN 0 is the weakest version: the consumer gives it
   to snapshot reads, which then fill rows no streamed change has touched.  Deletes keep
   their versions row, so an older image can never bring a deleted row back; with
   ``apply_deletes=False`` the target row stays but the version is still recorded.
3. Columns named in ``RowChange.unavailable`` (unchanged TOASTed values) are never
   written.  Such a change updates an existing row only; when the row is absent it is
   not inserted (it could not be complete), not versioned, and reported in
   ``ApplyResult.unresolved``.
4. Speed: changes are folded to one per ``run_id``, written with one binary COPY into a
   per-connection temporary staging table (``ON COMMIT DELETE ROWS``), then applied with
   a fixed set of set-based statements.  No per-batch DDL.
5. Fencing (with a :class:`PositionFence`): a partition's position is stored only if the
   stored ``next_offset`` is still the one this consumer last loaded or stored (or still
   absent when it found none), compare-and-set in the batch's transaction.  Otherwise the
   batch rolls back with :class:`~replicator.errors.PositionsFenced`: someone else moved
   the positions (``replicator replay --swap`` handed the shadow table's over, or the
   partition has another owner), and the consumer must re-read them.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from replicator.errors import (
    ConfigurationError,
    EventError,
    PositionsFenced,
    ReplicatorError,
    TargetUnavailable,
    TerminalError,
)
from replicator.mapping import TARGET_COLUMNS

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

#: Target column types.  Staged for binary COPY as text (json: psycopg's json dumper
#: would re-encode a ``str``) and int8 (int4: psycopg's binary int4 dumper silently
#: wraps values out of range); the casts into the target then check them.
_STAGE_TYPES: dict[str, str] = {
    "run_id": "text",
    "workflow_type": "text",
    "description": "text",
    "user_id": "text",
    "status": "text",
    "priority": "text",
    "max_turns": "int4",
    "session_id": "text",
    "git_branch": "text",
    "repository_url": "text",
    "created_at": "timestamp",
    "updated_at": "timestamp",
    "started_at": "timestamp",
    "completed_at": "timestamp",
    "result_data": "json",
    "error_details": "json",
    "execution_time_ms": "int4",
    "total_cost": "numeric",
    "tags": "json",
    "metadata": "json",
    "progress_data": "json",
    "resource_usage": "json",
}
if tuple(_STAGE_TYPES) != TARGET_COLUMNS:  # pragma: no cover - guards a mapping change
    raise ImportError("replicator.sink's staging types do not match mapping.TARGET_COLUMNS")

_COLUMN_INDEX = {name: i for i, name in enumerate(TARGET_COLUMNS)}
_UPDATABLE = TARGET_COLUMNS[1:]
_NULLS = (None,) * (len(TARGET_COLUMNS) - 1)
_PLACEHOLDER = re.compile(r"\{(table|offsets|versions|index_prefix)\}(\w*)")
_MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True, slots=True)
class RowChange:
    """The mapped effect of one source change on one target row.

    ``values`` follow ``TARGET_COLUMNS`` (JSON columns as ``str``); ``None`` for a delete.
    ``lsn`` is ``None`` for changes without a source LSN (applied unconditionally).
    """

    run_id: str
    lsn: int | None
    delete: bool
    values: tuple[Any, ...] | None
    unavailable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """Where to resume a partition: ``next_offset`` is the offset of the NEXT message."""

    topic: str
    partition: int
    next_offset: int
    last_lsn: int | None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What became of a folded batch, one count per change (one change per run_id).

    ``upserted``: upserts applied (an identical image is applied without a write);
    ``deleted``: deletes applied to the target (0 when deletes are ignored); ``stale``:
    changes older than the stored version, skipped; ``unresolved``: run_ids of changes
    with unavailable columns whose target row does not exist, not applied.
    """

    upserted: int
    deleted: int
    stale: int
    unresolved: tuple[str, ...]


def fold(changes: Sequence[RowChange]) -> list[RowChange]:
    """Pure. One change per run_id, the last in input order wins (input is log order per key).
    A later upsert with unavailable columns takes those columns' values from an earlier upsert
    of the same run_id in the batch (the value did not change); only columns still unknown stay
    in `unavailable`. A delete followed by an upsert -> the upsert (no unavailable filling
    across a delete). The LSN kept is the winner's."""
    latest: dict[str, RowChange] = {}
    for change in changes:
        if change.unavailable and not change.delete:
            previous = latest.get(change.run_id)
            if previous is not None and not previous.delete:
                change = _fill(change, previous)
        latest[change.run_id] = change
    return list(latest.values())


def _fill(change: RowChange, previous: RowChange) -> RowChange:
    assert change.values is not None and previous.values is not None
    known = [n for n in change.unavailable - previous.unavailable if n in _COLUMN_INDEX]
    if not known:
        return change
    values = list(change.values)
    for name in known:
        values[_COLUMN_INDEX[name]] = previous.values[_COLUMN_INDEX[name]]
    still = change.unavailable.difference(known)
    return RowChange(change.run_id, change.lsn, False, tuple(values), frozenset(still))


class PositionFence:
    """The positions one consumer expects to find stored: what it last loaded or stored,
    per ``(topic, partition)``; a partition it does not know is expected to be absent.

    Shared by the sinks of one consumer (positions may be loaded on one connection and
    stored on another); thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, int], int] = {}

    def expected(self, topic: str, partition: int) -> int | None:
        with self._lock:
            return self._known.get((topic, partition))

    def loaded(self, topic: str, positions: Mapping[int, PartitionPosition]) -> None:
        """Everything stored for ``topic`` was read: forget what was known before."""
        with self._lock:
            for key in [k for k in self._known if k[0] == topic]:
                del self._known[key]
            self._known.update(((topic, p), pos.next_offset) for p, pos in positions.items())

    def stored(self, positions: Sequence[PartitionPosition], *, replace: bool = False) -> None:
        """``positions`` were committed (``replace``: and nothing else is stored any more)."""
        with self._lock:
            if replace:
                self._known.clear()
            self._known.update(((p.topic, p.partition), p.next_offset) for p in positions)


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
    ) -> None:
        self.table = table
        self.fence = fence  # None: positions are stored unconditionally
        self.offsets_table = offsets_table
        self.versions_table = versions_table or f"{table}_versions"
        self.apply_deletes = apply_deletes
        self._index_names = [f"idx_{table}{suffix}" for suffix in _index_suffixes()]
        for name in (table, offsets_table, self.versions_table, *self._index_names):
            if not name or "\x00" in name or len(name.encode()) > _MAX_IDENTIFIER_BYTES:
                raise ConfigurationError(
                    f"table name {table!r}: {name!r} must be 1 to {_MAX_IDENTIFIER_BYTES} bytes"
                    " without NUL (index names are idx_<table>_<column>)"
                )
        try:
            options = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ConfigurationError(f"invalid target connection string: {exc}") from exc
        if "application_name" not in options:
            conninfo = psycopg.conninfo.make_conninfo(conninfo, application_name="replicator")
        self._conninfo = conninfo
        self._connect_timeout = max(2, math.ceil(connect_timeout))  # libpq: whole seconds >= 2
        self._conn: psycopg.Connection[Any] | None = None
        self._sql = _Statements(table, offsets_table, self.versions_table)

    # -- public API --------------------------------------------------------------------

    def ensure_schema(self) -> list[str]:
        """Create what is missing (users, target + indexes, offsets, versions); report each."""
        objects = [
            ("table", "users"),
            ("table", self.table),
            *(("index", name) for name in self._index_names),
            ("table", self.offsets_table),
            ("table", self.versions_table),
        ]
        names = [name for _, name in objects]
        with self._transaction("create the schema") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('replicator.ensure_schema'))")
            before = {r[0] for r in conn.execute(_EXISTING, [names])}
            templates = [
                ("users.sql", {}),
                ("workflow_runs.sql", {"table": self.table, "index_prefix": f"idx_{self.table}"}),
                (
                    "replicator_state.sql",
                    {"offsets": self.offsets_table, "versions": self.versions_table},
                ),
            ]
            if before >= set(names):
                templates = []  # no DDL: a DML-only role (schemas/roles.sql) may not run it
            for template, identifiers in templates:
                ddl = render_ddl(_read_template(template), identifiers)
                conn.execute(ddl, prepare=False)  # several statements: simple protocol
            owned = {r[0] for r in conn.execute(_INDEXES_OF, [self._index_names, self.table])}
            foreign = sorted(set(self._index_names) - owned)
            if foreign:
                raise ConfigurationError(
                    f"index names {foreign} already belong to another table; "
                    f"rename them or choose another name than {self.table!r}"
                )
        return [
            f"{kind} {name} already present" if name in before else f"created {kind} {name}"
            for kind, name in objects
        ]

    def load_positions(self, topic: str) -> dict[int, PartitionPosition]:
        """The stored positions of ``topic`` for this target table, by partition."""
        with self._transaction("load positions") as conn:
            rows = conn.execute(self._sql.load_positions, [self.table, topic]).fetchall()
        positions = {p: PartitionPosition(topic, p, offset, lsn) for p, offset, lsn in rows}
        if self.fence is not None:
            self.fence.loaded(topic, positions)
        return positions

    def apply(
        self,
        changes: Sequence[RowChange],
        positions: Sequence[PartitionPosition],
        *,
        then: Callable[[psycopg.Connection[Any], ApplyResult], None] | None = None,
    ) -> ApplyResult:
        """Apply ``changes`` (log order per run_id) and store ``positions``, atomically.

        ``then(conn, result)`` runs last, inside the same transaction (the backfill
        records its finished chunk there)."""
        folded = fold(changes)
        upserted = deleted = stale = 0
        unresolved: tuple[str, ...] = ()
        with self._transaction("apply a batch") as conn:
            if folded:
                n_deletes, n_partial = self._stage(conn, folded)
                skipped = conn.execute(self._sql.claim_versions).fetchall()
                unresolved = tuple(run_id for run_id, _, missing in skipped if missing)
                stale = len(skipped) - len(unresolved)
                deletes = n_deletes - sum(1 for _, is_delete, _ in skipped if is_delete)
                upserted = len(folded) - n_deletes - (len(skipped) - (n_deletes - deletes))
                if deletes and self.apply_deletes:
                    conn.execute(self._sql.delete_rows)
                    deleted = deletes
                if len(folded) > n_deletes + n_partial:
                    conn.execute(self._sql.upsert_full)
                if n_partial:
                    conn.execute(self._sql.update_partial)
            stored = self._store_positions(conn, positions)
            result = ApplyResult(upserted, deleted, stale, unresolved)
            if then is not None:
                then(conn, result)
        if self.fence is not None:
            self.fence.stored(stored)
        return result

    def truncate(self, positions: Sequence[PartitionPosition]) -> None:
        """Empty the target and versions tables and replace this table's positions."""
        with self._transaction("truncate the target") as conn:
            conn.execute(self._sql.truncate)
            if self.fence is None:
                conn.execute(self._sql.forget_positions, [self.table])
            stored = self._store_positions(conn, positions)  # fenced: checked first
            if self.fence is not None:
                conn.execute(
                    self._sql.forget_other_positions,
                    [self.table, [p.topic for p in stored], [p.partition for p in stored]],
                )
        if self.fence is not None:
            self.fence.stored(stored, replace=True)

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

    def _stage(self, conn: psycopg.Connection[Any], folded: list[RowChange]) -> tuple[int, int]:
        """COPY the folded batch into the staging table; the number of deletes and partials."""
        n_deletes = n_partial = 0
        with conn.cursor().copy(self._sql.copy_stage) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            ch = None
            try:
                for ch in folded:
                    if ch.delete:
                        n_deletes += 1
                        write((ch.lsn, True, None, ch.run_id, *_NULLS))
                    elif ch.unavailable:
                        n_partial += 1
                        write((ch.lsn, False, *_partial_row(ch)))
                    else:
                        write((ch.lsn, False, None, *ch.values))  # type: ignore[misc]
            except (TypeError, OverflowError, psycopg.DataError) as exc:
                run_id = ch.run_id if ch else "?"
                raise EventError(
                    f"run_id {run_id!r}: a value cannot be written to {self.table!r}: {exc}",
                    reason="target_rejected",
                ) from exc
        return n_deletes, n_partial

    def _store_positions(
        self, conn: psycopg.Connection[Any], positions: Sequence[PartitionPosition]
    ) -> list[PartitionPosition]:
        """Store ``positions`` (the last one per partition wins); return what was stored."""
        if not positions:
            return []
        last = {(p.topic, p.partition): p for p in positions}  # one row per key: last wins
        rows = list(last.values())
        values = [
            [p.topic for p in rows],
            [p.partition for p in rows],
            [p.next_offset for p in rows],
            [p.last_lsn for p in rows],
        ]
        if self.fence is None:
            conn.execute(self._sql.store_positions, [self.table, *values])
            return rows
        expected = [self.fence.expected(p.topic, p.partition) for p in rows]
        (count,) = conn.execute(
            self._sql.store_positions_fenced, [*values, expected, self.table, self.table]
        ).fetchone() or (0,)
        if count != len(rows):
            found = {
                (topic, part): offset
                for topic, part, offset in conn.execute(
                    self._sql.stored_positions, [self.table, values[0], values[1]]
                )
            }
            moved = [
                f"{p.topic}[{p.partition}]: expected {want}, found {found.get(key)}"
                for (key, p), want in zip(last.items(), expected, strict=True)
                if found.get(key) != want
            ]
            raise PositionsFenced(
                f"the stored positions of {self.table!r} were moved by another writer"
                f" ({'; '.join(moved) or 'concurrently'}); re-read them"
            )
        return rows

    @contextmanager
    def _transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            conn = self._connection()
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            error = _map_error(exc, what, self.table)
            if isinstance(error, TargetUnavailable) or (self._conn and self._conn.broken):
                self._discard()
            raise error from exc

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._discard()
        conn = psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
        )
        try:
            # Statements are replanned every time: a cached generic plan would carry the
            # staging table's size at the moment it was prepared.
            conn.prepare_threshold = None
            self._sql.render(conn)
            conn.execute(self._sql.create_stage)
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


@functools.cache
def _read_template(name: str) -> str:
    try:
        return (SCHEMAS_DIR / name).read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the DDL template {name}: {exc}") from exc


def _index_suffixes() -> list[str]:
    """``_status`` ... for the nine ``{index_prefix}_...`` indexes of the target DDL."""
    template = _read_template("workflow_runs.sql")
    return re.findall(r"CREATE INDEX IF NOT EXISTS \{index_prefix\}(\w+)", template)


def _partial_row(ch: RowChange) -> tuple[Any, ...]:
    """Unavailable columns are staged as NULL: their placeholder must not reach a cast."""
    values = list(ch.values)  # type: ignore[arg-type]
    for name in ch.unavailable:
        index = _COLUMN_INDEX.get(name, 0)
        if index == 0:  # unknown name or run_id: a mapping bug, not bad data
            raise ValueError(f"{ch.run_id}: {name!r} cannot be an unavailable column")
        values[index] = None
    return (sorted(ch.unavailable), *values)


def render_ddl(template: str, identifiers: dict[str, str]) -> sql.Composed:
    """A DDL template with ``{table}``, ``{offsets}``, ``{versions}`` and
    ``{index_prefix}<suffix>`` replaced by quoted identifiers (other braces are SQL)."""
    parts: list[sql.Composable] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        name, suffix = match.groups()
        if name not in identifiers:
            continue
        parts.append(sql.SQL(template[pos : match.start()]))
        if name == "index_prefix":
            parts.append(sql.Identifier(identifiers[name] + suffix))
        else:
            parts.extend([sql.Identifier(identifiers[name]), sql.SQL(suffix)])
        pos = match.end()
    parts.append(sql.SQL(template[pos:]))
    return sql.Composed(parts)


# connection, rollback (deadlock), resources, operator intervention, system error, lock
# timeouts, idle-session timeout, read-only (a failover in progress)
_TRANSIENT_STATES = ("08", "40", "53", "57", "58", "55P03", "55006", "25P03", "25006")
_DATA_STATES = ("22", "23", "54")
_CONFIG_STATES = ("42", "3D", "3F", "28")


def _map_error(exc: psycopg.Error, what: str, table: str) -> ReplicatorError:
    state = exc.sqlstate or ""
    message = f"cannot {what} on {table!r}: {type(exc).__name__}: {str(exc).strip()}"
    if isinstance(exc, psycopg.InterfaceError) or state.startswith(_TRANSIENT_STATES):
        return TargetUnavailable(message)
    if not state and isinstance(exc, psycopg.OperationalError):
        return TargetUnavailable(message)  # no server answer: connect or socket failure
    if state.startswith(_DATA_STATES) or (not state and isinstance(exc, psycopg.DataError)):
        return EventError(message, reason="target_rejected")
    if state in ("42P01", "42703"):  # undefined table / column
        return ConfigurationError(f"{message} (create the schema first: ensure_schema)")
    if state.startswith(_CONFIG_STATES):  # privileges, authentication, missing database
        return ConfigurationError(message)
    return TerminalError(message)


_EXISTING = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relname = ANY(%s)"""
_INDEXES_OF = """
    SELECT i.relname FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = i.relnamespace
    WHERE n.nspname = current_schema() AND i.relname = ANY(%s) AND t.relname = %s"""
_STAGED = {"json": "text", "int4": "int8"}
_COPY_TYPES = [
    "int8",
    "bool",
    "text[]",
    *(_STAGED.get(t, t) for t in _STAGE_TYPES.values()),
]


class _Statements:
    """Every statement the sink runs, composed once; rendered to text per connection."""

    def __init__(self, table: str, offsets: str, versions: str) -> None:
        t, o, v = sql.Identifier(table), sql.Identifier(offsets), sql.Identifier(versions)
        s = sql.Identifier("pg_temp", "replicator_sink_stage")
        cols = sql.SQL(", ").join(map(sql.Identifier, TARGET_COLUMNS))
        stage_types = [sql.SQL(_STAGED.get(ty, ty)) for ty in _STAGE_TYPES.values()]

        def staged(name: str) -> sql.Composable:
            cast = f"::{_STAGE_TYPES[name]}" if _STAGE_TYPES[name] in _STAGED else ""
            return sql.SQL("s.{}" + cast).format(sql.Identifier(name))

        def comparable(alias: str, name: str) -> sql.Composable:
            cast = "::text" if _STAGE_TYPES[name] == "json" else ""  # json has no "="
            return sql.SQL(alias + ".{}" + cast).format(sql.Identifier(name))

        q = sql.SQL
        self._composed: dict[str, sql.Composable] = {
            "create_stage": q(
                "CREATE TEMP TABLE IF NOT EXISTS {s} (lsn bigint, del boolean NOT NULL,"
                " unavail text[], {defs}) ON COMMIT DELETE ROWS"
            ).format(
                s=s,
                defs=q(", ").join(
                    q("{} {}").format(sql.Identifier(n), ty)
                    for n, ty in zip(TARGET_COLUMNS, stage_types, strict=True)
                ),
            ),
            "copy_stage": q(
                "COPY {s} (lsn, del, unavail, {cols}) FROM STDIN (FORMAT BINARY)"
            ).format(s=s, cols=cols),
            # Claim a version for every applicable change (the upsert also row-locks it
            # against a concurrent writer), then drop from the stage what was not claimed:
            # stale changes, and partial changes whose target row is missing (unresolved).
            "claim_versions": q(
                "WITH won AS ("
                " INSERT INTO {v} AS v (run_id, source_lsn, deleted)"
                " SELECT s.run_id, COALESCE(s.lsn, -1), s.del FROM {s} s"
                " WHERE s.unavail IS NULL OR EXISTS (SELECT FROM {t} t WHERE t.run_id = s.run_id)"
                " ON CONFLICT (run_id) DO UPDATE"
                " SET source_lsn = GREATEST(v.source_lsn, EXCLUDED.source_lsn),"
                " deleted = EXCLUDED.deleted"
                " WHERE EXCLUDED.source_lsn = -1 OR EXCLUDED.source_lsn >= v.source_lsn"
                " RETURNING v.run_id)"
                " DELETE FROM {s} s WHERE NOT EXISTS (SELECT FROM won WHERE won.run_id = s.run_id)"
                " RETURNING s.run_id, s.del, s.unavail IS NOT NULL"
                " AND NOT EXISTS (SELECT FROM {t} t WHERE t.run_id = s.run_id)"
                " AND NOT EXISTS (SELECT FROM {v} v WHERE v.run_id = s.run_id"
                " AND v.source_lsn > s.lsn)"
            ).format(s=s, t=t, v=v),
            "delete_rows": q(
                "DELETE FROM {t} t USING {s} s WHERE s.del AND t.run_id = s.run_id"
            ).format(t=t, s=s),
            "upsert_full": q(
                "INSERT INTO {t} AS t ({cols}) SELECT {vals} FROM {s} s"
                " WHERE NOT s.del AND s.unavail IS NULL"
                " ON CONFLICT (run_id) DO UPDATE SET {sets}"
                " WHERE ({old}) IS DISTINCT FROM ({new})"  # a redelivery writes nothing
            ).format(
                t=t,
                s=s,
                cols=cols,
                vals=q(", ").join(map(staged, TARGET_COLUMNS)),
                sets=q(", ").join(
                    q("{c} = EXCLUDED.{c}").format(c=sql.Identifier(n)) for n in _UPDATABLE
                ),
                old=q(", ").join(comparable("t", n) for n in _UPDATABLE),
                new=q(", ").join(comparable("excluded", n) for n in _UPDATABLE),
            ),
            "update_partial": q(
                "UPDATE {t} t SET {sets} FROM {s} s"
                " WHERE s.unavail IS NOT NULL AND NOT s.del AND t.run_id = s.run_id"
            ).format(
                t=t,
                s=s,
                sets=q(", ").join(
                    q("{c} = CASE WHEN {name} = ANY(s.unavail) THEN t.{c} ELSE {val} END").format(
                        c=sql.Identifier(n), name=sql.Literal(n), val=staged(n)
                    )
                    for n in _UPDATABLE
                ),
            ),
            "store_positions": q(
                "INSERT INTO {o} AS o (target_table, topic, kafka_partition, next_offset, last_lsn)"
                " SELECT %s, * FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[])"
                " ON CONFLICT (target_table, topic, kafka_partition) DO UPDATE"
                " SET next_offset = EXCLUDED.next_offset,"
                " last_lsn = COALESCE(EXCLUDED.last_lsn, o.last_lsn), updated_at = now()"
            ).format(o=o),
            "load_positions": q(
                "SELECT kafka_partition, next_offset, last_lsn FROM {o}"
                " WHERE target_table = %s AND topic = %s ORDER BY kafka_partition"
            ).format(o=o),
            # compare-and-set: a row moves only from the expected offset (NULL: only when absent)
            "store_positions_fenced": q(
                "WITH want AS (SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[],"
                " %s::bigint[], %s::bigint[]) AS w(topic, part, next_offset, last_lsn, expected)),"
                " moved AS (UPDATE {o} AS o SET next_offset = w.next_offset,"
                " last_lsn = COALESCE(w.last_lsn, o.last_lsn), updated_at = now() FROM want w"
                " WHERE o.target_table = %s AND o.topic = w.topic AND o.kafka_partition = w.part"
                " AND o.next_offset = w.expected RETURNING 1),"
                " added AS (INSERT INTO {o} (target_table, topic, kafka_partition, next_offset,"
                " last_lsn) SELECT %s, w.topic, w.part, w.next_offset, w.last_lsn FROM want w"
                " WHERE w.expected IS NULL ON CONFLICT DO NOTHING RETURNING 1)"
                " SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM added)"
            ).format(o=o),
            "stored_positions": q(
                "SELECT topic, kafka_partition, next_offset FROM {o} WHERE target_table = %s"
                " AND (topic, kafka_partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
            ).format(o=o),
            "forget_positions": q("DELETE FROM {o} WHERE target_table = %s").format(o=o),
            "forget_other_positions": q(
                "DELETE FROM {o} WHERE target_table = %s AND (topic, kafka_partition)"
                " NOT IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
            ).format(o=o),
            "truncate": q("TRUNCATE {t}, {v}").format(t=t, v=v),
        }
        self.render(None)

    def render(self, conn: psycopg.Connection[Any] | None) -> None:
        for name, statement in self._composed.items():
            setattr(self, name, statement.as_string(conn))

    create_stage: str
    copy_stage: str
    claim_versions: str
    delete_rows: str
    upsert_full: str
    update_partial: str
    store_positions: str
    store_positions_fenced: str
    stored_positions: str
    load_positions: str
    forget_positions: str
    forget_other_positions: str
    truncate: str
