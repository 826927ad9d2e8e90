"""The migration plan's success criteria judged from the measured figures (pure).

* **query response time improved by 30%**: the sum of the server-time medians of the
  paired questions on the new table is at most 70% of the sum on the legacy table.
  Server time (EXPLAIN ANALYZE) is the database's work, which the migration changes;
  the client's time (rows fetched and decoded) is reported beside it, apart.  A
  question only the new table can answer is reported, not counted;
* **storage efficiency increased by 20%**: bytes per row (heap, TOAST and indexes) of
  the new table at most 1/1.2 of the legacy table's;
* **zero data loss**: verify finds the tables in sync and the row counts are equal.
  After a cutover: verify finds the archive and the new table equal on every row the
  application has not written since; after the finalize nothing is left to compare and
  the criterion is not measured (it neither passes nor fails).

Each criterion has a floor: the best result reachable with the plan's columns, types
and mapping.  When even the floor misses the target, the criterion is "unreachable by
construction", with both figures.  Beside the criteria, the checks: both tables gave
the same answers (rows and their fingerprints) when they are in sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from replicator.assess.stats import faster
from replicator.assess.storage import TableStorage
from replicator.assess.timing import Answered

QUERY_TARGET = 0.30
STORAGE_TARGET = 0.20
QUERY = "query response time improved by 30%"
STORAGE = "storage efficiency increased by 20%"
LOSS = "zero data loss"
ANSWERS = "equal answers"
UNREACHABLE = "unreachable by construction"


@dataclass(frozen=True, slots=True)
class Floor:
    """The best reachable figure (``value``) against the one the target needs."""

    figure: str
    reachable: bool | None  # None: not measured
    value: float | None = None
    target: float | None = None


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    passed: bool | None  # None: not measured (it neither passes nor fails)
    figure: str
    floor: Floor | None = None


def _sums(answered: Sequence[Answered], kind: str) -> tuple[float, float, int]:
    pairs = [a for a in answered if a.legacy is not None and a.new is not None]
    legacy = sum(getattr(a.legacy, kind).median_ms for a in pairs)
    new = sum(getattr(a.new, kind).median_ms for a in pairs)
    return legacy, new, len(pairs)


def query_criterion(answered: Sequence[Answered], floor: Floor | None = None) -> Criterion:
    """30% less server time over the paired questions; the client's time said apart."""
    legacy, new, paired = _sums(answered, "server")
    if not paired or legacy <= 0:
        return Criterion(QUERY, False, "nothing to compare", floor)
    c_legacy, c_new, _ = _sums(answered, "client")
    return Criterion(
        QUERY,
        round(1 - new / legacy, 9) >= QUERY_TARGET,
        f"server {legacy:.2f} ms -> {new:.2f} ms over {paired} paired questions"
        f" ({faster(legacy, new)}); client {c_legacy:.2f} ms -> {c_new:.2f} ms"
        f" ({faster(c_legacy, c_new)}, not judged)",
        floor,
    )


def query_floor(answered: Sequence[Answered], best: Mapping[str, float | None]) -> Floor:
    """Each paired question at its best measured server median on the new shape (the
    live table, or the scratch copy with the plan's indexes or an advice's)."""
    pairs = [a for a in answered if a.legacy is not None and a.new is not None]
    if not pairs or not any(best.get(a.name) is not None for a in pairs):
        return Floor("not measured (no scratch copy)", None)
    legacy = sum(a.legacy.server.median_ms for a in pairs if a.legacy is not None)
    value = 0.0
    for a in pairs:
        assert a.new is not None
        found = best.get(a.name)
        value += a.new.server.median_ms if found is None else min(found, a.new.server.median_ms)
    needed = legacy * (1 - QUERY_TARGET)
    return _floor(value, needed, "ms summed (server)", "the best measured", value <= needed)


def storage_criterion(legacy: TableStorage, new: TableStorage, floor: Floor | None) -> Criterion:
    """20% fewer bytes per row (heap, TOAST and indexes together)."""
    old_bpr, new_bpr = legacy.bytes_per_row, new.bytes_per_row
    if not old_bpr or not new_bpr:
        return Criterion(STORAGE, False, "a table is empty", floor)
    gain = old_bpr / new_bpr - 1
    change = f"{abs(gain):.0%} {'more' if gain >= 0 else 'less'} efficient"
    return Criterion(
        STORAGE,
        round(gain, 9) >= STORAGE_TARGET,
        f"{old_bpr:,.1f} -> {new_bpr:,.1f} bytes per row ({change}; {len(legacy.indexes)}"
        f" against {len(new.indexes)} indexes, of which the plan's added content"
        f" {new.per_row(new.plan_added_bytes) or 0:.1f})",
        floor,
    )


def storage_floor(legacy: TableStorage, floor_bytes: int | None, rows: int) -> Floor:
    """The smallest the new table can be: the heap and TOAST alone, best column order, no
    index at all (``floor_bytes`` over ``rows``), against 1/1.2 of the legacy bytes/row."""
    if floor_bytes is None or not rows or not legacy.bytes_per_row:
        return Floor("not measured (no scratch copy)", None)
    value, needed = floor_bytes / rows, legacy.bytes_per_row / (1 + STORAGE_TARGET)
    return _floor(
        value,
        needed,
        "bytes per row",
        "the heap alone (best column order, no index)",
        value <= needed,
    )


def _floor(value: float, needed: float, unit: str, what: str, reachable: bool) -> Floor:
    figures = f"at most {needed:,.2f} {unit} needed, {what} {value:,.2f}"
    if reachable:
        return Floor(f"reachable: {figures}", True, round(value, 4), round(needed, 4))
    return Floor(f"{UNREACHABLE}: {figures}", False, round(value, 4), round(needed, 4))


def loss_floor(refused: int | None) -> Floor:
    """The legacy rows the mapping itself refuses: lost by construction."""
    if refused is None:
        return Floor("not measured", None)
    if refused == 0:
        return Floor("reachable: the mapping refuses no legacy row", True, 0, 0)
    return Floor(
        f"{UNREACHABLE}: the mapping refuses {refused:,} legacy rows (verify lists them)",
        False,
        refused,
        0,
    )


def loss_criterion(
    verify_status: str, source_rows: int, target_rows: int, floor: Floor | None = None
) -> Criterion:
    """Verify in sync and as many rows on both sides."""
    return Criterion(
        LOSS,
        verify_status == "in_sync" and source_rows == target_rows,
        f"verify {verify_status}, {source_rows:,} source rows, {target_rows:,} target rows",
        floor,
    )


def migrated_loss_criterion(
    verify_status: str, changed_since: int | None, floor: Floor | None = None
) -> Criterion:
    """After a cutover: the archive agrees with the new table on every row not written
    since (a rollback would lose nothing); not measured once finalized."""
    if verify_status == "finalized":
        return Criterion(
            LOSS,
            None,
            "not measured: the cutover is finalized, the change log ended (the switch"
            " compared every row when it cut over)",
        )
    return Criterion(
        LOSS,
        verify_status == "in_sync",
        f"verify {verify_status}: the archive against workflow_runs on every row not written"
        f" since the cutover ({changed_since or 0:,} written since)",
        floor,
    )


def answers_check(
    answered: Sequence[Answered], verify_status: str, changed_since: int | None = None
) -> Criterion:
    """When the tables are in sync, every paired question returns the same rows."""
    if verify_status != "in_sync" or changed_since:
        why = f"verify {verify_status}" if verify_status != "in_sync" else "rows written since"
        return Criterion(ANSWERS, None, f"not checked: the tables are not in sync ({why})")
    pairs = [a for a in answered if a.legacy is not None and a.new is not None]
    differ = [
        f"{a.name} ({a.legacy.rows:,} legacy rows, {a.new.rows:,} new)"
        for a in pairs
        if a.legacy is not None
        and a.new is not None
        and (a.legacy.rows, a.legacy.fingerprint) != (a.new.rows, a.new.fingerprint)
    ]
    if not pairs:
        return Criterion(ANSWERS, None, "not checked: no question was asked of both tables")
    if differ:
        return Criterion(ANSWERS, False, "different answers: " + "; ".join(differ))
    return Criterion(
        ANSWERS, True, f"the same rows from both tables for all {len(pairs)} paired questions"
    )
