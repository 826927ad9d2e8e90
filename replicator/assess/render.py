"""``assess`` for people: readable tables of what was measured, then the verdict."""

from __future__ import annotations

from collections.abc import Iterator

from replicator.assess.criteria import Criterion
from replicator.assess.equal import EqualMeasured
from replicator.assess.hypothetical import EqualIndexes
from replicator.assess.report import Assessment
from replicator.assess.scratch import Scratch
from replicator.assess.stats import Spread
from replicator.assess.storage import TableStorage
from replicator.assess.timing import Answered, SideTiming


def _n(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _ms(s: Spread) -> str:
    return f"{s.median_ms:8.2f} ({s.q1_ms:.2f}-{s.q3_ms:.2f})"


def replication(a: Assessment) -> Iterator[str]:
    assert a.legacy is not None and a.new is not None
    yield "replication" if a.cut_over is None else "the migrated state"
    yield f"  rows                {a.legacy_table:<26} {a.legacy.rows:,}"
    yield f"                      {a.new_table:<26} {a.new.rows:,}"
    yield f"  verify              {a.verify_status.replace('_', ' ')}"
    if a.cut_over is not None:
        yield f"  written since       {_n(a.changed_since_cutover)} rows (not compared)"
        yield f"  stream              closed: {a.cut_over}"
    else:
        yield f"  consumer lag        {_n(a.consumer_lag)} events"
        yield f"  slot retains        {_n(a.slot_retained_bytes)} bytes of WAL"


def _side_line(label: str, side: str, t: SideTiming) -> str:
    used = ", ".join(t.indexes) or "no index"
    return f"  {label:<28}{side:<8}{_ms(t.server):>26}{_ms(t.client):>26}{t.rows:>9,}  {used}"


def questions(answered: list[Answered]) -> Iterator[str]:
    yield (
        "questions (median ms and interquartile range; server: EXPLAIN ANALYZE; client:"
        " fetched and decoded; interleaved)"
    )
    yield f"  {'question':<28}{'side':<8}{'server ms':>26}{'client ms':>26}{'rows':>9}  indexes"
    for a in answered:
        if a.left_out is not None:
            yield f"  {a.name:<28}left out: {a.left_out}"
            continue
        for side, t in (("legacy", a.legacy), ("new", a.new)):
            if t is not None:
                yield _side_line(a.name if side == "legacy" or a.legacy is None else "", side, t)
        if a.not_compared is not None:
            yield f"  {'':<28}not compared: {a.not_compared}"


def _table(s: TableStorage, fresh: dict[str, int]) -> Iterator[str]:
    per = s.per_row
    yield (
        f"  {s.table:<28}{s.rows:>10,} rows  heap {per(s.heap_bytes) or 0:.1f}"
        f"  toast {per(s.toast_bytes) or 0:.1f}  indexes {per(s.index_bytes) or 0:.1f}"
        f"  total {s.bytes_per_row or 0:.1f}"
    )
    if s.plan_added is not None:
        parts = ", ".join(f"{k} {per(v) or 0:.1f}" for k, v in s.plan_added.items())
        rest = per(s.heap_bytes - s.plan_added_bytes) or 0
        added = per(s.plan_added_bytes) or 0
        yield f"    heap: the plan adds {added:.1f} ({parts}); rest {rest:.1f}"
    for i in s.indexes:
        built = f"{fresh[i.name] / s.rows:8.1f}" if i.name in fresh and s.rows else f"{'-':>8}"
        window = "?" if i.idx_scan_window is None else f"{i.idx_scan_window:,}"
        yield (
            f"    {i.name:<40}{per(i.bytes) or 0:8.1f}{built}   scans {window:>6}"
            f" ({i.idx_scan_total:,} since reset)"
        )


def storage(a: Assessment) -> Iterator[str]:
    fresh = a.scratch.fresh_indexes if a.scratch is not None else {}
    yield (
        "storage (bytes per row; each index: as built, freshly built on the copy; scans in"
        " the measuring window)"
    )
    for s in (a.legacy, a.new):
        if s is not None:
            yield from _table(s, fresh if s is a.new else {})


def _shape(shape: float | None, buy: float | None, unit: str) -> Iterator[str]:
    if shape is not None and buy is not None:
        more = "more" if shape >= 0 else "less"
        yield (
            f"  the new shape takes {abs(shape):.0%} {more} {unit} than the legacy table with"
            f" the same indexes; those indexes take {buy:.0%} off the legacy table's {unit}"
        )


def equal_indexes(e: EqualIndexes | None, m: EqualMeasured | None) -> Iterator[str]:
    if e is None:
        return
    yield "equal indexes (the legacy questions with the new table's indexes)"
    for t in e.indexes:
        made = t.legacy_columns or f"not made: {t.skipped}"
        yield f"    {t.new_index:<40}{made}"
    if m is not None:
        yield f"  measured: {m.method}" if m.measured else f"  measured: {m.reason}"
        if m.measured:
            yield f"  {'question':<28}{'legacy':>12}{'legacy + new indexes':>22}{'new':>12}  ms"
            for row in m.questions:
                ms = f"{row.legacy_own.median_ms:>12.2f}{row.legacy_equal.median_ms:>22.2f}"
                yield f"  {row.name:<28}{ms}{row.new.median_ms:>12.2f}"
            yield from _shape(m.shape_cost, m.indexes_buy, "time")
    yield f"  hypothetical: {e.method}" if e.measured else f"  hypothetical: {e.reason}"
    if e.measured:
        yield f"  {'question':<28}{'legacy':>12}{'legacy + new indexes':>22}{'new':>12}  cost"
        for q in e.questions:
            costs = f"{q.legacy_cost:>12,.1f}{q.legacy_equal_cost:>22,.1f}{q.new_cost:>12,.1f}"
            yield f"  {q.name:<28}{costs}"
        yield from _shape(e.shape_cost, e.indexes_buy, "cost")


def advice(s: Scratch | None) -> Iterator[str]:
    if s is None:
        return
    yield "advice (measured on a scratch copy of the new table; nothing applied)"
    if not s.measured:
        yield f"  {s.reason}"
        return
    for a in s.advice:
        yield f"  {a.title}: {a.bytes_change:+,} bytes ({a.per_row_change:+.1f} per row)"
        yield f"    why: {a.reason}"
        for e in a.effects:
            before, after = e.before.median_ms, e.after.median_ms
            yield f"    {e.name:<28}{before:8.2f} -> {after:8.2f} ms  {e.change}"
        for statement in a.statements:
            yield f"    {statement}"


def verdict(title: str, items: list[Criterion]) -> Iterator[str]:
    yield title
    for c in items:
        mark = "n/a " if c.passed is None else "PASS" if c.passed else "FAIL"
        yield f"  {mark}  {c.name}: {c.figure}"
        if c.floor is not None:
            yield f"        floor: {c.floor.figure}"


def human(a: Assessment) -> str:
    if a.error is not None:
        return f"replicator: could not assess: {a.error}"
    lines = [
        *replication(a),
        *questions(a.questions),
        *storage(a),
        *equal_indexes(a.equal_indexes, a.equal_copies),
        *advice(a.scratch),
        *verdict("the plan's success criteria", a.criteria),
        *verdict("checks", a.checks),
    ]
    return "\n".join(lines)
