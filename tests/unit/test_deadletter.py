"""Dead letters: every event gets one, however large, and delivery is confirmed."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from replicator.clients.kafka import EVENT_MAX_BYTES, LETTER_MAX_BYTES, client_config
from replicator.errors import BrokerUnavailable, EventError
from replicator.events import ApplyResult, RowChange
from replicator.local import kafka_rules
from replicator.observe.metrics import Metrics
from replicator.settings import Settings
from replicator.stream.apply.batch import Batch
from replicator.stream.apply.deadletter import (
    DEAD_LETTER_TOPIC_CONFIG,
    MAX_DEAD_LETTER_BYTES,
    UNRESOLVED,
    DeadLetteringSink,
    DeadLetters,
)
from replicator.stream.apply.transform import is_hold


class Msg:
    def __init__(self, value: bytes | None, key: bytes = b'{"id":"x"}', offset: int = 7) -> None:
        self._value, self._key, self._offset = value, key, offset
        self._headers: list[tuple[str, bytes]] = []

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "src"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


class Producer:
    """librdkafka's limits: ``local`` bytes refused at produce, ``broker`` at delivery."""

    def __init__(self, local: int = LETTER_MAX_BYTES, broker: int = LETTER_MAX_BYTES) -> None:
        self.local, self.broker = local, broker
        self.queued: list[tuple[Any, Msg]] = []
        self.delivered: list[Msg] = []

    def produce(self, topic: str, key: Any, value: Any, headers: Any, on_delivery: Any) -> None:
        if value is not None and len(value) > self.local:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        msg = Msg(value, key)
        msg._headers = list(headers)
        self.queued.append((on_delivery, msg))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        queued, self.queued = self.queued, []
        for on_delivery, msg in queued:
            value = msg.value()
            if value is not None and len(value) > self.broker:
                on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), msg)
            else:
                self.delivered.append(msg)
                on_delivery(None, msg)
        return 0


def dead_letters(producer: Producer) -> DeadLetters:
    settings = Settings(target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1")
    return DeadLetters(settings, Metrics(), producer=producer)


def test_every_event_the_change_topic_accepts_is_dead_lettered_whole() -> None:
    producer = Producer()
    dlq = dead_letters(producer)
    largest = b"x" * EVENT_MAX_BYTES  # a 16 MiB event: re-drivable, so never cut
    dlq.send(Msg(largest), "mapping_error", "'NaN' is not a finite number")
    dlq.confirm()
    (sent,) = producer.delivered
    assert sent.value() == largest
    assert not any(name.endswith("_bytes") for name, _ in sent.headers())


def test_the_dead_letter_topic_takes_keyless_letters_of_any_accepted_size_for_ever() -> None:
    config = DEAD_LETTER_TOPIC_CONFIG
    assert kafka_rules.max_message_bytes(config) >= LETTER_MAX_BYTES > EVENT_MAX_BYTES
    assert not kafka_rules.compacted(config)  # a TRUNCATE's event has no key
    assert config["retention.ms"] == config["retention.bytes"] == "-1"
    producer = client_config("producer", "k:1", {})
    assert producer["message.max.bytes"] == LETTER_MAX_BYTES


def test_an_event_too_large_for_the_topic_is_still_dead_lettered() -> None:
    producer = Producer(broker=10**9)
    dlq = dead_letters(producer)
    huge = b"x" * (MAX_DEAD_LETTER_BYTES + 5)
    dlq.send(Msg(huge), "decode_error", "not a change event")
    dlq.confirm()
    (sent,) = producer.delivered
    headers = dict(sent.headers())
    assert sent.value() == huge[:MAX_DEAD_LETTER_BYTES]
    assert headers["dlq.value_bytes"] == str(len(huge)).encode()
    assert headers["dlq.reason"] == b"decode_error" and headers["dlq.offset"] == b"7"


def test_a_dead_letter_the_broker_refuses_as_too_large_goes_again_without_its_value() -> None:
    producer = Producer(broker=1000)
    dlq = dead_letters(producer)
    dlq.send(Msg(b"y" * 5000), "decode_error", "bad")
    dlq.confirm()
    (sent,) = producer.delivered
    headers = dict(sent.headers())
    assert sent.value() is None
    assert headers["dlq.value_omitted"] == b"5000" and headers["dlq.reason"] == b"decode_error"


def test_a_failed_delivery_fails_the_confirmation() -> None:
    class Failing(Producer):
        def flush(self, timeout: float) -> int:
            for on_delivery, msg in self.queued:
                on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), msg)
            self.queued = []
            return 0

    dlq = dead_letters(Failing())
    dlq.send(Msg(b"v"), "decode_error", "bad")
    for _lane in range(2):  # whichever lane confirms next fails, not only the first to look
        with pytest.raises(BrokerUnavailable):
            dlq.confirm()
    dlq.forget()  # every batch was abandoned; their events are read and sent again
    dlq.confirm()


class RacyProducer(Producer):
    """Like librdkafka's queue seen from Python: a read-modify-write that loses messages
    when two threads produce at once without a lock (the sleep widens the window)."""

    created = 0

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        time.sleep(0.01)
        super().__init__()
        type(self).created += 1

    def produce(self, topic: str, key: Any, value: Any, headers: Any, on_delivery: Any) -> None:
        queued = list(self.queued)
        time.sleep(0.0005)
        msg = Msg(value, key)
        msg._headers = list(headers)
        self.queued = [*queued, (on_delivery, msg)]


def test_dead_letters_from_two_lanes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The main thread and the lanes' threads send and confirm at the same time: one
    producer is created, every dead letter is delivered and counted once."""
    monkeypatch.setattr("replicator.stream.apply.deadletter.Producer", RacyProducer)
    settings = Settings(target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1")
    metrics = Metrics()
    dlq = DeadLetters(settings, metrics)
    per_thread = 200
    start = threading.Barrier(3)

    def lane(name: str) -> None:
        start.wait()
        for n in range(per_thread):
            dlq.send(Msg(f"{name}-{n}".encode(), offset=n), "mapping_error", "bad")
            if n % 50 == 0:
                dlq.confirm()

    threads = [threading.Thread(target=lane, args=(name,)) for name in ("main", "l0", "l1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    dlq.confirm()
    producer = dlq._producer
    assert RacyProducer.created == 1
    assert isinstance(producer, RacyProducer)
    values = sorted(m.value() for m in producer.delivered)  # type: ignore[type-var]
    assert len(values) == 3 * per_thread == len(set(values))
    assert metrics.tally.dead_lettered == 3 * per_thread


class PartialSink:
    """A sink whose target lacks the rows of ``missing``: their partial changes come back
    unresolved, as PostgresSink reports them; ``then`` runs inside the "transaction"."""

    table = "workflow_runs"

    def __init__(self, missing: set[str], events: list[str]) -> None:
        self.missing, self.events = missing, events

    def apply(self, changes: Any, positions: Any, *, then: Any = None, stamped: Any = None) -> Any:
        unresolved = tuple(c.run_id for c in changes if c.unavailable and c.run_id in self.missing)
        result = ApplyResult(len(changes) - len(unresolved), 0, 0, unresolved)
        if then is not None:
            then(None, result)
        self.events.append(f"commit {[p.next_offset for p in positions]}")
        return result


def test_a_partial_update_for_a_missing_row_is_dead_lettered_before_its_position_commits() -> None:
    events: list[str] = []

    class Letters(DeadLetters):
        def send(self, msg: Any, reason: str, error: str) -> None:
            events.append(f"send {msg.offset()} {reason}")
            assert "REPLICA IDENTITY FULL" in error and "result_data" in error

        def confirm(self, timeout: float = 30) -> None:
            events.append("confirm")

    settings = Settings(target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1")
    sink = DeadLetteringSink(PartialSink({"gone"}, events), Letters(settings, Metrics()))  # type: ignore[arg-type]
    batch = Batch("src")
    full = RowChange("kept", 10, False, ("kept",), frozenset())
    partial = RowChange("gone", 11, False, ("gone",), frozenset({"result_data"}))
    for offset, change in enumerate([full, partial]):
        batch.add(change, Msg(b"{}", offset=offset), None)
        batch.advance(0, offset, change.lsn)
    result = sink.apply(batch)
    assert result.unresolved == ("gone",)
    assert events == [f"send 1 {UNRESOLVED}", "confirm", "commit [2]"]


class RejectingSink:
    """A target that rejects every batch holding a change of ``run_id`` "bad" with data (a
    hold carries none); ``applied`` records what it took."""

    table = "workflow_runs"

    def __init__(self) -> None:
        self.applied: list[RowChange] = []

    def apply(self, changes: Any, positions: Any, **options: Any) -> ApplyResult:
        if any(c.run_id == "bad" and not is_hold(c) for c in changes):
            raise EventError("run_id 'bad': a value cannot be written", reason="target_rejected")
        self.applied += changes
        return ApplyResult(len(changes), 0, 0, ())


@pytest.mark.parametrize("generation", [0, 2])
def test_a_change_the_target_rejects_leaves_a_hold_in_a_generation_taken_again(
    generation: int,
) -> None:
    sent: list[str] = []

    class Letters(DeadLetters):
        def send(self, msg: Any, reason: str, error: str) -> None:
            sent.append(f"{msg.offset()} {reason}")

        def confirm(self, timeout: float = 30) -> None:
            pass

    settings = Settings(target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1")
    target = RejectingSink()
    sink = DeadLetteringSink(target, Letters(settings, Metrics()))  # type: ignore[arg-type]
    batch = Batch("src")
    for offset, run_id in enumerate(["ok", "bad", "also-ok"]):
        read = RowChange(run_id, 0, False, (run_id,), frozenset(), generation)
        batch.add(read, Msg(b"{}", offset=offset), None)
        batch.advance(0, offset, None)
    sink.apply(batch)
    assert sent == ["1 target_rejected"]
    held = [c for c in target.applied if c.run_id == "bad"]
    if generation:  # the sweep of the generation keeps the row the source still has
        assert [(is_hold(c), c.generation, c.lsn) for c in held] == [(True, generation, 0)]
    else:
        assert held == []
    assert {c.run_id for c in target.applied if not is_hold(c)} == {"ok", "also-ok"}
