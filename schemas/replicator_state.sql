-- The replicator's own bookkeeping, in the target database beside {table}.
--
-- {offsets}: the next Kafka offset to read for every partition whose events were
-- applied to {table}.  Written in the SAME transaction as the rows those events
-- produced, so the stored position and the table's content never disagree.
-- topic_id: the Kafka id of the topic the offset belongs to; a re-created topic has
-- another id, and a position stored for the old one is not used (stream/origin.py).
CREATE TABLE IF NOT EXISTS {offsets} (
    target_table TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    last_lsn BIGINT,
    topic_id TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (target_table, topic, kafka_partition)
);
ALTER TABLE {offsets} ADD COLUMN IF NOT EXISTS topic_id TEXT;

-- {versions}: the source LSN of the newest change applied for every run_id, and
-- whether that change was a delete.  An event whose LSN is older than the stored
-- one is stale (a redelivery or a replay) and is not applied; a deleted row keeps
-- its entry, so an older image can never bring it back.
-- generation: the snapshot generation of that change (replicator_generations); versions
-- compare as (generation, source_lsn).
CREATE TABLE IF NOT EXISTS {versions} (
    run_id TEXT PRIMARY KEY,
    source_lsn BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT false,
    generation INTEGER NOT NULL DEFAULT 0
);
ALTER TABLE {versions} ADD COLUMN IF NOT EXISTS generation INTEGER NOT NULL DEFAULT 0;

-- replicator_generations: the snapshots taken again by `replicator connector apply
-- --resnapshot`, per topic (stream/generations.py).  Generation N covers every event at or
-- after boundaries[partition] in the topic whose Kafka id is topic_id, and the whole of any
-- topic created later.  marks: the ends of the partitions once the connector had written
-- the whole snapshot (NULL until then); a target that has read up to them holds every
-- snapshot read, and drops the rows the snapshot did not have (replicator_swept).
CREATE TABLE IF NOT EXISTS replicator_generations (
    topic TEXT NOT NULL,
    generation INTEGER NOT NULL CHECK (generation > 0),
    topic_id TEXT,
    boundaries JSONB NOT NULL,
    marks JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    PRIMARY KEY (topic, generation)
);

-- replicator_swept: the generations whose sweep ran on a target table, with the rows it
-- removed; written in the same transaction as the removal, so it runs once.
CREATE TABLE IF NOT EXISTS replicator_swept (
    target_table TEXT NOT NULL,
    topic TEXT NOT NULL,
    generation INTEGER NOT NULL,
    swept_rows BIGINT NOT NULL,
    swept_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (target_table, topic, generation)
);

-- replicator_truncated: the floor of every target table a source TRUNCATE was applied to
-- (stream/apply/truncation.py): the truncate's version.  A change older than it is never
-- applied to that table, by any writer (the versions claim checks it); written in the
-- truncate's own transaction.
CREATE TABLE IF NOT EXISTS replicator_truncated (
    target_table TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    source_lsn BIGINT NOT NULL,
    truncated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- replicator_redriven: the last outcome of each dead letter `replicator dlq redrive`
-- tried for a target table.  'applied' and 'stale' (a newer change was there) are written
-- in the same transaction as the row and are final: a second redrive applies nothing
-- twice.  'superseded' (a newer applied change of the row, found before mapping the
-- letter) and 'dismissed' (`dlq dismiss`) are final too.  'failed' (with the new error)
-- is tried again by the next redrive.  Keyed by the dead letter's place in its topic.
CREATE TABLE IF NOT EXISTS replicator_redriven (
    target_table TEXT NOT NULL,
    dlq_topic TEXT NOT NULL,
    dlq_partition INTEGER NOT NULL,
    dlq_offset BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    redriven_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (target_table, dlq_topic, dlq_partition, dlq_offset)
);
