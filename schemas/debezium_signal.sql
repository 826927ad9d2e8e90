-- Debezium's signal table, in the source database beside workflow_processes.
--
-- The connector reads it through its replication stream (signal.data.collection =
-- public.debezium_signal), so it must be in the connector's publication; with
-- publication.autocreate.mode=filtered the connector adds it itself when it owns the
-- publication (schemas/roles.sql adds it otherwise).  `replicator verify --repair` writes
-- an 'execute-snapshot' row here to re-read chosen rows through an incremental snapshot,
-- and Debezium writes its snapshot window markers here too.  Column names are fixed by
-- Debezium; data is TEXT (not the VARCHAR(2048) of Debezium's example) so that one
-- signal can name a thousand ids.
CREATE TABLE IF NOT EXISTS debezium_signal (
    id VARCHAR(42) PRIMARY KEY,
    type VARCHAR(32) NOT NULL,
    data TEXT
);
