"""Whether the cutover (or the rollback) can run now: each check with its reason.

``cutover --dry-run`` prints them and does nothing else; the switch runs them first and
refuses to start when one fails.  Read-only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.cutover import catalog, compare, objects
from replicator.db.connect import connect
from replicator.errors import ReplicatorError
from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TABLE
from replicator.settings import Settings
from replicator.stream.source.ends import probe_ends, wait_for_positions

ARCHIVE = f"{SOURCE_TABLE}_archive"
#: The longest the checks are silent: a check that runs longer (a scan of the legacy table,
#: verify, a probe of the broker) is named, with its time so far, this often.
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str


def same_database(source_dsn: str, target_dsn: str) -> tuple[bool, str]:
    """Source and target are one database (the view must read the target's table)."""
    probe = (
        "SELECT current_database(), pg_postmaster_start_time(),"
        " (SELECT oid FROM pg_database WHERE datname = current_database()),"
        " to_regclass(%s)::oid, to_regclass('workflow_runs')::oid"
    )
    with connect(source_dsn, "the source database") as s:
        a = s.execute(probe, [SOURCE_TABLE]).fetchone()
    with connect(target_dsn, "the target database") as t:
        b = t.execute(probe, [SOURCE_TABLE]).fetchone()
    if a == b and a is not None and a[3] is not None and a[4] is not None:
        return True, f"both tables are in database {a[0]}"
    return False, (
        "workflow_processes and workflow_runs are in different databases: the compatibility"
        " view must read workflow_runs where the application connects"
    )


class _Ticker:
    """Says which check runs, and for how long, after each :data:`PROGRESS_EVERY_S` of
    silence, from a thread of its own: a check that takes long says nothing by itself."""

    def __init__(self, say: Callable[[str], None] | None) -> None:
        self._out, self._lock, self._stop = say, threading.Lock(), threading.Event()
        self._step, self._began = "the checks", time.monotonic()
        self._last = self._began
        self._thread = threading.Thread(target=self._run, name="readiness-progress", daemon=True)

    def __enter__(self) -> _Ticker:
        if self._out is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def say(self, line: str) -> None:
        """Say ``line`` now (it counts as progress)."""
        with self._lock:
            self._last = time.monotonic()
            if self._out is not None:
                self._out(line)

    def step(self, name: str) -> None:
        with self._lock:
            self._step, self._began = name, time.monotonic()

    def _run(self) -> None:
        assert self._out is not None
        while True:
            with self._lock:
                now = time.monotonic()
                due = self._last + PROGRESS_EVERY_S
                if now >= due:
                    self._out(f"{self._step}: still checking ({now - self._began:.0f} s)")
                    self._last, due = now, now + PROGRESS_EVERY_S
            if self._stop.wait(due - now):
                return


def cutover_checks(
    settings: Settings, *, verify_first: bool = True, say: Callable[[str], None] | None = None
) -> list[Check]:
    """Everything the switch needs, checked now (as the tables' owner); ``say`` hears how
    the waits go (the catch-up may take 30 s), and which check runs every
    :data:`PROGRESS_EVERY_S` at the least."""
    admin = settings.as_admin()
    if admin.source_dsn is None:
        return [Check("source", False, "set REPLICATOR_SOURCE_DSN")]
    with _Ticker(say) as ticker:
        return _cutover_checks(settings, verify_first, ticker)


def _cutover_checks(settings: Settings, verify_first: bool, ticker: _Ticker) -> list[Check]:
    admin = settings.as_admin()
    assert admin.source_dsn is not None
    checks: list[Check] = []
    ticker.step("one database")
    try:
        ok, why = same_database(
            admin.source_dsn.get_secret_value(), admin.target_dsn.get_secret_value()
        )
    except ReplicatorError as exc:
        return [Check("databases reachable", False, str(exc))]
    checks.append(Check("one database", ok, why))
    if not ok:
        return checks
    ticker.step("the legacy table (catalog, every row maps)")
    with connect(admin.target_dsn.get_secret_value(), "the database") as conn:
        checks += _catalog_checks(conn, settings)
    ticker.step("replicator caught up")
    checks.append(_caught_up(settings, ticker.say))
    ticker.step("connector")
    checks.append(_connector(settings))
    if verify_first and all(c.ok for c in checks):
        ticker.step("verify in sync")
        checks.append(_in_sync(settings))
    return checks


def _check(name: str, ok: bool, good: str, bad: str) -> Check:
    return Check(name, ok, good if ok else bad)


def _catalog_checks(conn: psycopg.Connection[Any], settings: Settings) -> list[Check]:
    record = objects.latest(conn, SOURCE_TABLE)
    if record is not None and record.state in ("cut_over", "finalized"):
        when = f"{record.cut_at:%Y-%m-%d %H:%M:%S%z}"
        return [Check("not cut over yet", False, f"cut over at {when} ({record.state})")]
    kind = catalog.relkind(conn, SOURCE_TABLE)
    out = [_check("legacy table", kind == "r", "a table", f"not a table (relkind {kind})")]
    if kind != "r":
        return out
    taken = catalog.relkind(conn, ARCHIVE) is not None
    out.append(_check("archive name free", not taken, f"{ARCHIVE} is free", f"{ARCHIVE} exists"))
    names = {c.name for c in catalog.columns(conn, SOURCE_TABLE)}
    same = names == set(SOURCE_COLUMNS)
    diff = f"not in the mapping: {sorted(names - set(SOURCE_COLUMNS))};"
    diff += f" missing: {sorted(set(SOURCE_COLUMNS) - names)}"
    out.append(_check("legacy columns", same, "the 16 columns of the mapping", diff))
    owner = catalog.owned(conn, SOURCE_TABLE) and catalog.owned(conn, settings.target_table)
    out.append(
        _check(
            "owner",
            owner,
            "the admin role owns both tables",
            "run as the owner of workflow_processes and workflow_runs"
            " (REPLICATOR_ADMIN_SOURCE_DSN / REPLICATOR_ADMIN_TARGET_DSN)",
        )
    )
    slots = catalog.can_replicate(conn)
    out.append(
        _check(
            "replication privilege",
            slots,
            "may drop the slot and create it again",
            "the admin role needs REPLICATION to drop the slot (and create it on rollback)",
        )
    )
    blockers = catalog.dependents(conn, SOURCE_TABLE, settings.slot_name)
    none = "no views, rules, foreign keys, triggers, policies or other publications"
    out.append(_check("nothing depends on it", not blockers, none, "; ".join(blockers)))
    out.append(_pending_log(conn))
    if same:
        bad = unmappable(conn)
        why = f"{len(bad)} rows the mapping refuses, fix them first: {bad[:5]}"
        out.append(_check("every row maps", not bad, "no row the mapping refuses", why))
    return out


def _pending_log(conn: psycopg.Connection[Any]) -> Check:
    """The cutover's own triggers (objects.py): none, a cutover running now (not ready), or
    left by one that was interrupted (ready: the cutover removes them first)."""
    pid = objects.running(conn)
    if pid is not None:
        return Check("no cutover running", False, f"a cutover is running (process {pid})")
    left = objects.pending_left(conn, catalog.schema_of(conn, SOURCE_TABLE))
    if not left:
        return Check("no cutover running", True, "no pending-log triggers")
    return Check(
        "no cutover running",
        True,
        f"an interrupted cutover left {', '.join(left)}: the cutover removes them first",
    )


def unmappable(conn: psycopg.Connection[Any]) -> list[str]:
    """Ids of source rows the mapping refuses (they would not exist after the cutover)."""
    schema = catalog.schema_of(conn, SOURCE_TABLE)
    return [r[0] for r in conn.execute(compare.unmappable(schema))]


def _caught_up(settings: Settings, say: Callable[[str], None] | None = None) -> Check:
    """The stored positions reach the ends the topic has now (within 30 s: under a writing
    application the ends move on, and the replicator follows)."""
    try:
        ends = probe_ends(settings.kafka_bootstrap, settings.topic, settings.kafka_config, 10)
        if not ends:
            return Check("replicator caught up", False, f"topic {settings.topic} not found")
        wait_for_positions(
            settings.target_dsn.get_secret_value(),
            settings.offsets_table,
            settings.target_table,
            settings.topic,
            ends,
            30.0,
            progress=say,
        )
    except ReplicatorError as exc:
        return Check("replicator caught up", False, str(exc))
    return Check("replicator caught up", True, "every partition applied to its end")


def _connector(settings: Settings) -> Check:

    if not settings.connect_url:
        return Check("connector", False, "set REPLICATOR_CONNECT_URL: the cutover deletes it")
    name = load_connector_file(settings.connector_file)["name"]
    try:
        state = ConnectClient(settings.connect_url).status(name)["connector"]["state"]
    except ReplicatorError as exc:
        return Check("connector", False, str(exc))
    return Check("connector", True, f"{name} is {state}")


def _in_sync(settings: Settings) -> Check:
    from replicator.verify.runner import Options, verify

    try:
        report = verify(settings, options=Options(catch_up_timeout_s=30))
    except ReplicatorError as exc:
        return Check("verify in sync", False, str(exc))
    if report.status == "in_sync":
        return Check("verify in sync", True, f"{report.source_rows:,} rows in sync")
    why = report.error or f"{len(report.drift)} rows differ (replicator verify --repair)"
    return Check("verify in sync", False, why)


def rollback_checks(settings: Settings) -> list[Check]:
    """What ``rollback`` needs: a cutover not finalized, the view and the archive in place,
    the privilege to create the slot, and Kafka Connect to register the connector."""
    admin = settings.as_admin()
    out: list[Check] = []
    with connect(admin.target_dsn.get_secret_value(), "the database") as conn:
        record = objects.latest(conn, SOURCE_TABLE)
        state = record.state if record else "never cut over"
        why = state.replace("_", " ")
        if state == "finalized":
            why += ": the finalize closed the rollback window, there is no way back"
        out.append(Check("cut over", state == "cut_over", why))
        if state != "cut_over":
            return out
        view = catalog.relkind(conn, SOURCE_TABLE) == "v"
        out.append(
            Check(
                "compatibility view",
                view,
                f"{SOURCE_TABLE} is " + ("a view" if view else "not a view"),
            )
        )
        archive = catalog.relkind(conn, record.archive_table if record else ARCHIVE) == "r"
        out.append(Check("archive", archive, "present" if archive else "missing"))
        slots = catalog.can_replicate(conn)
        out.append(
            Check(
                "replication privilege",
                slots,
                "may create the slot"
                if slots
                else "the admin role needs REPLICATION to create the slot",
            )
        )
    out.append(
        Check(
            "Kafka Connect",
            bool(settings.connect_url),
            settings.connect_url or "set REPLICATOR_CONNECT_URL",
        )
    )
    return out
