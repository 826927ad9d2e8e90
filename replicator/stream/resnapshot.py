"""``replicator connector apply --resnapshot``: a new slot and a new initial snapshot, as
a new snapshot generation (the argument: :mod:`replicator.stream.apply.generations`).

For a lost slot (a failover, a slot dropped by hand), a connector whose stored offsets
point at WAL that is gone, or a target that must be re-based on the source.  The steps,
in this order, because each one's argument rests on the one before:

1. the connector is stopped (registered stopped when missing): it writes nothing more;
2. the topic's ends are read and generation N is recorded with them as its boundaries
   (the target's ``replicator_generations``), before any event of the new connector
   can exist;
3. Connect's stored source offsets are reset and the slot dropped, then the connector
   resumes with ``snapshot.mode=initial``: a new slot, a snapshot at its consistent
   point, then the stream from it;
4. once Connect committed an offset past the snapshot, every snapshot read is in the
   log: the ends read then are recorded as the generation's marks.  ``replicator run``
   removes the target rows of older generations when its positions reach them (rows
   deleted while nothing streamed); this command waits for that up to ``--timeout``.

Interrupted before 4, the generation never completes and nothing is removed: run the
command again (a newer generation supersedes it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg

from replicator.clients.connect import ConnectClient, snapshot_done
from replicator.db.connect import connect, mapped_errors
from replicator.db.slot import drop_slot
from replicator.errors import ConnectError
from replicator.settings import Settings
from replicator.stream.apply import generations
from replicator.stream.source.consumer import KafkaSource
from replicator.stream.source.ends import probe_ends

Say = Callable[[str], None]


def resnapshot(
    settings: Settings,
    client: ConnectClient,
    name: str,
    config: dict[str, str],
    *,
    timeout: float,
    say: Say,
) -> int:
    """The steps of the module docstring; the generation number."""
    if name in client.names():
        client.stop(name, timeout)
        say(f"connector {name} stopped")
    else:
        client.create_stopped(name, config)
        say(f"connector {name} registered, stopped")
    source = KafkaSource(None, settings.topic, settings.kafka_bootstrap, settings.kafka_config)
    view = source.describe()
    boundaries = {p: end.end for p, end in view.ends.items()}
    with _target(settings) as conn:
        number = generations.record(conn, settings.topic, view.topic_id, boundaries)
    say(f"snapshot generation {number} begins at {_show(boundaries) or 'the start of the topic'}")
    client.reset_offsets(name)
    slot = config.get("slot.name", settings.slot_name)
    if not drop_slot(settings.slot_dsn, slot, say):
        raise ConnectError(f"replication slot {slot} is still in use by another process")
    client.apply(name, {**config, "snapshot.mode": "initial"}, timeout=timeout)
    say(f"connector {name} RUNNING: taking a new initial snapshot")
    _wait_for_snapshot(client, name, timeout)
    ends = probe_ends(settings.kafka_bootstrap, settings.topic, settings.kafka_config)
    marks = {p: end.end for p, end in ends.items()}
    with _target(settings) as conn:
        generations.complete(conn, settings.topic, number, marks)
    say(f"snapshot written whole, below {_show(marks)}")
    _wait_for_sweep(settings, number, timeout, say)
    return number


def _wait_for_snapshot(client: ConnectClient, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not snapshot_done(client.offsets(name)):
        if time.monotonic() > deadline:
            raise ConnectError(
                f"the snapshot of {name} did not finish within {timeout:g}s: nothing is"
                " removed until it does; run `replicator connector apply --resnapshot"
                " --timeout <longer>` again"
            )
        time.sleep(0.5)


def _wait_for_sweep(settings: Settings, number: int, timeout: float, say: Say) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with _target(settings) as conn:
            removed = generations.swept(conn, settings.target_table, settings.topic, number)
        if removed is not None:
            say(f"{settings.target_table}: {removed} rows deleted while nothing streamed removed")
            return
        if time.monotonic() > deadline:
            say(
                f"{settings.target_table} has not read the whole snapshot yet: `replicator run`"
                " removes the rows deleted meanwhile once it has"
            )
            return
        time.sleep(1.0)


@contextmanager
def _target(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with (
        connect(settings.target_dsn.get_secret_value(), "the target database") as conn,
        mapped_errors("record the snapshot generation"),
    ):
        yield conn


def _show(offsets: Mapping[int, int]) -> str:
    return ", ".join(f"partition {p} offset {o}" for p, o in sorted(offsets.items()))
