"""``replicator replay``: rebuild a table from the change topic.

It reads every partition from the earliest offset and applies the events through exactly
the path of ``replicator run`` -- the same :class:`~replicator.stream.replicator.Replicator`
(decode, :func:`~replicator.stream.replicator.to_row_change`, dead-letter topic, the sink's order
guard, positions stored with the rows) -- with one difference, its consumer:

* no consumer group: partitions are ``assign()``-ed, nothing joins a group and nothing is
  committed to Kafka, so the live ``replicator run`` group is untouched;
* it stops when caught up: the exact end of every partition is probed before starting
  (:mod:`replicator.stream.source.ends`; the local broker's high watermark cannot be trusted) and
  the replay stops once its stored positions reach those ends.  Events published later
  are left to whoever streams into the table next.

Targets:

* a shadow table (default ``<target>_replay``), emptied first (rows, versions and its
  positions) and created with the target's DDL and nine indexes when missing; its
  positions are stored under its own name in the positions table, so that ``--swap`` can
  hand them over;
* the live table itself (``--into <target>``): idempotent, the order guard skips every
  event older than what the table holds.  Its progress is kept in a separate positions
  table (``replicator_replay_offsets``) so that the live replicator's positions are never
  touched.

``--swap`` verifies the shadow table against the source (re-checking differences after
the replay caught up again), then swaps it in (:mod:`replicator.replay.swap`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from replicator.cutover.guard import refuse_after_cutover
from replicator.db.connect import connect, mapped_errors
from replicator.db.names import plain_identifier
from replicator.db.schema import grant_to_service_role
from replicator.errors import ConfigurationError
from replicator.observe.progress import Progress
from replicator.replay.reader import ReplaySource
from replicator.settings import Settings
from replicator.stream.apply.checkpoint import Checkpoint, read_positions
from replicator.stream.apply.sink import PostgresSink
from replicator.stream.replicator import Replicator
from replicator.stream.source.ends import (
    NotCaughtUp,
    PartitionEnd,
    describe_lag,
    lagging,
    probe_ends,
)
from replicator.verify.report import Report
from replicator.verify.runner import Options, verify

log = logging.getLogger("replicator.replay")

REPLAY_OFFSETS = "replicator_replay_offsets"


@dataclass
class ReplayReport:
    table: str
    events: int = 0  # events read (re-reads after an outage included)
    applied: int = 0
    deleted: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    verify: Report | None = None
    swapped: bool = False
    old_table: str | None = None
    ends: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> list[str]:
        lines = [
            f"replayed {self.events:,} events into {self.table} in {self.seconds:.1f}s"
            f" ({self.rate:,.0f} events/s): {self.applied:,} upserted, {self.deleted:,} deleted,"
            f" {self.dead_lettered:,} dead-lettered"
        ]
        if self.swapped:
            kept = f"kept as {self.old_table}" if self.old_table else "dropped"
            lines.append(f"swapped in: the previous table is {kept}")
        return lines


class Replay:
    """Replays the topic into ``table`` up to given ends; can be resumed to later ends."""

    def __init__(self, settings: Settings, table: str, meter: Progress | None = None) -> None:
        self.live = settings.target_table
        self.table = table
        offsets = REPLAY_OFFSETS if table == self.live else settings.offsets_table
        self.settings = settings.model_copy(
            update={"target_table": table, "offsets_table": offsets, "metrics_port": None}
        )
        self.meter = meter or Progress(enabled=False)
        self.report = ReplayReport(table)

    def reset(self) -> None:
        """Start from the earliest offsets: create the table when missing; a shadow is
        emptied, the live table only forgets this replay's earlier positions."""
        s = self.settings
        with PostgresSink(
            s.target_dsn.get_secret_value(), table=self.table, offsets_table=s.offsets_table
        ) as sink:
            for line in sink.ensure_schema():
                log.info(line)
            if self.table != self.live:
                sink.empty()
                return
        with (
            connect(s.target_dsn.get_secret_value(), "the target database") as conn,
            mapped_errors("reset the replay's positions"),
        ):
            Checkpoint(s.offsets_table, self.table).forget(conn)

    def run_to(self, ends: Mapping[int, PartitionEnd], timeout: float | None = None) -> None:
        """Apply every event below ``ends``; return once the stored positions reach them."""
        s = self.settings
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        self.meter.start(f"replay {self.table}", sum(e.events for e in ends.values()), "events")
        stalled, previous = 0, None
        try:
            while True:
                stored = read_positions(
                    s.target_dsn.get_secret_value(), s.offsets_table, self.table, s.topic
                )
                lag = lagging(stored, ends)
                if not lag:
                    break
                stalled = stalled + 1 if stored == previous else 0
                if stalled >= 3 or (deadline is not None and time.monotonic() > deadline):
                    raise NotCaughtUp(f"replay of {self.table} is behind: {describe_lag(lag)}", lag)
                previous = stored
                self._run_once(ends)
        finally:
            self.meter.finish()
            self.report.seconds += time.monotonic() - started
            self.report.ends = {p: e.end for p, e in ends.items()}

    def _run_once(self, ends: Mapping[int, PartitionEnd]) -> None:
        readers: list[ReplaySource] = []

        def source(settings: Settings) -> ReplaySource:
            reader = ReplaySource.reading(settings, ends, replicator.stop_event.set, self.meter)
            readers.append(reader)
            return reader

        replicator = Replicator(self.settings, source=source)
        replicator.run()
        tally = replicator.metrics.tally
        self.report.events += sum(r.events for r in readers)
        self.report.applied += tally.applied
        self.report.deleted += tally.deleted
        self.report.dead_lettered += tally.dead_lettered

    def catch_up(self, timeout: float) -> None:
        """Replay what was published since (verify's catch-up for a table nobody streams into)."""
        s = self.settings
        self.run_to(probe_ends(s.kafka_bootstrap, s.topic, s.kafka_config), timeout)


def shadow_name(live: str) -> str:
    return f"{live}_replay"


def replay(
    settings: Settings,
    *,
    into: str | None = None,
    swap: bool = False,
    drop_old: bool = False,
    meter: Progress | None = None,
    verify_options: Options | None = None,
    now: datetime | None = None,
) -> ReplayReport:
    """Rebuild ``into`` (default ``<target>_replay``) from the topic; swap it in on request."""
    from replicator.replay.swap import old_name, plan_swap, swap_tables

    service = settings  # the role `run` and `verify` use
    settings = settings.as_admin()  # it creates, empties and renames tables
    live = settings.target_table
    table = plain_identifier(into or shadow_name(live))
    if swap and table == live:
        raise ConfigurationError("--swap replays into a shadow table: drop --into or name another")
    if drop_old and not swap:
        raise ConfigurationError("--drop-old only applies with --swap")
    old = old_name(live, now or datetime.now(UTC))
    if swap:
        plan_swap(live, table, old)  # names checked before any work
    _require_table(settings, live)
    if swap or table == live:
        refuse_after_cutover(settings, live, f"replay into {live}" if not swap else "--swap")
    ends = probe_ends(settings.kafka_bootstrap, settings.topic, settings.kafka_config)
    if not ends:
        raise ConfigurationError(
            f"the topic {settings.topic} does not exist on {settings.kafka_bootstrap}: nothing to"
            " replay (REPLICATOR_TOPIC names the connector's change topic)"
        )
    meter = meter or Progress(enabled=False)
    job = Replay(settings, table, meter)
    job.reset()
    _grant_service_role(settings, service, table)
    job.run_to(ends)
    if not swap:
        return job.report
    job.report.verify = verify(
        settings, target_table=table, options=verify_options, catch_up=job.catch_up, meter=meter
    )
    if job.report.verify.status != "in_sync":
        return job.report
    swap_tables(
        settings.target_dsn.get_secret_value(),
        live=live,
        shadow=table,
        old=old,
        offsets_table=settings.offsets_table,
        drop_old=drop_old,
    )
    job.report.swapped = True
    job.report.old_table = None if drop_old else old
    return job.report


def _grant_service_role(admin: Settings, service: Settings, table: str) -> None:
    """The service role may read and write the table the replay built, as it does the live
    one: `verify --target-table` and `run` after a swap work as that role."""
    options = psycopg.conninfo.conninfo_to_dict
    user = options(service.target_dsn.get_secret_value()).get("user")
    if user and user != options(admin.target_dsn.get_secret_value()).get("user"):
        dsn = admin.target_dsn.get_secret_value()
        for line in grant_to_service_role(dsn, str(user), table, admin.offsets_table):
            log.info(line)


def _require_table(settings: Settings, table: str) -> None:
    """The live table must exist: a replay rebuilds it or a shadow of it, never a typo."""
    with (
        connect(settings.target_dsn.get_secret_value(), "the target database") as conn,
        mapped_errors(f"look up {table!r}"),
    ):
        (exists,) = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [sql.Identifier(table).as_string(None)]
        ).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
    if not exists:
        raise ConfigurationError(
            f"the target database has no table {table!r}; create it with `replicator schema"
            f" apply --target-table {table}` or name the live table with --target-table"
        )
