"""The migration plan's success criteria, as figures (pure: no I/O).

The query set pairs a question an application asks of ``workflow_processes`` with the
same question asked of ``workflow_runs`` (the plan's column names); the measured figures
(:class:`QueryTiming`, :class:`Storage`) are judged here against the plan's targets:

* **query response time improved by 30%**: the sum of the medians of the paired queries
  on ``workflow_runs`` is at most 70% of the sum on ``workflow_processes``.  A question
  the legacy table cannot answer (by user: it has no user column) is reported, not
  counted;
* **storage efficiency increased by 20%**: bytes per row of ``workflow_runs`` (heap,
  indexes and TOAST) at most 1/1.2 of the legacy table's;
* **zero data loss**: verify finds the tables in sync, and the row counts are equal.
  After a cutover (the migrated state): verify finds the archive and ``workflow_runs``
  equal on every row the application has not written since, so a rollback would lose
  nothing; after the finalize nothing is left to compare, and the criterion is reported
  as not measured (it neither passes nor fails).

After a cutover the legacy questions are asked of the archive (:func:`on_table`): the
legacy table as it was, with its indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QUERY_TARGET = 0.30
STORAGE_TARGET = 0.20


@dataclass(frozen=True, slots=True)
class Query:
    """One question, asked of each table (None: that table cannot answer it)."""

    name: str
    legacy: str | None
    new: str


#: ``%(name)s`` parameters are sampled from the data (runner.sample_parameters).
QUERIES: tuple[Query, ...] = (
    Query(
        "lookup by id",
        "SELECT * FROM workflow_processes WHERE id = %(id)s",
        "SELECT * FROM workflow_runs WHERE run_id = %(id)s",
    ),
    Query(
        "newest 50",
        "SELECT * FROM workflow_processes ORDER BY created_at DESC LIMIT 50",
        "SELECT * FROM workflow_runs ORDER BY created_at DESC LIMIT 50",
    ),
    Query(
        "count by status",
        "SELECT coalesce(status, 'pending'), count(*) FROM workflow_processes GROUP BY 1",
        "SELECT status, count(*) FROM workflow_runs GROUP BY 1",
    ),
    Query(
        "by workflow type and status",
        "SELECT * FROM workflow_processes WHERE workflow_name = %(type)s"
        " AND status = %(status)s LIMIT 100",
        "SELECT * FROM workflow_runs WHERE workflow_type = %(type)s"
        " AND status = %(status)s LIMIT 100",
    ),
    Query(
        "by user and status",
        None,
        "SELECT * FROM workflow_runs WHERE user_id = %(user)s AND status = %(status)s LIMIT 100",
    ),
    Query(
        "created in a range",
        "SELECT * FROM workflow_processes WHERE created_at >= %(created_lo)s"
        " AND created_at < %(created_hi)s",
        "SELECT * FROM workflow_runs WHERE created_at >= %(created_lo)s"
        " AND created_at < %(created_hi)s",
    ),
    Query(
        "completed in a range",
        "SELECT * FROM workflow_processes WHERE completed_at >= %(completed_lo)s"
        " AND completed_at < %(completed_hi)s",
        "SELECT * FROM workflow_runs WHERE completed_at >= %(completed_lo)s"
        " AND completed_at < %(completed_hi)s",
    ),
)


@dataclass(frozen=True, slots=True)
class QueryTiming:
    """Median milliseconds of one query on one table, and whether an index served it."""

    median_ms: float
    runs: int
    index_used: bool


@dataclass(frozen=True, slots=True)
class Storage:
    rows: int
    heap_bytes: int
    index_bytes: int
    toast_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.heap_bytes + self.index_bytes + self.toast_bytes

    @property
    def bytes_per_row(self) -> float | None:
        return self.total_bytes / self.rows if self.rows else None


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    passed: bool | None  # None: not measured (it neither passes nor fails)
    figure: str


def query_criterion(timings: dict[str, tuple[QueryTiming | None, QueryTiming]]) -> Criterion:
    """Pure. 30% less time for the paired queries (``{name: (legacy, new)}``)."""
    pairs = [(old, new) for old, new in timings.values() if old is not None]
    legacy = sum(old.median_ms for old, _ in pairs)
    new = sum(n.median_ms for _, n in pairs)
    if not pairs or legacy <= 0:
        return Criterion("query response time improved by 30%", False, "nothing to compare")
    gain = 1 - new / legacy
    change = f"{abs(gain):.0%} {'faster' if gain >= 0 else 'slower'}"
    return Criterion(
        "query response time improved by 30%",
        round(gain, 9) >= QUERY_TARGET,
        f"{legacy:.2f} ms -> {new:.2f} ms over {len(pairs)} paired queries ({change})",
    )


def storage_criterion(legacy: Storage, new: Storage) -> Criterion:
    """Pure. 20% fewer bytes per row (heap, indexes and TOAST together)."""
    old_bpr, new_bpr = legacy.bytes_per_row, new.bytes_per_row
    name = "storage efficiency increased by 20%"
    if not old_bpr or not new_bpr:
        return Criterion(name, False, "a table is empty")
    gain = old_bpr / new_bpr - 1
    change = f"{abs(gain):.0%} {'more' if gain >= 0 else 'less'} efficient"
    return Criterion(
        name,
        round(gain, 9) >= STORAGE_TARGET,
        f"{old_bpr:,.0f} -> {new_bpr:,.0f} bytes per row ({change})",
    )


def loss_criterion(verify_status: str, source_rows: int, target_rows: int) -> Criterion:
    """Pure. Verify in sync and as many rows on both sides."""
    return Criterion(
        "zero data loss",
        verify_status == "in_sync" and source_rows == target_rows,
        f"verify {verify_status}, {source_rows:,} source rows, {target_rows:,} target rows",
    )


def migrated_loss_criterion(verify_status: str, changed_since: int | None) -> Criterion:
    """Pure. After a cutover: the archive agrees with ``workflow_runs`` on every row not
    written since (a rollback would lose nothing); not measured once finalized."""
    name = "zero data loss"
    if verify_status == "finalized":
        return Criterion(
            name,
            None,
            "not measured: the cutover is finalized, the change log ended (the switch"
            " compared every row when it cut over)",
        )
    return Criterion(
        name,
        verify_status == "in_sync",
        f"verify {verify_status}: the archive against workflow_runs on every row not written"
        f" since the cutover ({changed_since or 0:,} written since)",
    )


def on_table(query: str, table: str) -> str:
    """Pure. A legacy query asked of ``table`` (the archive, after the cutover)."""
    return query.replace("FROM workflow_processes", f'FROM "{table}"')


def index_used(plan: Any) -> bool:
    """Pure. Whether an EXPLAIN (FORMAT JSON) plan reads through an index."""
    if isinstance(plan, list):
        return any(index_used(p) for p in plan)
    if not isinstance(plan, dict):
        return False
    if "Index" in str(plan.get("Node Type", "")):
        return True
    return any(index_used(v) for k, v in plan.items() if k in ("Plan", "Plans"))


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
