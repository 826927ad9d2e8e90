"""After a cutover the long-running consumer stays up, idle, and says so; a rollback makes
it replicate again.  Driven through the loop's source seam (test_replicator_loop.py): no
Kafka, no database; the endpoints are served on a local port."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from replicator.cutover.guard import describe
from replicator.cutover.objects import Record
from replicator.errors import TargetUnavailable
from replicator.local.processes import free_port
from replicator.observe.metrics import Health, Metrics, readiness
from replicator.settings import Settings
from replicator.stream.replicator import Replicator
from tests.unit.test_replicator_loop import (
    TOPIC,
    Message,
    RecordingDeadLetters,
    RecordingSink,
    ScriptedSource,
)

CLOSED = {0: -1}  # the positions as `replicator cutover` leaves them


class ControlSink(RecordingSink):
    """A recording sink that knows whether its connection is open (a read of the
    positions opens it, ``close`` closes it), and stands for the idle consumer's reads of
    the positions too (:meth:`idle_read`: a connection of their own, failing as told)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = False
        self.checks = 0  # the idle consumer's reads
        self.closed_outages = 0

    def stream_closed(self, topic: str) -> bool:
        self.open = True
        return super().stream_closed(topic)

    def idle_read(self) -> bool:
        self.checks += 1
        if self.closed_outages:
            self.closed_outages -= 1
            raise TargetUnavailable("the target went away")
        return super().stream_closed(TOPIC)

    def load_positions(self, topic: str) -> Any:
        self.open = True
        return super().load_positions(topic)

    def close(self) -> None:
        self.open = False


class Sources:
    """A source factory: a fresh :class:`ScriptedSource` over ``messages`` per group join."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.made: list[ScriptedSource] = []
        self.on_poll: Callable[[ScriptedSource], None] | None = None

    def __call__(self, _settings: Settings) -> ScriptedSource:
        source = ScriptedSource(self.messages)
        source.on_poll = self.on_poll
        self.made.append(source)
        return source


class Running:
    """``replicator run`` without ``--exit-when-idle``, on a thread; ``stop`` is SIGTERM's."""

    def __init__(self, sources: Sources, sink: ControlSink, **settings: Any) -> None:
        self.port = free_port()
        values: dict[str, Any] = {
            "target_dsn": "postgresql://app@db.invalid/t",
            "kafka_bootstrap": "k.invalid:9092",
            "retry_backoff_max_s": 0.1,
            "batch_max_rows": 3,
            "metrics_port": self.port,
            "metrics_host": "127.0.0.1",
            **settings,
        }
        self.replicator = Replicator(
            Settings(**values),
            source=sources,  # type: ignore[arg-type]  # a scripted source stands for Kafka
            sink=sink,  # type: ignore[arg-type]  # a recording sink stands for PostgreSQL
            control=sink,  # type: ignore[arg-type]  # (the same)
            dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]  # no broker
        )
        self.replicator.positioning.watch_every_s = 0.05
        self.replicator.closed.check_every_s = 0.05
        self.replicator.closed.still_closed = sink.idle_read
        self.replicator.closed.record = lambda: None  # no cutover record to read
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.exit_code = self.replicator.run()

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.replicator.stop_event.set()
        self.thread.join(10)

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.replicator.metrics.registry.get_sample_value(name, labels or {})


def wait_until(what: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def cut_over_said(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("cut over: the stream")]


def test_a_consumer_started_after_the_cutover_stays_up_idle_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sources, sink = Sources([Message(n, f"wp-{n}") for n in range(4)]), ControlSink()
    sink.positions = dict(CLOSED)
    caplog.set_level(logging.INFO, logger="replicator")
    with Running(sources, sink) as run:
        wait_until(lambda: sink.checks >= 4)  # several reads of the positions, idle
        assert run.thread.is_alive() and run.exit_code is None
        status, body = run.get("/readyz")
        assert status == 200 and body.startswith("cut over: "), body
        assert "`replicator rollback` reopens the stream" in body
        assert "Retire its deployment" in body
        assert run.get("/healthz")[0] == 200
        assert run.sample("replicator_cut_over") == 1
        for reason in ("no_partitions", "target_unreachable", "stalled"):
            assert run.sample("replicator_unready", {"reason": reason}) == 0
        assert sources.made == []  # never joined the group: no Kafka client at all
        assert not sink.open  # its connections closed: nothing held between two reads
        assert sink.applies == [] and sink.positions == CLOSED
        said = cut_over_said(caplog)
        assert len(said) == 1, said  # once, however long it idles
        assert "Retire its deployment" in said[0].getMessage()
        run.replicator.stop_event.set()  # what SIGTERM and SIGINT do (cli/run.py)
        run.thread.join(10)
    assert not run.thread.is_alive() and run.exit_code == 0


def test_a_stop_ends_the_idle_wait_without_waiting_for_the_next_check() -> None:
    sink = ControlSink()
    sink.positions = dict(CLOSED)
    with Running(Sources([]), sink) as run:
        run.replicator.closed.check_every_s = 3600.0
        wait_until(lambda: run.replicator.health.cut_over is not None)
        run.replicator.stop_event.set()
        run.thread.join(10)  # an hour's check interval: only the stop can end it
        assert not run.thread.is_alive() and run.exit_code == 0


def test_a_running_consumer_idles_at_the_cutover_and_resumes_after_a_rollback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = [Message(n, f"wp-{n}") for n in range(12)]
    sources, sink = Sources(messages), ControlSink()
    held: list[dict[int, int]] = []  # what `replicator rollback` puts back

    def cut_over(src: ScriptedSource) -> None:
        if src.position == 6 and not held:
            held.append(dict(sink.positions))
            sink.positions = dict(CLOSED)

    sources.on_poll = cut_over
    caplog.set_level(logging.INFO, logger="replicator")
    with Running(sources, sink) as run:
        wait_until(lambda: run.replicator.health.cut_over is not None)
        applied = list(sink.applies)
        first = sources.made[0]
        assert ("close", None) in first.log  # it left the group
        assert run.sample("replicator_cut_over") == 1
        assert run.sample("replicator_consumer_lag", {"partition": "0"}) is None
        assert run.get("/readyz")[0] == 200
        wait_until(lambda: sink.checks >= 3)
        assert sink.applies == applied and len(sources.made) == 1  # idle, not looping
        assert not sink.open
        sink.positions = held[0]  # `replicator rollback` reopens the stream
        wait_until(lambda: sink.positions.get(0) == len(messages))
        assert len(sources.made) == 2  # joined the group again
        assert set(sink.rows) == {f"wp-{n}" for n in range(12)}
        assert run.sample("replicator_cut_over") == 0
        assert run.get("/readyz") == (200, "ready\n")
        reopened = [r for r in caplog.records if "stream was reopened" in r.getMessage()]
        assert len(reopened) == 1 and len(cut_over_said(caplog)) == 1
    assert run.exit_code == 0


def test_positions_unreadable_while_idle_are_said_once_and_the_rollback_still_seen(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = ControlSink()
    sink.positions = dict(CLOSED)
    with Running(Sources([Message(0, "wp-0")]), sink) as run:
        wait_until(lambda: run.replicator.health.cut_over is not None)
        sink.closed_outages = 5
        wait_until(lambda: sink.closed_outages == 0)
        assert run.get("/readyz")[0] == 200  # nothing depends on the target meanwhile
        sink.positions = {}  # reopened by a rollback, nothing stored yet
        wait_until(lambda: sink.positions.get(0) == 1)
    said = [r for r in caplog.records if "cannot read the stored positions" in r.getMessage()]
    assert len(said) == 1


def test_exit_when_idle_after_the_cutover_ends_before_joining_the_group() -> None:
    sources, sink = Sources([Message(n, f"wp-{n}") for n in range(4)]), ControlSink()
    sink.positions = dict(CLOSED)
    replicator = Replicator(
        Settings(target_dsn="postgresql://app@db.invalid/t", kafka_bootstrap="k.invalid:9092"),
        source=sources,  # type: ignore[arg-type]  # a scripted source stands for Kafka
        sink=sink,  # type: ignore[arg-type]  # a recording sink stands for PostgreSQL
        control=sink,  # type: ignore[arg-type]  # (the same)
        dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]  # no broker
    )
    assert replicator.run(exit_when_idle_s=30) == 0
    assert sources.made == [] and sink.applies == []  # no group joined, nothing applied
    assert replicator.health.cut_over is None  # ended, not idle


def test_readiness_while_cut_over_is_200_whatever_else_is_true() -> None:
    health = Health(60, "g", "t")  # no partition, the target never reached
    assert readiness(health)[0].startswith("503")
    health.cut_over = "the stream was closed"
    assert readiness(health) == ("200 OK", "cut over: the stream was closed")
    assert health.problems() == {}  # replicator_unready is 0 for every reason
    metrics = Metrics()
    metrics.watch(health)
    registry = metrics.registry
    assert registry.get_sample_value("replicator_unready", {"reason": "no_partitions"}) == 0
    assert registry.get_sample_value("replicator_cut_over") == 0  # a gauge of its own, at 0


def record(state: str) -> Record:
    cut_at = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    return Record(1, state, cut_at, "0/1", 10, 10, 5, 0, [], "workflow_processes_archive")


@pytest.mark.parametrize("state", ["cut_over", "finalized"])
def test_every_command_says_that_run_stays_up_idle_after_a_cutover(state: str) -> None:
    text = describe(record(state))
    assert "`replicator run` stays up idle" in text and "run` ends" not in text
    if state == "cut_over":
        assert "resumes by itself" in text and "--finalize" in text
    else:
        assert "retire its deployment" in text


def test_the_idle_consumer_says_what_to_do_after_the_finalize() -> None:
    sink = ControlSink()
    replicator = Replicator(
        Settings(target_dsn="postgresql://app@db.invalid/t", kafka_bootstrap="k.invalid:9092"),
        source=Sources([]),  # type: ignore[arg-type]  # a scripted source stands for Kafka
        sink=sink,  # type: ignore[arg-type]  # a recording sink stands for PostgreSQL
        control=sink,  # type: ignore[arg-type]  # (the same)
        dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]  # no broker
    )
    replicator.closed.record = lambda: record("finalized")
    said = replicator.closed.status()
    assert "at 2026-12-06 10:00:00+0000 and finalized" in said
    assert "retire this deployment" in said and "rollback" not in said
    replicator.closed.record = lambda: record("cut_over")
    said = replicator.closed.status()
    assert "`replicator rollback` reopens the stream" in said and "--finalize" in said
