"""Replicate Debezium change events of ``workflow_processes`` into ``workflow_runs``.

The pipeline has four named stages with small interfaces:

* source     -- :mod:`replicator.consumer` polls Kafka and yields raw messages;
* decode     -- :mod:`replicator.serde` turns bytes into :class:`~replicator.events.ChangeEvent`;
* transform  -- :mod:`replicator.mapping` is a pure function, legacy row -> ``WorkflowRun``;
* sink       -- :mod:`replicator.sink` applies a batch and the partition positions it
  consumed in ONE target transaction (the checkpoint lives with the rows).
"""

__version__ = "0.1.0"
