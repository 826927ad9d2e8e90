"""Where the replicator's own CPU goes, stage by stage, with the events in memory.

The CPU-per-part table (bench/cpu.py) says how much each process of the machine costs
per event; this says what inside the replicator's process, and inside the PostgreSQL
backend that applies its batches, makes up that cost.  Each stage runs over all the
events in turn, timed by this process's CPU clock (``time.process_time``), so a figure
is the stage's own cost and not its share of a wall-clock interval:

decode        message bytes -> ChangeEvent (orjson, the envelope's checks)
map           ChangeEvent -> RowChange (the mapping of every column)
batch + fold  the batch's bookkeeping and the fold to one change per row
apply, client the COPY's encoding and the driver, in this process
apply, server the PostgreSQL backend applying the batches (from /proc), next to
              A's backend CPU per row for the same rows (the plan's INSERT ... SELECT)

What ``replicator run`` adds on top (the Kafka client, the loop, the metrics) is its
CPU per event in the part table minus the sum of the first four.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from replicator.cli.common import tune_for_streaming
from replicator.events import KafkaPosition
from replicator.stream.apply.batch import Batch, fold
from replicator.stream.apply.sink import PostgresSink
from replicator.stream.apply.transform import to_row_change
from replicator.stream.source.decode import decode_json

STAGES = ("decode", "map", "batch + fold", "apply, client", "apply, server")
_HZ = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the process ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _HZ


def stage_costs(dsn: str, table: str, topic: str, events: list, batch_rows: int = 5000) -> dict:
    """Microseconds of CPU per event of each stage (module docstring), applying
    ``events`` ((key, value, partition, offset) each) to ``table`` on one connection.

    The events go through batch by batch, as in ``replicator run``: only one batch's
    objects are alive at a time, so the garbage collector scans what it scans there."""
    spent = dict.fromkeys(STAGES, 0.0)
    lap = Lap(spent)
    with streaming_gc(), PostgresSink(dsn, table=table) as sink:
        pid = sink.backend_pid()
        server = backend_cpu(pid)
        for first in range(0, len(events), batch_rows):
            chunk = events[first : first + batch_rows]
            lap.start()
            decoded = [decode_json(k, v, KafkaPosition(topic, p, o)) for k, v, p, o in chunk]
            lap("decode")
            changes = [to_row_change(e) if e is not None else None for e in decoded]
            lap("map")
            batch = Batch(topic)
            for (_, _, partition, offset), event, change in zip(
                chunk, decoded, changes, strict=True
            ):
                if change is not None and event is not None:
                    batch.add(change, None, event.source_ts_ms)
                batch.advance(partition, offset, event.lsn if event is not None else None)
            folded = fold(batch.changes)
            lap("batch + fold")
            sink.apply(folded, batch.positions())
            lap("apply, client")
        spent["apply, server"] = backend_cpu(pid) - server
    n = len(events)
    return {
        "events": n,
        "us_per_event": {name: round(seconds / n * 1e6, 2) for name, seconds in spent.items()},
    }


@contextlib.contextmanager
def streaming_gc() -> Iterator[None]:
    """The collector as ``replicator run`` sets it, for the stretch of the bench that stands
    for it; as it was afterwards."""
    thresholds = gc.get_threshold()
    tune_for_streaming()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class Lap:
    """This process's CPU time between calls, added to ``spent[stage]``."""

    def __init__(self, spent: dict[str, float]) -> None:
        self.spent = spent
        self.last = time.process_time()

    def start(self) -> None:
        self.last = time.process_time()

    def __call__(self, stage: str) -> None:
        now = time.process_time()
        self.spent[stage] += now - self.last
        self.last = now


def baseline_cpu(conn: psycopg.Connection[Any]) -> float:
    """The CPU seconds so far of ``conn``'s backend (A's cost is read around its INSERT)."""
    return backend_cpu(conn.info.backend_pid)


def markdown(costs: dict, a_us_per_row: float | None) -> list[str]:
    """The stage table, with A's backend CPU per row for the server's row."""
    us = costs["us_per_event"]
    own = sum(us[s] for s in STAGES[:4])
    lines = [
        "",
        f"Where the replicator's own CPU goes, with {costs['events']:,} events in memory (one"
        " connection, batches of 5,000; microseconds of CPU per event):",
        "",
        "| stage | us per event |",
        "| --- | --- |",
        *(f"| {name} | {us[name]:.2f} |" for name in STAGES[:4]),
        f"| the replicator's stages together | {own:.2f} |",
        f"| PostgreSQL backend applying the batches | {us[STAGES[4]]:.2f} |",
    ]
    if a_us_per_row:
        lines.append(
            f"| A's backend per row (INSERT ... SELECT) | {a_us_per_row:.2f}"
            f" (server / A {us[STAGES[4]] / a_us_per_row:.2f}) |"
        )
    return lines
