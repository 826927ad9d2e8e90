"""Rows written from the source by ``verify --repair``, at a version that orders them;
and the rows the stream cannot carry, found by ``verify``.

``--repair`` re-syncs every drifted row by reading it from the source and writing it
through the sink (:func:`write`): a row the source has is written, one it does not have
is deleted.  The version such a write claims keeps the ordering rule
(stream/apply/versions.py), without locking the source:

1. read ``G``, the newest completed snapshot generation (:func:`~replicator.stream.apply.
   generations.settled`), then ``L``, the source's WAL insert position, then ``X``, the
   first transaction id not yet assigned;
2. wait until no transaction older than ``X`` is running (the cluster's oldest running
   transaction is ``X`` or younger);
3. read the rows, in a snapshot taken now, and write them -- or delete the rows the
   source does not have -- at version ``(G, L)``, where the rule allows it.

Every change with an LSN below ``L`` was written by a transaction that had its id before
``L`` was read, so below ``X``, so finished (committed or not) before the read: the image
(or the row's absence) holds it, and the version refuses its event when it arrives later.
Every change not in the image was written after the read began, so after ``L``: its event
wins over the image.  Generation ``G``'s slot existed before ``L`` (its snapshot was
complete), so the changes of older generations are in what the source shows, and a
generation newer than ``G`` wins over the write whatever it holds.  A change the stream
applied already with a newer version is kept (the claim refuses the write, and verify
says so again if the row still differs): so a row inserted while the repair ran is not
deleted, and one updated is not written back.

Why not re-read rows through the connector (Debezium's incremental snapshot): such a
read carries no LSN and is the weakest version of its generation (versions.py), so it
cannot replace a row any change holds, which a drifted row usually is.  And Kafka
Connect refuses a change event larger than the largest that flows
(:data:`~replicator.clients.kafka.EVENT_MAX_BYTES`): the connector skips it
(``errors.tolerance=all``: logged by Connect and counted in its task-error metrics, which
the ``ConnectorRecordsSkipped`` alert watches) instead of stopping the stream for every
other row.  The row is then missing or stale in the target, and ``verify`` finds it like
any drift; :func:`oversized` says why: the size its event would have.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from replicator.clients.kafka import EVENT_MAX_BYTES
from replicator.errors import TransientError
from replicator.events import RowChange
from replicator.mapping.columns import SOURCE_TYPES
from replicator.settings import Settings
from replicator.stream.apply import generations
from replicator.stream.apply.sink import PostgresSink
from replicator.verify import sql as vs
from replicator.verify.tables import KEY_BATCH, Tables, image_of

#: What a change event adds around the row's JSON (the key, ``source``, ``op``, the
#: timestamps), with room for the differences between PostgreSQL's JSON and Kafka
#: Connect's: a row this close to the limit is written from the source, which is never
#: wrong, only slower.
ENVELOPE_BYTES = 64 * 1024

#: The source columns that can be large (every text column).
TEXT_COLUMNS = tuple(c for c, t in SOURCE_TYPES.items() if t == "text")

#: How long :func:`write` waits for the transactions open when it starts.
WAIT_S = 60.0


def oversized(tables: Tables, keys: Sequence[str]) -> dict[str, int]:
    """The source rows among ``keys`` too large for the stream, with the size of their row
    as JSON (about the size of their change event)."""
    if not keys:
        return {}
    # The rows' text as stored (octet_length reads a TOASTed value's size without
    # fetching it) bounds their JSON: at most six bytes per byte (a control character's
    # \u00XX).  Only rows past that bound are rendered as JSON to be measured.
    texts = sql.SQL(" + ").join(
        sql.SQL("coalesce(octet_length(p.{}), 0)").format(sql.Identifier(c)) for c in TEXT_COLUMNS
    )
    query = sql.SQL(
        "SELECT id, size FROM (SELECT p.id, CASE WHEN 6 * ({texts}) > %(limit)s"
        " THEN octet_length(row_to_json(p)::text) ELSE 0 END AS size"
        " FROM {t} AS p WHERE p.id = ANY(%(keys)s::text[])) AS r WHERE size > %(limit)s"
    ).format(t=sql.Identifier(tables.source.table), texts=texts)
    limit = EVENT_MAX_BYTES - ENVELOPE_BYTES
    with tables.connect(tables.source, autocommit=True) as conn:
        return {
            str(run_id): int(size)
            for group in vs.batches(sorted(keys), KEY_BATCH)
            for run_id, size in conn.execute(query, {"keys": list(group), "limit": limit})
        }


class Written(NamedTuple):
    """What :func:`write` sent to the sink, at its version: the keys whose source row it
    wrote, and the keys the source does not have, deleted.  The rule may refuse either
    (a newer change of the row is in the target)."""

    rows: list[str]
    deleted: list[str]


def write(
    tables: Tables,
    settings: Settings,
    keys: Sequence[str],
    wait_s: float = WAIT_S,
    *,
    delete_absent: bool = True,
) -> Written:
    """Write the source rows of ``keys`` to the target at a version taken before they were
    read (module docstring), and delete those the source does not have (with
    ``delete_absent``).  A row that cannot be mapped is neither written nor deleted."""
    if not keys:
        return Written([], [])
    with tables.connect(tables.target, autocommit=True) as tgt:
        generation = generations.settled(tgt, settings.topic)
    with tables.connect(tables.source, autocommit=True) as src:
        lsn = _version_lsn(src, wait_s)
        images = dict(
            image_of(row)
            for group in vs.batches(sorted(keys), KEY_BATCH)
            for row in src.execute(vs.rows_by_key(tables.source), {"keys": list(group)})
        )
    found = {k: image for k, image in images.items() if isinstance(image, tuple)}
    rows = sorted(found)
    gone = sorted(set(keys) - images.keys()) if delete_absent else []
    changes = [RowChange(k, lsn, False, found[k], frozenset(), generation) for k in rows]
    changes += [RowChange(k, lsn, True, None, frozenset(), generation) for k in gone]
    if changes:
        with PostgresSink(
            settings.target_dsn.get_secret_value(),
            table=tables.target.table,
            offsets_table=settings.offsets_table,
        ) as sink:
            for start in range(0, len(changes), KEY_BATCH):
                sink.apply(changes[start : start + KEY_BATCH], [])
    return Written(rows, gone)


def _version_lsn(src: psycopg.Connection[Any], wait_s: float) -> int:
    """``L`` of the module docstring, once every transaction older than ``X`` ended."""
    (lsn,) = src.execute(
        "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
    ).fetchone() or (0,)
    (xmax,) = src.execute(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
    ).fetchone() or (0,)
    deadline = time.monotonic() + wait_s
    while True:
        (xmin,) = src.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        ).fetchone() or (0,)
        if xmin >= xmax:
            return int(lsn)
        if time.monotonic() > deadline:
            raise TransientError(
                f"repair: a transaction open since before the rows were read (xid {xmin})"
                f" is still running after {wait_s:.0f} s; run `replicator verify --repair`"
                " again once it has ended"
            )
        time.sleep(0.2)
