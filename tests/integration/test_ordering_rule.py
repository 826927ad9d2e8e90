"""The ordering rule (replicator/stream/apply/versions.py), proven once, on the real
database: every writer of the target table, each through its own code path, against
every prior state of a row, gives the outcome the rule states.

The rule: a change at version ``v = (generation, lsn)`` is applied -- its image written,
or the row deleted, and ``(v, delete)`` recorded as the row's entry -- if and only if
``v`` is not older than the table's truncate floor and the row has no entry or ``v`` is
at least the entry's version; else nothing changes.  The sweep of generation N deletes at
``(N, 0)`` only rows whose entry is strictly older.

A prior state is set directly in the versions, floor and generations tables, relative to
the generation ``c`` of the writer's changes (1; the sweep's is 2).  In :data:`TABLE`,
``A``: the change applies; ``S``: it is skipped and nothing changes; ``.``: the state
cannot exist for that writer (a writer from the locked source records the WAL's end in
the newest generation: no entry or floor can be newer, and it writes without claiming).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from psycopg import sql

from replicator.backfill.runner import backfill
from replicator.cutover import catalog, objects, rollback, switch
from replicator.db.schema import apply_source_schema, apply_target_schema
from replicator.dlq.redrive import redrive
from replicator.events import PartitionPosition, RowChange
from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TABLE, TARGET_COLUMNS
from replicator.observe.metrics import Health, Metrics
from replicator.observe.tracker import Tracker
from replicator.replay.runner import replay
from replicator.settings import Settings
from replicator.stream.apply import generations
from replicator.stream.apply.batch import Batch
from replicator.stream.apply.deadletter import DeadLetteringSink, DeadLetters
from replicator.stream.apply.sink import PostgresSink
from replicator.stream.intake import Intake
from replicator.stream.source.decode import decode_json
from replicator.stream.source.positioning import Positioning
from replicator.verify import from_source
from replicator.verify import runner as verify_runner
from replicator.verify.report import KeyDiff, Report
from replicator.verify.tables import Tables
from tests.integration.conftest import StackInfo, mapped_source, new_database, target_rows, unique

pytestmark = pytest.mark.integration

FAR = 2**62  # an LSN beyond every WAL position of the test: a change after any read
STREAMED = 5_000  # the LSN of the stream's, the replay's change
DESCRIPTION = TARGET_COLUMNS.index("description")
UPDATED = datetime(2024, 5, 6, 7, 8, 9, 123456)
EPOCH = datetime(1970, 1, 1)
Entry = tuple[int, int, bool]  # (generation, source_lsn, deleted)


# --------------------------------------------------------------------------- a case


@dataclass
class Case:
    """One row ``run_id`` of a table of its own, in a topic of its own."""

    stack: StackInfo
    db: str
    current: int  # the generation of the writer's changes
    in_source: bool = True
    table: str = field(default_factory=lambda: unique("wr"))
    topic: str = field(default_factory=lambda: unique("rule"))
    run_id: str = field(default_factory=lambda: unique("r"))
    mapped: tuple[Any, ...] | None = None

    def settings(self) -> Settings:
        return self.stack.settings(
            source_dsn=self.db,
            target_dsn=self.db,
            target_table=self.table,
            topic=self.topic,
            group_id=unique("g"),
        )

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def image(self, description: str | None = None) -> tuple[Any, ...]:
        """The source row mapped, as it was prepared (``description`` replaced: another
        image of the row)."""
        assert self.mapped is not None
        if description is None:
            return self.mapped
        i = DESCRIPTION
        return (*self.mapped[:i], description, *self.mapped[i + 1 :])

    def write_row(self, image: tuple[Any, ...]) -> None:
        cols = ", ".join(TARGET_COLUMNS)
        marks = ", ".join(["%s"] * len(TARGET_COLUMNS))
        self.sql(f'INSERT INTO "{self.table}" ({cols}) VALUES ({marks})', *image)

    def write_entry(self, generation: int, lsn: int, deleted: bool = False) -> None:
        self.sql(
            f'INSERT INTO "{self.table}_versions" (run_id, generation, source_lsn, deleted)'
            " VALUES (%s, %s, %s, %s)",
            self.run_id,
            generation,
            lsn,
            deleted,
        )

    def write_floor(self, generation: int, lsn: int) -> None:
        self.sql(
            "INSERT INTO replicator_truncated (target_table, generation, source_lsn)"
            " VALUES (%s, %s, %s)",
            self.table,
            generation,
            lsn,
        )

    def record_generation(self, complete: bool, start: int = 0) -> int:
        with psycopg.connect(self.db, autocommit=True) as conn:
            number = generations.record(conn, self.topic, None, {0: start})
            if complete:
                generations.complete(conn, self.topic, number, {0: 1})
        return number

    def seen(self) -> tuple[tuple[Any, ...] | None, Entry | None, list[tuple[Any, ...]]]:
        """The row, its entry and the table's floor."""
        rows = target_rows(self.db, self.table, "run_id = %s", (self.run_id,))
        entry = self.sql(
            f'SELECT generation, source_lsn, deleted FROM "{self.table}_versions"'
            " WHERE run_id = %s",
            self.run_id,
        )
        floor = self.sql(
            "SELECT generation, source_lsn FROM replicator_truncated WHERE target_table = %s",
            self.table,
        )
        return rows.get(self.run_id), (tuple(entry[0]) if entry else None), floor

    def wal(self) -> int:
        ((lsn,),) = self.sql("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
        return int(lsn)

    def latest(self) -> int:
        ((number,),) = self.sql(
            "SELECT coalesce(max(generation), 0) FROM replicator_generations WHERE topic = %s",
            self.topic,
        )
        return int(number)


# --------------------------------------------------------------------------- prior states


@dataclass(frozen=True)
class Prior:
    """A prior state: the row's entry ``(generation - c, lsn, deleted)``, its target row
    (another image of the source row, older or newer), the table's floor
    ``(generation - c, lsn)``, and whether generation ``c + 1`` is recorded (not complete,
    starting after every event here)."""

    entry: tuple[int, int, bool] | None = None
    row: str | None = None
    floor: tuple[int, int] | None = None
    newer_generation: bool = False

    def set(self, case: Case, c: int) -> None:
        if self.newer_generation:
            case.record_generation(complete=False, start=10**9)
        if self.entry is not None:
            case.write_entry(c + self.entry[0], self.entry[1], self.entry[2])
        if self.row is not None:
            case.write_row(case.image(self.row))
        if self.floor is not None:
            case.write_floor(c + self.floor[0], self.floor[1])


STATES = {
    "absent": Prior(),
    "older": Prior((0, 100, False), "old"),
    "newer": Prior((0, FAR, False), "newer"),
    "deleted": Prior((0, FAR, True)),
    "deleted-older": Prior((0, 100, True)),
    "swept": Prior((0, 0, True)),  # what a sweep leaves
    "floor-above": Prior(floor=(0, FAR)),
    "floor-below": Prior(floor=(0, 100)),
    "newer-generation": Prior((1, 0, False), "newer", newer_generation=True),
    "older-generation": Prior((-1, FAR, False), "old"),
    "older-snapshot": Prior((-1, 0, False), "old"),
    "hold": Prior((0, 0, False), "old"),  # what a hold leaves
}

# A: applied; S: skipped, nothing changes; .: cannot exist for the writer
TABLE = """
state            stream replay redrive bf-sql bf-copy bf-py repair rep-del cutover rollback sweep
absent           A      A      A       A      A       A     A      A       A       A        S
older            A      A      S       S      S       S     A      A       A       A        S
newer            S      S      S       S      S       S     S      S       .       .        S
deleted          S      S      S       S      S       S     S      S       .       .        S
deleted-older    A      A      S       S      S       S     A      A       A       A        S
swept            A      A      A       S      S       S     A      A       A       A        S
floor-above      S      S      S       S      S       S     S      S       .       .        S
floor-below      A      A      S       S      S       S     A      A       A       A        S
newer-generation S      S      S       S      S       S     S      S       A       A        S
older-generation A      A      A       S      S       S     A      A       A       A        A
older-snapshot   A      A      A       A      A       A     A      A       A       A        A
hold             A      A      A       S      S       S     A      A       A       A        S
"""


def table_cells() -> Iterator[Any]:
    header, *lines = TABLE.strip().splitlines()
    writers = header.split()[1:]
    for line in lines:
        state, *outcomes = line.split()
        for writer, outcome in zip(writers, outcomes, strict=True):
            if outcome != ".":
                yield pytest.param(writer, state, outcome, id=f"{writer}-{state}")


# --------------------------------------------------------------------------- writers


class NullProducer:
    """Dead letters go nowhere (the stream's path is what is under test, not Kafka)."""

    def produce(self, topic: str, **kw: Any) -> None:
        pass

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class Message:
    def __init__(self, topic: str, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._offset, self._key, self._value = topic, offset, key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return []


def event(case: Case, op: str, lsn: int | None, snapshot: str = "false") -> tuple[bytes, bytes]:
    """(key, value) of a Debezium JSON event carrying the source row as it is."""
    cols = SOURCE_COLUMNS
    (row,) = case.sql(
        f"SELECT {', '.join(cols)} FROM workflow_processes WHERE id = %s", case.run_id
    )
    after = {
        c: (v - EPOCH) // timedelta(microseconds=1) if isinstance(v, datetime) else v
        for c, v in zip(cols, row, strict=True)
    }
    source: dict[str, Any] = {"ts_ms": 1, "snapshot": snapshot}
    if lsn is not None:
        source["lsn"] = lsn
    value = {"before": None, "after": after, "source": source, "op": op, "ts_ms": 1}
    return json.dumps({"id": case.run_id}).encode(), json.dumps(value).encode()


def stream(case: Case, messages: list[Message]) -> None:
    """``replicator run``'s path from the consumed messages on: decode, transform,
    batch, dead-letter isolation, sink."""
    settings, metrics = case.settings(), Metrics()
    with PostgresSink(case.db, table=case.table) as sink:
        letters = DeadLetters(settings, metrics, producer=NullProducer())
        positioning = Positioning(settings, sink, metrics)
        positioning.generations = generations.Generations(sink.load_generations(case.topic))
        health = Health(settings.stall_after_s, settings.group_id, settings.topic)
        tracker = Tracker(settings, metrics, health)
        intake = Intake(decode_json, tracker, letters, positioning, lambda _: False)
        batch = Batch(case.topic)
        for msg in messages:
            intake.handle(msg, batch)
        DeadLetteringSink(sink, letters).apply(batch)


def produce(case: Case, topic: str, key: bytes, value: bytes, headers: Any = None) -> None:
    admin = AdminClient({"bootstrap.servers": case.stack.bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": case.stack.bootstrap})
    producer.produce(topic, key=key, value=value, headers=headers or [])
    assert producer.flush(30) == 0


def run_stream(case: Case) -> None:
    stream(case, [Message(case.topic, 0, *event(case, "u", STREAMED))])


def run_replay(case: Case) -> None:
    produce(case, case.topic, *event(case, "u", STREAMED))
    replay(case.settings(), into=case.table)


def run_redrive(case: Case) -> None:
    """A dead-lettered incremental snapshot read (no LSN), re-driven."""
    key, value = event(case, "r", None, snapshot="incremental")
    origin = [("dlq.topic", case.topic), ("dlq.partition", "0"), ("dlq.offset", "0")]
    headers = [("dlq.reason", b"mapping_error"), ("dlq.error", b"refused then")]
    headers += [(name, text.encode()) for name, text in origin]
    produce(case, case.settings().dead_letter_topic, key, value, headers)
    redrive(case.settings())


def run_backfill(via: str) -> Callable[[Case], None]:
    def run(case: Case) -> None:
        backfill(case.settings(), via=via, check_slot=False)  # type: ignore[arg-type]

    return run


def run_repair(case: Case) -> None:
    """``verify --repair`` of the row, found different, missing or extra."""
    seen, _, _ = case.seen()
    kind = "extra" if not case.in_source else "missing" if seen is None else "different"
    report = Report(SOURCE_TABLE, case.table)
    report.drift = {case.run_id: KeyDiff(case.run_id, kind)}  # type: ignore[arg-type]
    options = verify_runner.Options(catch_up_timeout_s=0, repair_timeout_s=0.5)
    tables = Tables(case.db, case.db, case.table)
    verify_runner.repair(tables, case.settings(), report, options, lambda timeout: None)


def run_cutover(case: Case) -> None:
    """The cutover's repair of a pending row (step 4), in its own transaction."""
    with psycopg.connect(case.db) as conn:
        conn.execute("DELETE FROM replicator_cutover_pending")
        conn.execute("INSERT INTO replicator_cutover_pending VALUES (%s)", [case.run_id])
        switch._repair(conn, "public", case.table, case.topic)
        conn.execute("DELETE FROM replicator_cutover_pending")


def run_rollback(case: Case) -> None:
    """The rollback's restore of a row written since the cutover (steps 3 and 4)."""
    log = sql.SQL("public.{}").format(sql.Identifier(objects.CHANGES))
    with psycopg.connect(case.db) as conn:
        conn.execute(sql.SQL("DELETE FROM {}").format(log))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(log), [case.run_id])
        legacy = catalog.columns(conn, SOURCE_TABLE)
        rollback._restore(conn, "public", case.table, legacy, log, case.topic)
        conn.execute(sql.SQL("DELETE FROM {}").format(log))


def run_sweep(case: Case) -> None:
    with PostgresSink(case.db, table=case.table) as sink:
        sink.apply([], [PartitionPosition(case.topic, 0, 1, None)])  # past the marks
        sink.sweep(case.topic)


@dataclass(frozen=True)
class Writer:
    run: Callable[[Case], None]
    version: Callable[[Case, int, int], tuple[int, range]]  # (generation, lsn range)
    image: Callable[[Case, tuple[Any, ...] | None], tuple[Any, ...] | None]  # None: a delete
    current: int = 1
    in_source: bool = True


def exact(generation: int, lsn: int) -> Callable[[Case, int, int], tuple[int, range]]:
    return lambda case, before, after: (generation, range(lsn, lsn + 1))


def from_source_version(case: Case, before: int, after: int) -> tuple[int, range]:
    return 1, range(before, after + 1)  # the newest completed generation, then


def locked_version(case: Case, before: int, after: int) -> tuple[int, range]:
    return case.latest(), range(before, after + 1)


def source_image(case: Case, prior: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    return case.image()


WRITERS = {
    "stream": Writer(run_stream, exact(1, STREAMED), source_image),
    "replay": Writer(run_replay, exact(1, STREAMED), source_image),
    "redrive": Writer(run_redrive, exact(1, 0), source_image),
    "bf-sql": Writer(run_backfill("sql"), exact(0, 0), source_image),
    "bf-copy": Writer(run_backfill("copy"), exact(0, 0), source_image),
    "bf-py": Writer(run_backfill("python"), exact(0, 0), source_image),
    "repair": Writer(run_repair, from_source_version, source_image),
    "rep-del": Writer(run_repair, from_source_version, lambda c, p: None, in_source=False),
    "cutover": Writer(run_cutover, locked_version, source_image),
    "rollback": Writer(run_rollback, locked_version, lambda case, prior: prior),
    "sweep": Writer(run_sweep, exact(2, 0), lambda c, p: None, current=2),
}


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def db(stack: StackInfo) -> str:
    """A database of its own: the source table, the cutover's state tables, and a target
    table per case."""
    dsn = new_database(stack, "rule")
    apply_source_schema(dsn)
    with psycopg.connect(dsn) as conn:
        objects.ensure_state(conn)
    return dsn


def prepared(stack: StackInfo, db: str, writer: Writer) -> Case:
    case = Case(stack, db, writer.current, writer.in_source)
    apply_target_schema(db, case.table)
    case.sql(
        "INSERT INTO workflow_processes (id, workflow_name, message, status, total_cost,"
        " created_at, updated_at) VALUES (%s, 'w', 'from the source', 'running', 1.5, %s, %s)",
        case.run_id,
        UPDATED,
        UPDATED,
    )
    case.mapped = mapped_source(db, "id = %s", (case.run_id,))[case.run_id]
    if not case.in_source:  # a row the source no longer has
        case.sql("DELETE FROM workflow_processes WHERE id = %s", case.run_id)
    for _ in range(case.current):  # generations 1..c, complete
        case.record_generation(complete=True)
    return case


@pytest.mark.parametrize(("writer_name", "state", "outcome"), list(table_cells()))
def test_every_writer_against_every_prior_state(
    stack: StackInfo, db: str, writer_name: str, state: str, outcome: str
) -> None:
    writer = WRITERS[writer_name]
    case = prepared(stack, db, writer)
    STATES[state].set(case, case.current)
    prior = case.seen()
    expected_image = writer.image(case, prior[0])
    before = case.wal()
    writer.run(case)
    after = case.wal()
    row, entry, floor = case.seen()
    if outcome == "S":
        assert (row, entry, floor) == prior, "skipped: nothing may change"
        return
    assert row == expected_image
    assert floor == prior[2]
    generation, lsns = writer.version(case, before, after)
    assert entry is not None and entry[0] == generation and entry[1] in lsns, entry
    assert entry[2] == (expected_image is None)


# --------------------------------------------------------------------------- the paths to it


def read_of(case: Case, run_id: str, message: str) -> Message:
    """A snapshot read of ``run_id``: the case's source row under that id and message."""
    _, value = event(case, "r", 0, snapshot="true")
    doc = json.loads(value)
    doc["after"].update(id=run_id, message=message)
    return Message(case.topic, 1, json.dumps({"id": run_id}).encode(), json.dumps(doc).encode())


def test_a_re_snapshot_read_that_cannot_be_used_keeps_its_row_from_the_sweep(
    stack: StackInfo, db: str
) -> None:
    """Generation 2 re-snapshots rows of generation 1.  The read of one cannot be decoded
    (only its key can: a writer schema the registry no longer has), the read of another is
    rejected by the target while its batch is bisected.  Both rows are in the source:
    each leaves a hold, and the sweep keeps them; a row the snapshot lacked is removed."""
    case = prepared(stack, db, WRITERS["sweep"])
    undecodable, rejected, gone = case.run_id, unique("rejected"), unique("gone")
    old = case.image("old")
    for run_id in (undecodable, rejected, gone):
        case.write_row((run_id, *old[1:]))
        case.sql(
            f'INSERT INTO "{case.table}_versions" (run_id, generation, source_lsn, deleted)'
            " VALUES (%s, 1, 100, false)",
            run_id,
        )
    case.sql(f"ALTER TABLE \"{case.table}\" ADD CHECK (description <> 'refused')")
    key = json.dumps({"id": undecodable}).encode()
    undecoded = Message(case.topic, 0, key, b"\x00\x00\x00\x03\xe7")
    stream(case, [undecoded, read_of(case, rejected, "refused")])
    run_sweep(case)
    rows = target_rows(db, case.table)
    assert rows[undecodable][1:] == rows[rejected][1:] == old[1:]  # as they were
    assert gone not in rows
    entries = dict(
        (r, (g, lsn, d))
        for r, g, lsn, d in case.sql(
            f'SELECT run_id, generation, source_lsn, deleted FROM "{case.table}_versions"'
        )
    )
    assert entries == {
        undecodable: (2, 0, False),
        rejected: (2, 0, False),
        gone: (2, 0, True),
    }


def test_repair_never_deletes_a_row_inserted_while_it_ran(
    stack: StackInfo, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify found the row extra; while the repair runs, the source inserts it and the
    stream applies the insert.  The repair's delete, at a version taken before its read,
    loses: the row stays, and the repair reports nothing unrepaired."""
    case = prepared(stack, db, WRITERS["rep-del"])
    case.write_row(case.image("extra"))
    case.write_entry(1, 100)
    inserted: list[int] = []

    class Meanwhile(PostgresSink):
        def apply(self, changes: Any, positions: Any, **options: Any) -> Any:
            if not inserted:  # after the repair's read, before its write
                case.sql(
                    "INSERT INTO workflow_processes (id, workflow_name, message, status,"
                    " total_cost, created_at, updated_at)"
                    " VALUES (%s, 'w', 'from the source', 'running', 1.5, %s, %s)",
                    case.run_id,
                    UPDATED,
                    UPDATED,
                )
                inserted.append(case.wal())
                with PostgresSink(case.db, table=case.table) as stream_sink:
                    insert = RowChange(case.run_id, inserted[0], False, case.image())
                    stream_sink.apply([insert._replace(generation=1)], [])
            return super().apply(changes, positions, **options)

    monkeypatch.setattr(from_source, "PostgresSink", Meanwhile)
    monkeypatch.setattr(verify_runner, "PostgresSink", Meanwhile, raising=False)
    report = Report(SOURCE_TABLE, case.table)
    report.drift = {case.run_id: KeyDiff(case.run_id, "extra")}
    options = verify_runner.Options(catch_up_timeout_s=0, repair_timeout_s=3)
    tables = Tables(case.db, case.db, case.table)
    summary = verify_runner.repair(tables, case.settings(), report, options, lambda t: None)
    assert inserted, "the repair wrote nothing"
    row, entry, _ = case.seen()
    assert row == case.image() and entry == (1, inserted[0], False)
    assert summary.unrepaired == [] and summary.converged
