-- Least-privilege roles, run once by an administrator (the owner of the tables), in
-- the database holding workflow_processes and workflow_runs, AFTER `replicator schema
-- apply` created the target tables.  Passwords are set separately, e.g.
--   ALTER ROLE replicator_debezium PASSWORD '...';   (never in this file)
-- Idempotent.  When source and target are separate databases, run the part up to
-- `-- [target]` in the source database, and the roles part plus the part after it in
-- the target database (`replicator stack up` does exactly that).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator_debezium') THEN
        CREATE ROLE replicator_debezium LOGIN REPLICATION;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator_app') THEN
        CREATE ROLE replicator_app LOGIN;
    END IF;
END
$$;

-- [source]
-- source: Debezium reads the legacy table (snapshot) and streams it (REPLICATION).
-- The publication is created here by the table's owner: the connector runs with
-- publication.autocreate.mode=disabled and only uses it (in `filtered` mode it would
-- ALTER PUBLICATION ... SET TABLE at every start, which needs ownership).
-- The signal table (verify --repair's incremental snapshots) must be in the publication:
-- Debezium reads signals, and its own snapshot window markers, from the stream.  So must
-- the heartbeat table: its updates keep the slot moving while the legacy table is quiet.
GRANT USAGE ON SCHEMA public TO replicator_debezium;
GRANT SELECT ON workflow_processes TO replicator_debezium;
GRANT SELECT, INSERT ON debezium_signal TO replicator_debezium;
GRANT SELECT, INSERT, UPDATE ON debezium_heartbeat TO replicator_debezium;
DO $$
DECLARE
    missing TEXT;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'replicator_workflow_processes') THEN
        CREATE PUBLICATION replicator_workflow_processes
            FOR TABLE workflow_processes, debezium_signal, debezium_heartbeat;
    END IF;
    FOR missing IN
        SELECT t FROM unnest(ARRAY['debezium_signal', 'debezium_heartbeat']) AS t
        WHERE NOT EXISTS (SELECT FROM pg_publication_tables
                          WHERE pubname = 'replicator_workflow_processes' AND tablename = t)
    LOOP
        EXECUTE format('ALTER PUBLICATION replicator_workflow_processes ADD TABLE %I', missing);
    END LOOP;
END
$$;

-- source: the replicator reads the legacy table (verify, backfill) and the slot's lag, and
-- asks Debezium for incremental snapshots (verify --repair).  The slot's lag needs no
-- grant: pg_replication_slots and the WAL positions (pg_current_wal_lsn) are readable by
-- every role.  pg_monitor would bring pg_read_all_stats (other sessions' query text):
-- taken back from installations that granted it.
GRANT USAGE ON SCHEMA public TO replicator_app;
GRANT SELECT ON workflow_processes TO replicator_app;
GRANT INSERT ON debezium_signal TO replicator_app;
DO $$
BEGIN
    IF pg_has_role('replicator_app', 'pg_monitor', 'MEMBER')
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = 'replicator_app') THEN
        REVOKE pg_monitor FROM replicator_app;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'replicator_app is a member of pg_monitor, which it does not need: revoke it as a superuser';
END
$$;

-- [target]
-- target: rows, versions and positions, nothing else (TEMP for the staging table is
-- granted to PUBLIC by default); the re-driven dead letters, for /metrics and redrive.
GRANT SELECT, INSERT, UPDATE, DELETE ON workflow_runs, workflow_runs_versions, replicator_offsets
    TO replicator_app;
GRANT SELECT, INSERT, UPDATE ON replicator_redriven TO replicator_app;
GRANT SELECT, INSERT, UPDATE ON replicator_generations, replicator_swept TO replicator_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON replicator_truncated TO replicator_app;
