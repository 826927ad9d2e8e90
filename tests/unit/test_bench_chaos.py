"""The fault campaign's reading of what the product says."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from bench import chaos
from bench.chaos import Application, Campaign, connector_runs
from replicator.db.schema import apply_target_schema
from replicator.local.postgres import LocalPostgres
from replicator.local.processes import free_port
from replicator.mapping.columns import SOURCE_COLUMNS
from replicator.mapping.rows import map_to_tuple
from replicator.stream.apply import versions
from replicator.stream.apply.sink_sql import SinkStatements


def status(connector: str, *tasks: str) -> str:
    doc = {
        "connector": {"state": connector},
        "tasks": [{"id": i, "state": t} for i, t in enumerate(tasks)],
    }
    return json.dumps(doc, indent=2)


def test_the_connector_runs_when_it_and_every_task_do() -> None:
    assert connector_runs(status("RUNNING", "RUNNING"))
    # an unfinished re-snapshot is said after the JSON: the state is still read
    assert connector_runs(
        status("RUNNING", "RUNNING") + "\nsnapshot generation 3 ... not completed"
    )
    assert not connector_runs(status("RUNNING", "FAILED"))
    assert not connector_runs(status("STOPPED"))
    assert not connector_runs("")


def test_the_campaign_gives_a_stuck_group_a_new_id_only_when_the_product_said_so(
    tmp_path: Path,
) -> None:
    """After the last heal, a member's warning that the group's rebalance has not
    completed (written by the product's own tracker and formatter) makes the campaign
    restart it with another group id, once; an ordinary "no partition" warning, or one
    written before the heal, does not."""
    import logging
    import time

    from bench.chaos import Campaign
    from replicator.observe.logs import HumanFormatter
    from replicator.observe.metrics import GroupState, Health, Metrics
    from replicator.observe.tracker import Tracker
    from replicator.settings import Settings

    class FakeMember:
        def __init__(self, log: Path) -> None:
            self.log, self.env, self.starts, self.stops = log, {}, 0, 0

        def stop(self) -> None:
            self.stops += 1

        def start(self) -> None:
            self.starts += 1

    log = tmp_path / "member-1.log"
    handler = logging.FileHandler(log)
    handler.setFormatter(HumanFormatter())
    logger = logging.getLogger("replicator.consumer")
    logger.addHandler(handler)
    settings = Settings(
        target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1", group_id="chaos"
    )
    health = Health(120, settings.group_id, settings.topic)
    tracker = Tracker(settings, Metrics(), health)
    health.unassigned_since = time.monotonic() - 120

    def warn(group: GroupState | None) -> int:
        tracker.progress([], force=True, group=group)
        handler.flush()
        return log.stat().st_size

    campaign = Campaign.__new__(Campaign)
    campaign.main, campaign.env = FakeMember(log), {"REPLICATOR_GROUP_ID": "chaos"}  # type: ignore[assignment]
    campaign.regrouped, campaign.say = None, lambda line: None
    try:
        mark = warn(GroupState("wait-sync", 300.0))  # before the heal: not acted on
        campaign.regroup(mark)
        mark2 = warn(GroupState("steady", 0.0))  # a full group: not this case
        campaign.regroup(mark)
        assert campaign.regrouped is None and campaign.main.starts == 0  # type: ignore[attr-defined]
        warn(GroupState("wait-join", 95.0))
        campaign.regroup(mark2)
        campaign.regroup(mark2)  # once
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert campaign.regrouped is not None and "has not completed for 95s" in campaign.regrouped
    assert campaign.main.stops == 1 and campaign.main.starts == 1  # type: ignore[attr-defined]
    assert campaign.main.env["REPLICATOR_GROUP_ID"] == "chaos-regrouped"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the checker's model


def source_row(rid: str, turns: int, status: str | None = "running") -> tuple[Any, ...]:
    """A ``workflow_processes`` row as the application's model keeps it."""
    values: dict[str, Any] = dict.fromkeys(SOURCE_COLUMNS)
    values.update(
        id=rid, workflow_name="chaos", message=f"task {rid}", max_turns=turns, status=status,
        created_at=datetime(2026, 12, 1, 8, 0), updated_at=datetime(2026, 12, 1, 8, 0),
    )  # fmt: skip
    return tuple(values[c] for c in SOURCE_COLUMNS)


class FakeSource:
    """The source as one writer sees it: committed rows, and what each transaction's
    COMMIT does, in order: "answered", "landed, no answer" (committed, the connection
    lost before the answer), "lost before COMMIT" (the connection lost while the
    transaction ran: nothing committed)."""

    def __init__(self, app: Application, script: list[str]) -> None:
        self.app, self.script = app, script
        self.rows: dict[str, tuple[Any, ...]] = {}
        self.turns = itertools.count(1)  # every write sets max_turns to the next number

    def connect(self, *args: object, **kwargs: object) -> FakeConnection:
        return FakeConnection(self)

    def next(self) -> str:
        outcome = self.script.pop(0)
        if not self.script:
            self.app.stop.set()
        return outcome


class FakeConnection:
    def __init__(self, source: FakeSource) -> None:
        self.source, self.closed = source, False
        self.pending: dict[str, tuple[Any, ...]] = {}

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> FakeConnection:
        if self.source.script[0] == "lost before COMMIT":
            self.source.next()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        self.pending[params[0]] = source_row(params[0], next(self.source.turns))
        return self

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.pending = {}
        yield
        outcome = self.source.next()
        self.source.rows.update(self.pending)
        if outcome == "landed, no answer":
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    def close(self) -> None:
        self.closed = True


def write(monkeypatch: pytest.MonkeyPatch, script: list[str]) -> tuple[Application, FakeSource]:
    """One writer of the application, on one id, through ``script`` (FakeSource)."""
    app = Application("postgresql://unused.invalid/x", seed=1, threads=1)
    source = FakeSource(app, script)
    monkeypatch.setattr(psycopg, "connect", source.connect)
    monkeypatch.setattr(Application, "_op", lambda self, rng, t, mine: (RID, "write", (RID,)))
    monkeypatch.setattr(
        Application,
        "_after",
        staticmethod(lambda conn, rid: conn.pending.get(rid, conn.source.rows.get(rid))),
    )
    app._writer(0)
    return app, source


RID = "cx-0-1"


def mapped_rows(rows: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """The rows as the target holds them."""
    return {
        rid: map_to_tuple(dict(zip(SOURCE_COLUMNS, row, strict=True)))[0]
        for rid, row in rows.items()
    }


def test_an_uncertain_id_is_exact_again_at_its_next_acknowledged_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A COMMIT without an answer makes its id uncertain; the id's next acknowledged write
    makes it exact again, so a write of it lost afterwards is caught."""
    app, source = write(monkeypatch, ["landed, no answer", "answered"])
    assert RID not in app.uncertain and app.model[RID] == source.rows[RID]
    assert app.once_uncertain == {RID} and app.commits == 1
    rows = mapped_rows(source.rows)
    assert chaos.acknowledged_lost(app, rows, rows) == []
    lost = chaos.acknowledged_lost(app, {}, rows)  # the target lost the acknowledged write
    assert lost == [
        f"{RID}: missing from the target, but the acknowledged write left a row"
        " (the source holds the write)"
    ]
    older = mapped_rows({RID: source_row(RID, turns=1)})  # the unanswered write's row
    assert chaos.acknowledged_lost(app, older, rows) == [
        f"{RID}: the target's max_turns 1 where the write left 2 (the source holds the write)"
    ]


def test_an_id_still_uncertain_at_the_end_may_hold_either_outcome_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _ = write(monkeypatch, ["answered", "landed, no answer"])
    assert app.uncertain == {RID: [source_row(RID, 1), source_row(RID, 2)]}
    before, after = (mapped_rows({RID: source_row(RID, n)}) for n in (1, 2))
    assert chaos.acknowledged_lost(app, before, after) == []  # the COMMIT did not land
    assert chaos.acknowledged_lost(app, after, after) == []  # it did
    for target in ({}, mapped_rows({RID: source_row(RID, 7)})):
        (lost,) = chaos.acknowledged_lost(app, target, after)
        assert lost.startswith(f"{RID}: a COMMIT without an answer, and the target's row is")
        assert "none of the 2 outcomes it allows" in lost


def test_a_transaction_lost_before_its_commit_leaves_the_model_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, source = write(monkeypatch, ["answered", "lost before COMMIT", "answered"])
    assert not app.uncertain and not app.once_uncertain
    assert app.model[RID] == source.rows[RID] and app.commits == 2


class FakeWatcher:
    table = "workflow_runs_versions"

    def __init__(self, steps: list[str] | None = None, watching: bool = True) -> None:
        self.steps, self.attached = steps or [], watching

    def steps_back(self, since: float) -> list[str]:
        return list(self.steps)

    def watching(self) -> bool:
        return self.attached


def checking(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    source: dict[str, tuple[Any, ...]],
    target: dict[str, tuple[Any, ...]],
    watcher: FakeWatcher | None = None,
) -> Campaign:
    """A campaign at its check, reading the given source and target rows; verify exits
    0 and the members logged nothing."""
    monkeypatch.setattr(chaos, "mapped_source", lambda dsn: source)
    monkeypatch.setattr(chaos, "target_rows", lambda dsn: target)
    campaign = Campaign.__new__(Campaign)
    campaign.seed, campaign.source, campaign.target = 1, "source", "target"
    campaign.faults, campaign.lag, campaign.started_wall = [], [], 0.0
    campaign.main = campaign.second = SimpleNamespace(log=tmp_path / "member.log")  # type: ignore[assignment]
    campaign.watcher = watcher or FakeWatcher()  # type: ignore[assignment]
    campaign.cli = lambda *argv, **kw: subprocess.CompletedProcess(argv, 0, "", "")  # type: ignore[method-assign]
    return campaign


def test_acknowledged_writes_are_compared_with_the_target_not_the_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The source holds every acknowledged write; the target's row of one differs, and
    another id an acknowledged write deleted is still in the target: both reported, with
    what differs."""
    app = Application("postgresql://unused.invalid/x", seed=1)
    app.acknowledged({"cx-0-1": source_row("cx-0-1", 5, "failed"), "cx-0-2": None})
    source = mapped_rows({"cx-0-1": source_row("cx-0-1", 5, "failed")})
    target = mapped_rows(
        {"cx-0-1": source_row("cx-0-1", 5, "running"), "cx-0-2": source_row("cx-0-2", 3)}
    )
    result = checking(monkeypatch, tmp_path, source, target).check(app, 1.0, 2.0)
    assert not result["passed"] and not result["checks"]["acknowledged writes in place"]
    assert result["lost_writes"] == [
        "cx-0-1: the target's status 'running' where the write left 'failed'"
        " (the source holds the write)",
        "cx-0-2: in the target, but the acknowledged write left no row"
        " (the source holds the write)",
    ]
    result = checking(monkeypatch, tmp_path, source, source).check(app, 1.0, 2.0)
    assert result["passed"] and result["lost_writes"] == []


def test_the_checker_says_no_when_a_version_went_back_or_went_unwatched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = Application("postgresql://unused.invalid/x", seed=1)
    step = "cx-0-1: (1, 500) -> (0, 1), 3.0 s into the run, by 'x': UPDATE ..."
    for watcher, said in (
        (FakeWatcher([step]), step),
        (FakeWatcher(watching=False), "the triggers are no longer on workflow_runs_versions"),
    ):
        result = checking(monkeypatch, tmp_path, {}, {}, watcher).check(app, 1.0, 2.0)
        assert not result["checks"]["versions never went back"]
        (reported,) = result["versions_backwards"]
        assert reported.startswith(said)
    result = checking(monkeypatch, tmp_path, {}, {}, FakeWatcher()).check(app, 1.0, 2.0)
    assert result["passed"] and result["versions_backwards"] == []


# ---------------------------------------------------------------- the version watcher


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A bare PostgreSQL cluster of the local stack's kind (no broker, no Connect): the
    owner's DSN of its ``postgres`` database."""
    root = Path(tempfile.mkdtemp(prefix="replicator-chaos-watch-"))
    pg = LocalPostgres(root, free_port(), root / "postgresql.log", log=lambda line: None)
    try:
        pg.start()
        yield f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def target(postgres: str) -> str:
    """A fresh target database with the product's tables, as its owner."""
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(postgres, dbname=name)
    apply_target_schema(dsn)
    return dsn


def test_the_watcher_records_every_step_back_however_brief_and_nothing_else(
    target: str,
) -> None:
    """The product's own version statements (the sink's claim, a re-snapshot's sweep, a
    source TRUNCATE) raise versions or leave them: nothing recorded.  An UPDATE that lowers
    a version and one that raises it again right after, far inside the 2 s the versions
    used to be sampled at, is recorded with who did it; so is a deleted entry.  A table
    renamed away from under the triggers (as a swap does) is said to be unwatched."""
    watcher = chaos.VersionWatcher(target)
    watcher.install()
    watcher.install()  # again: a campaign on a stack that ran one already
    assert watcher.watching() and watcher.steps_back(0.0) == []
    sink = SinkStatements("workflow_runs", "workflow_runs_versions")
    with psycopg.connect(target) as conn:
        conn.execute(
            "INSERT INTO workflow_runs_versions (run_id, generation, source_lsn) VALUES"
            " ('a', 0, 100), ('b', 0, 200), ('c', 0, 300)"
        )
        conn.execute(sink.create_stage)
        conn.execute(  # newer, stale, the same change again
            "INSERT INTO pg_temp.replicator_sink_stage (run_id, gen, lsn, del) VALUES"
            " ('a', 0, 150, false), ('b', 0, 50, false), ('c', 0, 300, true)"
        )
        conn.execute(sink.claim_versions)
        conn.commit()
        conn.execute(versions.sweep("workflow_runs_versions", "workflow_runs"),
                     {"number": 1, "apply_deletes": True})  # fmt: skip
        conn.commit()
        for statement in sink.truncate:
            conn.execute(statement, {"g": 1, "l": 250})
        conn.commit()
        got = conn.execute(
            "SELECT run_id, generation, source_lsn FROM workflow_runs_versions ORDER BY 1"
        ).fetchall()
    assert got == [("a", 1, 250), ("b", 1, 250), ("c", 1, 250)]
    assert watcher.steps_back(0.0) == []

    with psycopg.connect(target, autocommit=True, application_name="rogue") as conn:
        conn.execute(
            "UPDATE workflow_runs_versions SET generation = 0, source_lsn = 7 WHERE run_id = 'a'"
        )
        conn.execute(
            "UPDATE workflow_runs_versions SET generation = 1, source_lsn = 250 WHERE run_id = 'a'"
        )
        conn.execute("UPDATE workflow_runs_versions SET deleted = true WHERE run_id = 'b'")
        conn.execute("DELETE FROM workflow_runs_versions WHERE run_id = 'c'")
    first, second = watcher.steps_back(0.0)
    assert first.startswith("a: (1, 250) -> (0, 7), ") and "by 'rogue': UPDATE" in first
    assert second.startswith("c: its version (1, 250) deleted, ") and "DELETE FROM" in second

    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("ALTER TABLE workflow_runs_versions RENAME TO workflow_runs_versions_old")
        conn.execute("CREATE TABLE workflow_runs_versions (LIKE workflow_runs_versions_old)")
    assert not watcher.watching()
