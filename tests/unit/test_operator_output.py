"""What the tool tells people: log lines (JSON or human, extras kept, librdkafka's
repeats held back), one-line errors with exit codes, progress on a terminal."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Callable

import pytest

from replicator.cli import main as cli_main
from replicator.errors import ConfigurationError, PositionGap, TargetUnavailable
from replicator.observe.logs import HumanFormatter, JsonFormatter, RateLimit
from replicator.observe.progress import Progress, describe


def record(
    msg: str, *args: object, level: int = logging.WARNING, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("replicator.consumer", level, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_the_extras_and_the_exception() -> None:
    rec = record("partitions assigned", positions={0: 5})
    try:
        raise ValueError("boom")
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(rec))
    assert line["msg"] == "partitions assigned" and line["level"] == "warning"
    assert line["positions"] == {"0": 5}
    assert "ValueError: boom" in line["exc"] and line["ts"].endswith("Z")


def test_human_lines_put_the_extras_after_the_message() -> None:
    assert (
        HumanFormatter()
        .format(record("idle; exiting", idle_s=8))
        .endswith("WARNING idle; exiting  idle_s=8")
    )
    assert HumanFormatter().format(record("replicating")).endswith("WARNING replicating")


def test_repeated_librdkafka_lines_are_held_back_and_counted() -> None:
    limit = RateLimit(interval=60)
    first = record("%s [%s] %s", "FAIL", "rdkafka#consumer-1", "connection refused")
    assert limit.filter(first)
    assert first.getMessage() == "kafka: connection refused" and first.facility == "FAIL"  # type: ignore[attr-defined]
    for _ in range(3):
        assert not limit.filter(record("%s [%s] %s", "FAIL", "rdkafka#consumer-1", "again"))
    assert limit.filter(record("other line"))  # another kind passes
    limit.interval = 0
    after = record("%s [%s] %s", "FAIL", "rdkafka#consumer-1", "still refused")
    assert limit.filter(after) and after.suppressed == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("error", "code", "prefix"),
    [
        (ConfigurationError("bad table name"), 2, "replicator: configuration error: bad"),
        (TargetUnavailable("connection refused"), 2, "replicator: unavailable: connection"),
        (PositionGap("offsets 2..4 are gone"), 1, "replicator: offsets 2..4 are gone"),
    ],
)
def test_each_error_is_one_line_and_an_exit_code(
    error: Exception,
    code: int,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(cli_main, "build_parser", lambda: _parser(fail))
    assert cli_main.main(["x"]) == code
    err = capsys.readouterr().err
    assert err.startswith(prefix) and err.count("\n") == 1


def test_an_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", lambda: _parser(interrupted))
    assert cli_main.main(["x"]) == 130


def _parser(func: Callable[[object], int]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.set_defaults(func=func)
    return parser


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_progress_is_a_bar_that_ends_at_the_total() -> None:
    out = Terminal()
    progress = Progress(out)
    progress.start("backfill", 10, "rows", done=2)
    progress.advance(5)
    progress.advance(3)
    progress.finish()
    text = out.getvalue()
    assert "backfill" in text and "10/10" in text and "rows/s" in text
    assert progress._bar is None  # stopped: the terminal is the caller's again


def test_describe_a_step_without_a_rate_or_a_total() -> None:
    assert describe("verify", 0, 0, "rows", 0.0).endswith("0/0 rows, 0 rows/s, ETA 0:00:00")
    assert describe("verify", 5, 10, "rows", 0.0).endswith("ETA ?")
    assert describe("verify", 5, 10, "rows", 1.0).endswith("ETA 0:00:05")


def test_a_wait_for_the_replicator_says_where_it_is_while_it_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cutover's readiness wait (up to 30 s) is not silent: every few seconds it says
    how far the replicator is, then it ends as soon as the positions reach the ends."""
    from replicator.stream.source import ends as ends_module
    from replicator.stream.source.ends import PartitionEnd, wait_for_positions

    positions = iter([{0: 3}, {0: 5}, {0: 8}, {0: 10}])
    monkeypatch.setattr(ends_module, "read_positions", lambda *a: next(positions))
    heard: list[str] = []
    wait_for_positions(
        "dsn", "offsets", "workflow_runs", "t", {0: PartitionEnd(0, 0, 10)}, 30.0,
        interval=0.01, progress=heard.append, every=0.0,
    )  # fmt: skip
    assert heard == [
        f"waiting for the replicator of 'workflow_runs' to reach the ends of t: partition 0"
        f" at {n} of 10 ({0} of 30 s)"
        for n in (3, 5, 8)
    ]
