-- The record of `replicator cutover` and `replicator rollback`, in the database that holds
-- both tables (created by the cutover, as the tables' owner).
--
-- replicator_cutover: one row per cutover.  state moves cut_over -> rolled_back, or
-- cut_over -> finalized.  positions holds the stream's positions as they were when the
-- cutover closed them (replicator_offsets then holds a closed marker, next_offset -1,
-- for every partition), so that a rollback can hand them back.
CREATE TABLE IF NOT EXISTS replicator_cutover (
    id BIGSERIAL PRIMARY KEY,
    source_table TEXT NOT NULL,
    target_table TEXT NOT NULL,
    archive_table TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('cut_over', 'rolled_back', 'finalized')),
    cut_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    cut_lsn PG_LSN NOT NULL,
    source_rows BIGINT NOT NULL,
    target_rows BIGINT NOT NULL,
    blocked_ms INTEGER NOT NULL,
    repaired_rows INTEGER NOT NULL,
    positions JSONB NOT NULL,
    rolled_back_at TIMESTAMPTZ,
    rollback_lsn PG_LSN,
    rollback_blocked_ms INTEGER,
    restored_rows INTEGER,
    finalized_at TIMESTAMPTZ
);

-- replicator_cutover_changes: every run_id written in workflow_runs since the cutover
-- (through the compatibility view or directly), recorded by statement triggers on
-- workflow_runs in the writing transaction.  A rollback rewrites exactly these rows in
-- the archive and leaves every other archived row as it was, byte for byte.
CREATE TABLE IF NOT EXISTS replicator_cutover_changes (
    run_id TEXT PRIMARY KEY
);

-- replicator_cutover_pending: while a cutover prepares its switch, every id written in
-- workflow_processes or workflow_runs since it began, and every row the two tables
-- disagreed on when it compared them whole (outside any lock).  Inside the switch's lock
-- only these rows are compared and repaired: every other row was equal and has not been
-- written since (cutover/switch.py).  Empty outside a cutover.
CREATE TABLE IF NOT EXISTS replicator_cutover_pending (
    run_id TEXT PRIMARY KEY
);

-- replicator_cutover_written: for every run_id written in workflow_runs since the cutover,
-- the workflow_runs columns those writes changed (an INSERT: all of them), recorded by
-- statement triggers on workflow_runs in the writing transaction.  A rollback writes a
-- logged row's legacy column in its legacy form only where its column was changed; every
-- other column keeps the archived value (a NULL status, the REAL total_cost).
CREATE TABLE IF NOT EXISTS replicator_cutover_written (
    run_id TEXT PRIMARY KEY,
    columns TEXT[] NOT NULL
);

-- replicator_compat_moved: every run_id a row of workflow_runs had before an UPDATE gave
-- it another one, since the cutover (a row trigger on workflow_runs, while the
-- compatibility view exists).  A statement through the view that finds its row gone by
-- its id learns here that the row lives on under another id: it fails with 40001 rather
-- than skip a row that a table would have followed (cutover/legacy.py).
CREATE TABLE IF NOT EXISTS replicator_compat_moved (
    run_id TEXT PRIMARY KEY
);
