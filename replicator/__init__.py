"""Replicate Debezium change events of ``workflow_processes`` into ``workflow_runs``.

The package is grouped by stage (docs/explanation/design.md says why each folder exists):

* ``stream/``   -- the pipeline of ``replicator run``: source (Kafka), decode, transform,
  batch, dead letters, sink and checkpoint (positions stored with the rows, in ONE
  target transaction), composed by :mod:`replicator.stream.replicator`;
* ``mapping/``  -- every column fact once; the mapping in Python and in SQL;
* ``db/``       -- PostgreSQL connections, error classification, DDL;
* ``backfill/``, ``verify/``, ``replay/`` -- the engineers' tools;
* ``observe/``  -- metrics, logs, progress;
* ``local/``    -- the local stack, the Kafka Connect REST client, sample rows;
* ``cli/``      -- the command line, one module per command group.
"""

__version__ = "0.1.0"
