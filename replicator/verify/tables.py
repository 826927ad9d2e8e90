"""The reads of ``replicator verify``: the two tables being compared, in each database.

Every query comes from :mod:`replicator.verify.sql`; this module runs them, in one
snapshot per table for the checksums, through server-side cursors for the row hashes
(both databases at once), and maps source rows with
:func:`~replicator.mapping.rows.map_to_tuple` for the row-level diff.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from queue import Full, Queue
from typing import Any

import psycopg
from psycopg import sql

from replicator.db.connect import connect
from replicator.errors import MappingError
from replicator.mapping.columns import SOURCE_COLUMNS
from replicator.mapping.rows import map_to_tuple
from replicator.observe.progress import Progress
from replicator.verify import sql as vs
from replicator.verify.report import Image, Unmappable

KEY_BATCH = 10_000


@dataclass
class Observed:
    """What one read of some keys saw: the source rows as the target should hold them,
    the target rows, and the order guard's (source LSN, deleted) of each key."""

    images: dict[str, Image]
    targets: dict[str, tuple[Any, ...]]
    versions: dict[str, tuple[int, bool]]

    def of(self, run_id: str) -> tuple[Any, ...]:
        """Everything seen of one key: equal across two reads only if nothing moved."""
        return (
            self.images.get(run_id),
            self.targets.get(run_id),
            self.versions.get(run_id),
        )


class Tables:
    """The two tables being compared, and every read verify makes of them."""

    def __init__(self, source_dsn: str, target_dsn: str, target_table: str) -> None:
        self.source_dsn, self.target_dsn = source_dsn, target_dsn
        self.source = vs.source_side()
        self.target = vs.target_side(target_table)
        self.versions_table = f"{target_table}_versions"  # the sink's order guard

    def connect(self, side: vs.Side, **kwargs: Any) -> psycopg.Connection[Any]:
        dsn = self.source_dsn if side is self.source else self.target_dsn
        autocommit = kwargs.pop("autocommit", False)
        return connect(
            dsn,
            f"the {side.name} database",
            autocommit=autocommit,
            application_name="replicator-verify",
            **kwargs,
        )

    def count(self, side: vs.Side) -> int:
        with self.connect(side, autocommit=True) as conn:
            (n,) = conn.execute(vs.count_rows(side)).fetchone() or (0,)
        return int(n)

    def plan(self, rows: int, chunk_rows: int) -> list[str]:
        fractions = vs.boundary_fractions(rows, chunk_rows)
        if not fractions:
            return []
        with self.connect(self.source, autocommit=True) as conn:
            (bounds,) = conn.execute(
                vs.plan_boundaries(self.source), {"fractions": fractions}
            ).fetchone() or ([],)
        return vs.distinct_sorted(bounds or [])

    def blocks(self, side: vs.Side) -> tuple[int, bool]:
        """The table's size in blocks, and whether it can be read in ctid slices (PG 14+)."""
        with self.connect(side, autocommit=True) as conn:
            name = sql.Identifier(side.table).as_string(conn)
            blocks, version = conn.execute(vs.relation_blocks(), [name]).fetchone() or (0, 0)
        return int(blocks), int(version) >= 140000

    def checksums(
        self, side: vs.Side, bounds: list[str], slice_blocks: int, meter: Progress
    ) -> dict[int, tuple[int, int]]:
        """``{chunk: (rows, sum of row hashes)}`` of one table, in one snapshot."""
        blocks, sliceable = self.blocks(side)
        slices = vs.block_slices(blocks, slice_blocks) if sliceable else [None]
        out: dict[int, tuple[int, int]] = {}
        with self.connect(side) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                for i, piece in enumerate(slices):
                    params: dict[str, Any] = {"bounds": bounds}
                    if piece is not None:
                        params["first"], params["last"] = piece
                    query = vs.checksums(side, sliced=piece is not None)
                    for chunk, rows, total in conn.execute(query, params):
                        n, h = out.get(chunk, (0, 0))
                        out[chunk] = (n + rows, h + int(total))
                    last = piece is None or i == len(slices) - 1
                    meter.advance(max(1, blocks - i * slice_blocks) if last else slice_blocks)
        return out

    def chunk_hashes(self, side: vs.Side, bounds: list[str], chunks: list[int]) -> Iterator[Any]:
        """``(chunk, {key: row hash})`` of the given chunks, ascending, via a server cursor."""
        with self.connect(side) as conn, conn.cursor(name=f"verify_{side.name}") as cur:
            cur.itersize = 20_000
            cur.execute(vs.row_hashes(side), {"bounds": bounds, "chunks": chunks})
            for chunk, group in groupby(cur, key=itemgetter(0)):
                yield chunk, {key: h for _, key, h in group}

    def by_key(self, keys: Iterable[str], advance: Callable[[int], None] | None = None) -> Observed:
        """The mapped source rows, and the target rows with their order-guard versions
        (read in one snapshot), of ``keys``, now."""
        seen = Observed({}, {}, {})
        wanted = sorted(set(keys))
        with (
            self.connect(self.source, autocommit=True) as src,
            self.connect(self.target, autocommit=True) as tgt,
        ):
            tgt.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            (has_versions,) = tgt.execute(
                "SELECT to_regclass(%s) IS NOT NULL",
                [sql.Identifier(self.versions_table).as_string(tgt)],
            ).fetchone() or (False,)
            for group in vs.batches(wanted, KEY_BATCH):
                keys_param = {"keys": list(group)}
                with tgt.transaction():
                    for row in tgt.execute(vs.rows_by_key(self.target), keys_param):
                        seen.targets[row[0]] = tuple(row)
                    if has_versions:
                        query = vs.versions_by_key(self.versions_table)
                        for run_id, lsn, deleted in tgt.execute(query, keys_param):
                            seen.versions[run_id] = (lsn, deleted)
                rows = src.execute(vs.rows_by_key(self.source), keys_param)
                seen.images.update(map(image_of, rows))
                if advance is not None:
                    advance(len(group))
        return seen

    def source_ids(self, keys: Sequence[str]) -> set[str]:
        with self.connect(self.source, autocommit=True) as conn:
            query = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s::text[])").format(
                sql.Identifier(self.source.table)
            )
            return {
                r[0]
                for group in vs.batches(keys, KEY_BATCH)
                for r in conn.execute(query, [list(group)])
            }


def image_of(row: Sequence[Any]) -> tuple[str, Image]:
    """A source row (SOURCE_COLUMNS order) as the target should hold it."""
    try:
        values, _ = map_to_tuple(dict(zip(SOURCE_COLUMNS, row, strict=True)))
    except MappingError as exc:
        return str(row[0]), Unmappable(str(exc))
    return str(values[0]), values


def prefetched(items: Iterator[Any], depth: int = 4) -> Iterator[Any]:
    """``items``, produced on another thread (both databases then work at once)."""
    done = object()
    queue: Queue[Any] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put(item, timeout=0.2)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((done, None))
        except BaseException as exc:  # handed to the consuming thread
            queue.put((done, exc))

    thread = threading.Thread(target=produce, name="verify-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if isinstance(item, tuple) and item and item[0] is done:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        stop.set()
        thread.join(30)


def merge_chunks(
    source: Iterator[Any], target: Iterator[Any]
) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """Pair the chunks of both sides (either may lack a chunk)."""
    s, t = next(source, None), next(target, None)
    while s is not None or t is not None:
        chunk = min(x[0] for x in (s, t) if x is not None)
        source_part: dict[str, Any] = {}
        target_part: dict[str, Any] = {}
        if s is not None and s[0] == chunk:
            source_part = s[1]
            s = next(source, None)
        if t is not None and t[0] == chunk:
            target_part = t[1]
            t = next(target, None)
        yield chunk, source_part, target_part
