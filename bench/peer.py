"""Baseline C: the consumer a team would write by hand for this job, and the edge cases
run through it and through the replicator's own path.

C is what the job looks like without this project: confluent-kafka's poll loop, the
mapping written in Python per message, one psycopg ``executemany`` per run of upserts
(or deletes) in log order, one database commit per batch, then the Kafka offsets
committed.  No versions, no positions stored with the rows, no dead-letter topic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from confluent_kafka import Consumer

from replicator.errors import EventError
from replicator.events import KafkaPosition
from replicator.stream.apply.sink import PostgresSink
from replicator.stream.apply.transform import to_row_change
from replicator.stream.source.decode import decode_json

COLUMNS = (
    "run_id", "workflow_type", "description", "status", "max_turns", "session_id",
    "git_branch", "repository_url", "created_at", "updated_at", "started_at", "completed_at",
    "result_data", "error_details", "execution_time_ms", "total_cost", "tags", "metadata",
    "progress_data", "resource_usage",
)  # fmt: skip
EPOCH = datetime(1970, 1, 1)


def _ts(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + timedelta(microseconds=micros)


def naive_row(a: dict[str, Any]) -> tuple[Any, ...]:
    """The mapping as a team writes it in an afternoon (the plan's rules, no checks)."""
    cost = a["total_cost"]
    return (
        a["id"], a["workflow_name"], a["message"], a["status"] or "pending", a["max_turns"],
        a["session_name"], a["git_branch"], a["repository_url"], _ts(a["created_at"]),
        _ts(a["updated_at"]), _ts(a["started_at"]), _ts(a["completed_at"]),
        json.dumps({"result": a["result"]}) if a["result"] is not None else "{}",
        json.dumps({"error": a["error_message"]}) if a["error_message"] is not None else "{}",
        a["execution_time"], None if cost is None else round(cost, 4), "[]", "{}", "{}", "{}",
    )  # fmt: skip


class PeerApplier:
    """C's database side: each batch in log order, one commit."""

    def __init__(self, conn: psycopg.Connection[Any], table: str) -> None:
        self.conn = conn
        cols = ", ".join(COLUMNS)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
        marks = ", ".join(["%s"] * len(COLUMNS))
        self.upsert = (
            f'INSERT INTO "{table}" ({cols}) VALUES ({marks})'
            f" ON CONFLICT (run_id) DO UPDATE SET {sets}"
        )
        self.delete = f'DELETE FROM "{table}" WHERE run_id = %s'

    def apply(self, values: Iterable[bytes | None]) -> None:
        runs: list[tuple[str, list[tuple[Any, ...]]]] = []
        for value in values:
            if value is None:
                continue  # a tombstone
            event = json.loads(value)
            op = event["op"]
            if op in ("c", "u", "r"):
                kind, params = self.upsert, naive_row(event["after"])
            elif op == "d":
                kind, params = self.delete, (event["before"]["id"],)
            else:
                continue
            if runs and runs[-1][0] == kind:
                runs[-1][1].append(params)
            else:
                runs.append((kind, [params]))
        with self.conn.cursor() as cur:
            for statement, rows in runs:
                cur.executemany(statement, rows)
        self.conn.commit()


def peer_run(
    env: dict[str, str], table: str, ends: dict[int, int], batch: int = 5000
) -> dict[str, float]:
    """C reading the topic from its start into ``table`` until it has the topic's ends."""
    consumer = Consumer(
        {
            "bootstrap.servers": env["REPLICATOR_KAFKA_BOOTSTRAP"],
            "group.id": f"bench-peer-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            # the local broker holds a new group's join for about half the session
            # timeout (45 s by default); the clock starts at the assignment anyway
            "session.timeout.ms": 6000,
        }
    )
    assigned: list[float] = []
    consumer.subscribe(
        [env["REPLICATOR_TOPIC"]], on_assign=lambda *_: assigned.append(time.perf_counter())
    )
    done: dict[int, int] = {}
    with psycopg.connect(env["REPLICATOR_TARGET_DSN"]) as conn:
        peer = PeerApplier(conn, table)
        deadline = time.monotonic() + 1800
        while any(done.get(p, 0) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"baseline C did not reach the ends: {done} of {ends}")
            messages = [m for m in consumer.consume(batch, timeout=0.5) if m.error() is None]
            if not messages:
                continue
            peer.apply(m.value() for m in messages)
            consumer.commit(asynchronous=False)  # after the database commit
            for m in messages:
                done[m.partition()] = max(done.get(m.partition(), 0), m.offset() + 1)
        finished = time.perf_counter()
    consumer.close()
    seconds = max(finished - assigned[0], 1e-9)
    events = sum(ends.values())
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds}


# ---- the edge cases, through C and through the replicator's path ----------------------------


def _event(op: str, run_id: str, lsn: int, message: str = "m", **after: Any) -> bytes:
    image = {
        "id": run_id, "workflow_name": "w", "message": message, "max_turns": 30,
        "session_name": None, "git_branch": None, "repository_url": None, "created_at": 0,
        "updated_at": 0, "status": "running", "result": None, "error_message": None,
        "execution_time": None, "total_cost": 1.5, "started_at": None, "completed_at": None,
    }  # fmt: skip
    image.update(after)
    body = {"op": op, "source": {"lsn": lsn, "ts_ms": 1, "snapshot": "false"}}
    body.update({"before": image, "after": None} if op == "d" else {"before": None, "after": image})
    return json.dumps(body).encode()


BIG = "x" * 10_000
PLACEHOLDER = "__debezium_unavailable_value"
#: name -> (what happens, batches of events in topic order, run_id checked, expected description
#: or result ("gone" when the row must not exist)), as delivered to the consumer.
CASES: dict[str, tuple[str, list[list[bytes]], str, str]] = {
    "redelivery": (
        "Connect re-sends a suffix after a crash: v1 v2, then v1 again (v2 follows later)",
        [[_event("c", "r1", 10, "v1"), _event("u", "r1", 20, "v2")], [_event("u", "r1", 10, "v1")]],
        "r1",
        "v2",
    ),
    "out_of_order_replay": (
        "the topic read again from its start into a live table: an old insert of a row"
        " deleted since",
        [[_event("c", "r2", 10, "v1"), _event("d", "r2", 20)], [_event("c", "r2", 10, "v1")]],
        "r2",
        "gone",
    ),
    "toast_placeholder": (
        "an update that leaves a large text unchanged (Debezium's placeholder in its place)",
        [[_event("c", "r3", 10, result=BIG)], [_event("u", "r3", 20, result=PLACEHOLDER)]],
        "r3",
        json.dumps({"result": BIG}),
    ),
    "poison_row": (
        "a row the target cannot hold (max_turns beyond INTEGER) between two good rows",
        [[_event("c", "r4", 10), _event("c", "r5", 11, max_turns=2**31), _event("c", "r6", 12)]],
        "r6",
        "m",
    ),
}


def _state(dsn: str, table: str, run_id: str, case: str) -> str:
    column = "result_data::text" if case == "toast_placeholder" else "description"
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f'SELECT {column} FROM "{table}" WHERE run_id = %s', [run_id]).fetchone()
    return "gone" if row is None else str(row[0])


def _through_ours(dsn: str, table: str, batches: list[list[bytes]]) -> str:
    dead = 0
    with PostgresSink(dsn, table=table) as sink:
        for n, events in enumerate(batches):
            changes = []
            for i, value in enumerate(events):
                body = json.loads(value)
                key = json.dumps({"id": (body["after"] or body["before"])["id"]}).encode()
                event = decode_json(key, value, KafkaPosition("t", 0, n * 100 + i))
                try:
                    change = to_row_change(event) if event else None
                except EventError:
                    dead += 1  # the replicator dead-letters it and moves on
                    continue
                if change is not None:
                    changes.append(change)
            sink.apply(changes, [])
    return f"{dead} dead-lettered" if dead else "applied"


def _through_peer(dsn: str, table: str, batches: list[list[bytes]]) -> str:
    with psycopg.connect(dsn) as conn:
        peer = PeerApplier(conn, table)
        for events in batches:
            try:
                peer.apply(events)
            except psycopg.Error as exc:
                conn.rollback()
                return f"batch failed ({type(exc).__name__}); the consumer stops on it"
    return "applied"


def edge_cases(dsn: str, fresh: Callable[[str], str]) -> dict[str, dict[str, str]]:
    """Each case through C and through the replicator's path, on fresh tables."""
    out: dict[str, dict[str, str]] = {}
    for case, (what, batches, run_id, expected) in CASES.items():
        row: dict[str, str] = {"what": what, "expected": _short(expected)}
        for name, through in (("C", _through_peer), ("replicator", _through_ours)):
            table = fresh(f"bench_edge_{name.lower()}")
            outcome = through(dsn, table, batches)
            state = _state(dsn, table, run_id, case)
            row[name] = f"{'right' if state == expected else 'WRONG'}: {_short(state)}; {outcome}"
        out[case] = row
    return out


def _short(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text):,} chars)"
