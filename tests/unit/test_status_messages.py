"""What the commands say and exit with when they refuse, find nothing, or wait: refusals
are told apart from bad input, readiness is never silent for long, a rollback after the
finalize says there is no way back.  No services (tests/integration/
test_cutover_leftovers.py has the cases that need a stack)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from replicator.cli import main as cli_main
from replicator.cli.common import EXIT_MEANINGS
from replicator.cutover import objects, readiness
from replicator.settings import Settings
from tests.unit.helpers import ENV, environment  # noqa: F401  (an autouse fixture)


def record(state: str) -> objects.Record:
    cut_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return objects.Record(1, state, cut_at, "0/1", 10, 10, 5, 0, [], "workflow_processes_archive")


def test_a_refusal_has_its_own_label_and_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from replicator.errors import Refused

    def refuse(args: object) -> int:
        raise Refused("dlq redrive: the stream into workflow_runs was closed by the cutover")

    monkeypatch.setattr(cli_main.dlq, "cmd_dlq", refuse)
    code = cli_main.main(["dlq", "redrive"])
    err = capsys.readouterr().err
    assert code == 3 and code in EXIT_MEANINGS and "refused" in EXIT_MEANINGS[code]
    assert err.startswith("replicator: refused: dlq redrive: the stream"), err
    assert "configuration error" not in err


def test_dlq_show_of_a_letter_that_does_not_exist_is_bad_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main.dlq, "_chosen", lambda args, settings: [])
    assert cli_main.main(["dlq", "show", "999"]) == 2
    err = capsys.readouterr().err
    assert "offset 999 of partition 0" in err and "no such dead letter" in err, err
    assert "dlq list" in err


@pytest.mark.parametrize("argv", [["rollback"], ["rollback", "--dry-run"]])
def test_a_rollback_after_the_finalize_is_refused_and_says_there_is_no_way_back(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from replicator.cutover import guard

    monkeypatch.setattr(guard, "closed_by", lambda dsn: record("finalized"))
    assert cli_main.main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("replicator: refused: rollback:"), err
    assert "closed the rollback window" in err and "no way back" in err, err


def test_readiness_says_which_check_runs_while_a_long_one_says_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A check that takes long (here verify, held until the progress came) is named every
    PROGRESS_EVERY_S; the checks that do not take long add no line."""
    said: list[str] = []
    three = threading.Event()

    def say(line: str) -> None:
        said.append(line)
        if len(said) >= 3:
            three.set()

    def slow_verify(settings: Settings) -> readiness.Check:
        three.wait(10)  # a verify of a large table under load, as long as the test needs
        return readiness.Check("verify in sync", True, "in sync")

    class Conn:
        def __enter__(self) -> Conn:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    ok = readiness.Check("x", True, "ok")
    monkeypatch.setattr(readiness, "PROGRESS_EVERY_S", 0.01, raising=False)
    monkeypatch.setattr(readiness, "same_database", lambda s, t: (True, "one"))
    monkeypatch.setattr(readiness, "connect", lambda *a, **k: Conn())
    monkeypatch.setattr(readiness, "_catalog_checks", lambda conn, settings: [ok])
    monkeypatch.setattr(readiness, "_caught_up", lambda settings, say=None: ok)
    monkeypatch.setattr(readiness, "_connector", lambda settings: ok)
    monkeypatch.setattr(readiness, "_in_sync", slow_verify)
    checks = readiness.cutover_checks(Settings(), say=say)
    assert [c.name for c in checks][-1] == "verify in sync"
    assert len(said) >= 3, said
    assert all(line.startswith("verify in sync: still checking (") for line in said[-3:]), said


def test_what_a_cutover_left_is_said_with_what_removes_it() -> None:
    from replicator.cutover.leftovers import summary

    text = summary(["replication slot s (not in use, retaining 9 MB of WAL)"])
    assert "replication slot s" in text and "9 MB" in text
    assert "`replicator cutover` run again removes it" in text


def test_with_the_database_down_the_connector_is_not_said_to_be_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from replicator.local import stack as local

    class Connect:
        def __init__(self, url: str) -> None:
            pass

        def status(self, name: str) -> dict[str, Any]:  # what Connect answers meanwhile
            return {"connector": {"state": "RUNNING"}, "tasks": [{"state": "RUNNING"}]}

    monkeypatch.setattr(local, "ConnectClient", Connect)
    part = local.LocalStack(tmp_path)._connector_status(database_up=False)
    assert part["healthy"] is False and str(part["state"]).startswith("unknown"), part
    assert local.LocalStack(tmp_path)._connector_status(database_up=True)["healthy"] is True
