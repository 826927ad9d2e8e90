"""Bad input of every kind gets one clear line and an exit code, never a traceback.

The cases that need no services; tests/integration/test_cli_input.py has the others."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

import pytest

from replicator.cli.main import build_parser, main
from replicator.clients.connect import ConnectClient
from replicator.errors import ConnectError, TransientError
from replicator.stream.source.ends import NotCaughtUp
from replicator.verify import runner
from replicator.verify.tables import Observed
from tests.unit.helpers import ENV, environment  # noqa: F401  (an autouse fixture)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["verify", "--chunk-rows", "0"], "--chunk-rows: 0 is not a positive integer"),
        (["verify", "--max-report", "-1"], "--max-report: -1 is not an integer of 0 or more"),
        (["verify", "--catch-up-timeout", "-5"], "--catch-up-timeout: -5 is not a number"),
        (["sample", "--rows", "-5"], "--rows: -5 is not a positive integer"),
        (["sample", "--start", "-1"], "--start: -1 is not an integer of 0 or more"),
        (["connector", "restart", "--timeout", "-1"], "--timeout: -1 is not a positive number"),
        (["run", "--exit-when-idle", "-1"], "--exit-when-idle: -1 is not a positive number"),
        (["backfill", "--workers", "0"], "--workers: 0 is not a positive integer"),
        (["backfill", "--chunk-rows", "x"], "--chunk-rows: 'x' is not a positive integer"),
    ],
)
def test_nonsense_arguments_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    code, err = run_cli(capsys, *argv)
    assert code == 2 and words in err


def test_drop_old_without_swap_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "replay", "--drop-old")
    assert code == 2 and "--drop-old only applies with --swap" in err


def test_kafka_config_takes_json_numbers_and_booleans(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "REPLICATOR_KAFKA_CONFIG", '{"fetch.wait.max.ms": 20, "enable.auto.commit": true}'
    )
    assert run_cli(capsys, "config", "show")[0] == 0


def test_kafka_config_that_is_not_json_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATOR_KAFKA_CONFIG", "not json")
    code, err = run_cli(capsys, "config", "show")
    assert code == 2 and "REPLICATOR_KAFKA_CONFIG is not valid JSON" in err
    assert "EnvSettingsSource" not in err


def test_a_missing_setting_names_only_ways_that_exist(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLICATOR_TARGET_DSN")
    code, err = run_cli(capsys, "run")
    assert code == 2 and "set REPLICATOR_TARGET_DSN" in err
    assert "--target-dsn" not in err


def test_a_bad_flag_value_is_reported_as_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "run", "--metrics-port", "70000")
    assert code == 2 and "(set via --metrics-port)" in err
    assert "REPLICATOR_METRICS_PORT" not in err


def test_every_option_of_every_command_is_described() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    undescribed = [
        f"{name} {action.option_strings or action.dest}"
        for name, command in sub.choices.items()
        for action in command._actions
        if not action.help
        and not isinstance(action, argparse._HelpAction)
        and action.dest != "action"
    ]
    assert not undescribed
    # the actions of stack and connector are described one by one
    for name in ("stack", "connector"):
        command = sub.choices[name]
        (actions,) = [a for a in command._actions if a.dest == "action"]
        text = command.format_help()
        assert all(f"{choice}:" in text for choice in actions.choices), name


def test_the_status_of_a_connector_that_is_not_registered_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = ConnectClient("http://connect.invalid:8083")
    monkeypatch.setattr(client, "names", lambda: ["another"])
    with pytest.raises(ConnectError, match="not registered"):
        client.status("workflow-processes")


def test_repair_gives_up_when_nothing_applies_the_re_read_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Table:
        table = "workflow_runs"

    class Tables:
        target = Table()

        def by_key(self, keys: set[str]) -> Observed:  # the target never gets them
            return Observed({k: ("x",) for k in keys}, {}, {})  # type: ignore[misc]

    def not_running(timeout: float) -> None:  # no consumer moves the positions
        raise NotCaughtUp("behind", {})

    monkeypatch.setattr(runner, "MIN_REPAIR_PATIENCE_S", 0.5)
    options = runner.Options(catch_up_timeout_s=0)
    with pytest.raises(TransientError, match="is `replicator run` running"):
        runner._await_resync(Tables(), {"wp-1", "wp-2"}, options, not_running)  # type: ignore[arg-type]


def test_a_closed_output_pipe_ends_the_command_quietly() -> None:
    """`replicator ... | head`: no BrokenPipeError traceback, the SIGPIPE exit code."""
    script = (
        "import sys\n"
        "from replicator.cli import main as m\n"
        "def flood(args):\n"
        "    for n in range(100000):\n"
        "        print('line', n)\n"
        "    return 0\n"
        "import replicator.cli.config as c\n"
        "c.cmd_config = flood\n"
        "sys.exit(m.main(['config', 'show']))\n"
    )
    shell = f'{sys.executable} -c {shlex.quote(script)} | head -3; echo "exit=${{PIPESTATUS[0]}}"'
    res = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert res.stdout.splitlines()[:3] == ["line 0", "line 1", "line 2"]
    assert "exit=141" in res.stdout, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["dlq", "list", "5"], "takes no offset"),
        (["dlq", "redrive", "--origin", "1:2"], "takes no offset"),
        (["dlq", "list", "--reason", "nosuch"], "is no dead-letter reason"),
    ],
)
def test_dlq_refuses_what_it_would_otherwise_ignore(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert said in capsys.readouterr().err


def test_dlq_show_origin_must_be_partition_colon_offset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dlq", "show", "--origin", "7"])
    assert exit_.value.code == 2
    assert "PARTITION:OFFSET" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["cutover", "--dry-run"], ["cutover"], ["rollback", "--dry-run"], ["verify"]],
)
def test_a_database_out_of_reach_is_exit_2_for_every_command(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from replicator.local.processes import free_port

    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2"
    for name in ("SOURCE", "TARGET", "ADMIN_SOURCE", "ADMIN_TARGET"):
        monkeypatch.setenv(f"REPLICATOR_{name}_DSN", dsn)
    monkeypatch.setenv("REPLICATOR_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "replicator: " in err and "Traceback" not in err
