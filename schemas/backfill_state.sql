-- The state of `replicator backfill`, in the target database (created by the backfill).
--
-- replicator_backfill_chunks: the chunk plan of each target table, computed once
-- (source ids in COLLATE "C" order, lower bound inclusive, upper bound exclusive,
-- NULL = unbounded) and the chunks finished.  finished_at and the counts are written in
-- the SAME transaction as the chunk's rows, so a finished chunk is never loaded again
-- and an unfinished one left no trace.  attempts is counted before a chunk starts, in
-- its own transaction: attempts beyond 1 are work redone after an interruption.
CREATE TABLE IF NOT EXISTS replicator_backfill_chunks (
    target_table TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    lower_id TEXT COLLATE "C",
    upper_id TEXT COLLATE "C",
    planned_rows BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    rows_read BIGINT,
    rows_loaded BIGINT,
    rows_skipped BIGINT,
    rows_rejected BIGINT,
    PRIMARY KEY (target_table, chunk_no)
);

-- replicator_backfill_rejects: source rows the backfill could not map (the reason names
-- the column), written with their chunk.  A later change of such a row is streamed and
-- applied (or dead-lettered) by `replicator run` like any other.
CREATE TABLE IF NOT EXISTS replicator_backfill_rejects (
    target_table TEXT NOT NULL,
    run_id TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    reason TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (target_table, run_id)
);

-- replicator_backfill_indexes: secondary indexes of the target that a backfill with
-- --defer-indexes dropped, recorded in the same transaction, until it (or its rerun
-- after an interruption) creates them again after the last chunk.
CREATE TABLE IF NOT EXISTS replicator_backfill_indexes (
    target_table TEXT NOT NULL,
    index_name TEXT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (target_table, index_name)
);
