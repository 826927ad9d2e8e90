"""``replicator verify``: is the target table the mapped source table, and if not, where not.

The comparison, cheapest first:

1. Count the source rows and plan chunks of about ``chunk_rows`` ids (``COLLATE "C"``
   quantiles of the source ids, see verify_sql.py).
2. Checksum every chunk inside each database -- source and target may be separate
   databases -- both scans at once, each in one REPEATABLE READ snapshot, in slices of
   blocks that drive the progress bar.
3. In the chunks whose count or checksum differ, the hash of every row on both sides
   (computed in each database, keys and hashes only cross the network) narrows the
   difference down to keys; then the row-level diff of those keys: the source rows mapped
   with :func:`~replicator.mapping.rows.map_to_tuple` against the target rows (JSON columns as
   their exact text).  Only this diff reports anything: a hash that disagrees on equal
   rows costs a row read, never a false report.

Live tables: rows change while we compare, and the replicator applies them a moment
later, so a difference seen once is only a *suspect*.  Suspects are re-checked after the
replicator has caught up past the moment of the comparison:

* wait ``settle_s`` after the comparison (Debezium publishes a committed change within
  about a second here), then take the exact end of every partition of the change topic
  (:func:`~replicator.stream.source.ends.probe_ends`: not the broker's high watermark, which the
  local broker reports short), and wait until the positions the replicator stored for
  this target table reach those ends (a partition without traffic needs nothing);
  no catch-up within ``catch_up_timeout_s``: exit 2, "could not verify", with where the
  replicator is;
* re-read only the suspect keys on both sides.  A key is drift only if it still differs
  AND nothing about it moved since the previous read: the same source row, the same
  target row, the same order-guard version (the replicator applied nothing to it; a
  change undone meanwhile -- a row deleted and inserted again, a value set back -- still
  moves the version).  The replicator has then seen every change of that row before the
  probe and still disagrees.  A key that moved is re-checked again (new ends), up to
  ``rounds`` times; one still moving at every round is reported as "still changing",
  not as drift.

``catch_up_timeout_s=0`` compares a static copy: every difference counts at once.

Repair (``--repair``) re-syncs only the drifted keys, through the sink and its ordering
rule: each is read from the source again and written, or deleted when the source does
not have it (extra rows, or rows deleted since), at a version taken before the read
(:mod:`replicator.verify.from_source`), so a change the stream applies meanwhile is
never undone and one it applies later still wins.  Then it waits until those keys agree
and verifies everything again; the exit code is the final result.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.db.connect import connect, mapped_errors
from replicator.errors import ConfigurationError, Refused, TransientError
from replicator.mapping.columns import SOURCE_TABLE
from replicator.observe.progress import Progress
from replicator.settings import Settings
from replicator.stream.source.ends import NotCaughtUp, probe_ends, wait_for_positions
from replicator.verify import from_source
from replicator.verify.after_cutover import verify_after_cutover
from replicator.verify.report import KeyDiff, RepairSummary, Report, diff_rows
from replicator.verify.tables import Tables, merge_chunks, prefetched

log = logging.getLogger("replicator.verify")

#: catch_up(timeout_s): return once the target has applied everything published so far,
#: raise NotCaughtUp after timeout_s.
CatchUp = Callable[[float], None]


@dataclass(frozen=True)
class Options:
    chunk_rows: int = 10_000
    slice_blocks: int = 8_192  # 64 MiB of table per checksum query
    settle_s: float = 2.0
    catch_up_timeout_s: float = 60.0
    rounds: int = 3
    repair_timeout_s: float = 300.0


# --------------------------------------------------------------------------- the passes


def first_pass(
    tables: Tables, options: Options, report: Report, meter: Progress
) -> tuple[dict[str, KeyDiff], dict[str, tuple[Any, ...]]]:
    """Counts, checksums, row-level diff of the differing chunks: the suspects, with what
    was seen of each (:meth:`Observed.of`)."""
    rows = tables.count(tables.source)
    bounds = tables.plan(rows, options.chunk_rows)
    report.chunks = len(bounds) + 1
    total_blocks = sum(tables.blocks(side)[0] or 1 for side in (tables.source, tables.target))
    meter.start("checksums", total_blocks, "blocks")
    with ThreadPoolExecutor(2, thread_name_prefix="verify") as pool:
        futures = [
            pool.submit(tables.checksums, side, bounds, options.slice_blocks, meter)
            for side in (tables.source, tables.target)
        ]
        source_sums, target_sums = (f.result() for f in futures)
    meter.finish()
    report.source_rows = sum(n for n, _ in source_sums.values())
    report.target_rows = sum(n for n, _ in target_sums.values())
    differing = sorted(
        c
        for c in source_sums.keys() | target_sums.keys()
        if source_sums.get(c) != target_sums.get(c)
    )
    report.chunks_differing = len(differing)
    if not differing:
        return {}, {}
    meter.start("row hashes", len(differing), "chunks")
    keys: set[str] = set()
    for _, source_hashes, target_hashes in merge_chunks(
        prefetched(tables.chunk_hashes(tables.source, bounds, differing)),
        tables.chunk_hashes(tables.target, bounds, differing),
    ):
        for key in source_hashes.keys() | target_hashes.keys():
            if source_hashes.get(key) != target_hashes.get(key):
                keys.add(key)
        meter.advance()
    meter.finish()
    meter.start("row diff", len(keys), "rows")
    seen = tables.by_key(keys, meter.advance)
    meter.finish()
    suspects = diff_rows({k: seen.images.get(k) for k in keys}, seen.targets)
    return suspects, {k: seen.of(k) for k in suspects}


def recheck(
    tables: Tables,
    suspects: dict[str, KeyDiff],
    seen: dict[str, tuple[Any, ...]],
    catch_up: CatchUp,
    options: Options,
    report: Report,
    compared_at: float,
) -> None:
    """Confirm or clear the suspects once the replicator has caught up (module docstring).

    ``seen``: what the last read saw of each key (:meth:`Observed.of`): the mapped source
    row, the target row and its order-guard version.  A key is drift when it still
    differs and none of the three moved across a complete catch-up: the source row did
    not change, and the replicator applied nothing to it (a change undone meanwhile --
    deleted and inserted again, or set back -- still moves the version)."""
    pending = suspects
    for round_no in range(1, options.rounds + 1):
        time.sleep(max(0.0, compared_at + options.settle_s - time.monotonic()))
        try:
            catch_up(options.catch_up_timeout_s)
        except NotCaughtUp as exc:
            report.error = str(exc)
            report.drift.update((k, d) for k, d in pending.items() if d.kind != "unmappable")
            return
        compared_at = time.monotonic()
        now = tables.by_key(pending)
        report.rechecks = round_no
        changing: dict[str, KeyDiff] = {}
        for run_id, found in diff_rows(
            {k: now.images.get(k) for k in pending},
            {k: v for k, v in now.targets.items() if k in pending},
        ).items():
            if now.of(run_id) != seen.get(run_id):
                changing[run_id] = found
            elif found.kind == "unmappable":
                report.unmappable[run_id] = found
            else:
                report.drift[run_id] = found
        if not changing:
            return
        pending, seen = changing, {k: now.of(k) for k in changing}
    report.busy = sorted(pending)


def compare(
    tables: Tables,
    options: Options,
    catch_up: CatchUp | None,
    meter: Progress,
    report: Report,
) -> Report:
    started = time.monotonic()
    try:
        suspects, seen = first_pass(tables, options, report, meter)
        report.suspects = len(suspects)
        if suspects and catch_up is not None and options.catch_up_timeout_s > 0:
            recheck(tables, suspects, seen, catch_up, options, report, time.monotonic())
        else:
            for run_id, found in suspects.items():
                target = report.unmappable if found.kind == "unmappable" else report.drift
                target[run_id] = found
    except TransientError as exc:
        meter.finish()
        report.error = str(exc)
    except psycopg.errors.UndefinedTable as exc:
        raise ConfigurationError(f"cannot verify: {str(exc).strip()}") from exc
    except psycopg.Error as exc:
        meter.finish()
        report.error = f"{type(exc).__name__}: {str(exc).strip()}"
    report.seconds += time.monotonic() - started
    return report


# --------------------------------------------------------------------------- repair


def repair(
    tables: Tables, settings: Settings, report: Report, options: Options, catch_up: CatchUp
) -> RepairSummary:
    """Re-sync the drifted keys from the source, at a version that orders them
    (from_source.py), then wait until they agree (module docstring)."""
    started = time.monotonic()
    summary = RepairSummary()
    stale = sorted(k for k, d in report.drift.items() if d.kind in ("missing", "different"))
    extra = sorted(k for k, d in report.drift.items() if d.kind == "extra")
    deleting = settings.on_delete == "delete"
    keys = stale + (extra if deleting else [])
    written = from_source.write(tables, settings, keys, delete_absent=deleting)
    summary.from_source = len(written.rows)
    summary.deleted = len(written.deleted)
    summary.kept_extra = len(extra) - len(set(extra) & set(written.deleted)) if deleting else 0
    pending = set(written.rows) | set(written.deleted)
    if pending:
        pending = _await_resync(tables, pending, options, catch_up)
        summary.unrepaired = sorted(pending)
    summary.converged = not pending
    summary.seconds = time.monotonic() - started
    return summary


#: The shortest wait for a repaired row to agree (``--catch-up-timeout 0`` included).
MIN_REPAIR_PATIENCE_S = 5.0


def _await_resync(
    tables: Tables, pending: set[str], options: Options, catch_up: CatchUp
) -> set[str]:
    """Wait until the repaired rows agree: a row whose write the rule refused (the target
    holds a newer change) agrees once ``replicator run`` has applied the changes after it.
    When none agrees for ``catch_up_timeout_s``: if the replicator has applied everything
    the topic holds, the rows left cannot be repaired (returned, and reported as such);
    else it gives up with a transient error (verify: exit 2)."""
    patience = max(options.catch_up_timeout_s, MIN_REPAIR_PATIENCE_S)
    log.warning(
        "waiting for %d repaired rows of %s to agree with the source (`replicator run`"
        " applies the changes made since; giving up after %.0f s without progress, at most"
        " %.0f s)",
        len(pending),
        tables.target.table,
        patience,
        options.repair_timeout_s,
    )
    started = progressed = time.monotonic()
    while pending and time.monotonic() - started < options.repair_timeout_s:
        if time.monotonic() - progressed > patience:
            with contextlib.suppress(NotCaughtUp):
                catch_up(MIN_REPAIR_PATIENCE_S)
                return pending  # applied or dead-lettered: the repair did what it could
            raise NotCaughtUp(
                f"repair: {len(pending)} repaired rows of {tables.target.table} did not agree"
                f" within {patience:.0f} s; is `replicator run` running for it? Start it and run"
                " `replicator verify --repair` again",
                {},
            )
        time.sleep(1.0)
        now = tables.by_key(pending)
        diffs = diff_rows({k: now.images.get(k) for k in pending}, now.targets)
        still = {k for k, d in diffs.items() if k in pending and d.kind != "unmappable"}
        if len(still) < len(pending):
            progressed = time.monotonic()
        pending = still
    return pending


# --------------------------------------------------------------------------- entry point


def wait_for_replicator(settings: Settings, target_table: str) -> CatchUp:
    """Catch-up of a running ``replicator run``: its stored positions reach the topic's ends."""

    def catch_up(timeout: float) -> None:
        ends = probe_ends(settings.kafka_bootstrap, settings.topic, settings.kafka_config)
        wait_for_positions(
            settings.target_dsn.get_secret_value(),
            settings.offsets_table,
            target_table,
            settings.topic,
            ends,
            timeout,
        )

    return catch_up


def _after_cutover(settings: Settings, table: str, repair_drift: bool) -> Report | None:
    """The report when ``table`` was cut over (after_cutover.py); None while it streams."""
    with (
        connect(settings.target_dsn.get_secret_value(), "the target database") as conn,
        mapped_errors("compare the archive with the target"),
    ):
        report = verify_after_cutover(conn, table)
    if report is not None and repair_drift:
        raise Refused(
            "--repair refused after the cutover: nothing streams into"
            f" {table} any more, the application writes it; {report.cut_over}"
        )
    return report


def verify(
    settings: Settings,
    *,
    target_table: str | None = None,
    options: Options | None = None,
    catch_up: CatchUp | None = None,
    repair_drift: bool = False,
    meter: Progress | None = None,
) -> Report:
    """Compare ``workflow_processes`` (mapped) with the target table; repair on request."""
    if settings.source_dsn is None:
        raise ConfigurationError("verify needs the source: set REPLICATOR_SOURCE_DSN")
    options = options or Options()
    meter = meter or Progress(enabled=False)
    table = target_table or settings.target_table
    tables = Tables(
        settings.source_dsn.get_secret_value(), settings.target_dsn.get_secret_value(), table
    )
    catch_up = catch_up or wait_for_replicator(settings, table)
    after = _after_cutover(settings, table, repair_drift)
    if after is not None:
        return after
    report = _compared(tables, options, catch_up, meter, table)
    if not repair_drift or report.status != "drift" or not report.drift:
        return report  # unmappable rows alone: nothing a repair could write (report.py)
    summary = repair(tables, settings, report, options, catch_up)
    final = _compared(tables, options, catch_up, meter, table)
    final.repair = summary
    final.seconds += report.seconds
    return final


def _compared(
    tables: Tables, options: Options, catch_up: CatchUp, meter: Progress, table: str
) -> Report:
    """The comparison, with the drifted rows too large for the stream named
    (from_source.py)."""
    report = compare(tables, options, catch_up, meter, Report(SOURCE_TABLE, table))
    stale = [k for k, d in report.drift.items() if d.kind in ("missing", "different")]
    report.too_large = from_source.oversized(tables, stale)
    return report
