-- The connector's heartbeat row, in the source database beside workflow_processes.
--
-- A replication slot only moves when the connector confirms an LSN it received.  While
-- workflow_processes is quiet and other tables write, the slot receives nothing for the
-- connector's tables and retains all their WAL (heartbeats alone do not help: they
-- confirm the last LSN received).  Debezium's heartbeat.action.query updates this row at
-- every heartbeat; the change streams through the slot (the table is in the publication,
-- not in table.include.list, so no event is published for it) and the next heartbeat
-- confirms its LSN: the slot follows the database's WAL within one heartbeat interval.
CREATE TABLE IF NOT EXISTS debezium_heartbeat (
    id INTEGER PRIMARY KEY,
    beat_at TIMESTAMPTZ NOT NULL
);
