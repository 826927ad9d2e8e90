"""What ``assess`` measured, and its JSON form.

The JSON is the contract of ``replicator assess --json``, described by
``schemas/assess-report.schema.json`` (JSON Schema 2020-12).  ``schema_version`` is
raised whenever a field is removed or changes meaning; new fields may appear within a
version.  Times are milliseconds, sizes bytes, per-row figures bytes per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from replicator.assess.advice import Advice
from replicator.assess.criteria import Criterion, Floor
from replicator.assess.equal import EqualMeasured
from replicator.assess.hypothetical import EqualIndexes
from replicator.assess.scratch import Scratch
from replicator.assess.stats import Spread
from replicator.assess.storage import TableStorage
from replicator.assess.timing import Answered, SideTiming
from replicator.mapping.columns import SOURCE_TABLE

SCHEMA_VERSION = 1
SCHEMA_FILE = "assess-report.schema.json"


@dataclass
class Assessment:
    """What ``assess`` measured, and the criteria and checks judged from it."""

    legacy_table: str = SOURCE_TABLE  # the archive after a cutover
    new_table: str = "workflow_runs"
    verify_status: str = "unverified"
    cut_over: str | None = None  # after a cutover: what is true (cutover/guard.py)
    changed_since_cutover: int | None = None
    consumer_lag: int | None = None
    slot_retained_bytes: int | None = None
    refused_by_mapping: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    questions: list[Answered] = field(default_factory=list)
    legacy: TableStorage | None = None
    new: TableStorage | None = None
    equal_indexes: EqualIndexes | None = None  # hypothetical: estimated costs
    equal_copies: EqualMeasured | None = None  # real indexes on copies: server time
    scratch: Scratch | None = None
    criteria: list[Criterion] = field(default_factory=list)
    checks: list[Criterion] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return 2
        criteria = [c.passed for c in self.criteria if c.passed is not None]
        checks = [c.passed for c in self.checks if c.passed is not None]
        return 0 if criteria and all(criteria) and all(checks) else 1

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (schemas/assess-report.schema.json)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "exit_code": self.exit_code,
            "error": self.error,
            "replication": {
                "legacy_table": self.legacy_table,
                "new_table": self.new_table,
                "verify_status": self.verify_status,
                "cut_over": self.cut_over,
                "changed_since_cutover": self.changed_since_cutover,
                "consumer_lag": self.consumer_lag,
                "slot_retained_bytes": self.slot_retained_bytes,
                "rows": {
                    "legacy": None if self.legacy is None else self.legacy.rows,
                    "new": None if self.new is None else self.new.rows,
                },
                "refused_by_mapping": self.refused_by_mapping,
            },
            "parameters": {k: None if v is None else str(v) for k, v in self.parameters.items()},
            "questions": [_question(a) for a in self.questions],
            "storage": {
                "legacy": _storage(self.legacy, None),
                "new": _storage(self.new, self.scratch),
            },
            "equal_indexes": _equal(self.equal_indexes, self.equal_copies),
            "scratch": _scratch(self.scratch),
            "advice": [_advice(a) for a in (self.scratch.advice if self.scratch else ())],
            "criteria": [_criterion(c) for c in self.criteria],
            "checks": [_criterion(c) for c in self.checks],
        }


def spread(s: Spread) -> dict[str, Any]:
    return {
        "median": s.median_ms,
        "q1": s.q1_ms,
        "q3": s.q3_ms,
        "min": s.min_ms,
        "max": s.max_ms,
        "runs": s.runs,
    }


def _side(t: SideTiming | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {
        "server_ms": spread(t.server),
        "client_ms": spread(t.client),
        "rows": t.rows,
        "indexes": list(t.indexes),
        "fingerprint": t.fingerprint,
    }


def _question(a: Answered) -> dict[str, Any]:
    return {
        "name": a.name,
        "compared": a.paired,
        "left_out": a.left_out,
        "not_compared": a.not_compared,
        "legacy": _side(a.legacy),
        "new": _side(a.new),
    }


def _storage(s: TableStorage | None, scratch: Scratch | None) -> dict[str, Any] | None:
    if s is None:
        return None
    fresh = scratch.fresh_indexes if scratch is not None else {}
    added = s.plan_added
    return {
        "table": s.table,
        "rows": s.rows,
        "heap_bytes": s.heap_bytes,
        "toast_bytes": s.toast_bytes,
        "index_bytes": s.index_bytes,
        "total_bytes": s.total_bytes,
        "bytes_per_row": s.bytes_per_row,
        "heap_per_row": s.per_row(s.heap_bytes),
        "toast_per_row": s.per_row(s.toast_bytes),
        "plan_added_per_row": None
        if added is None
        else {k: s.per_row(v) for k, v in added.items()},
        "plan_added_bytes_per_row": None if added is None else s.per_row(s.plan_added_bytes),
        "rest_of_heap_per_row": None
        if added is None
        else s.per_row(s.heap_bytes - s.plan_added_bytes),
        "indexes": [
            {
                "name": i.name,
                "definition": i.definition,
                "bytes": i.bytes,
                "bytes_per_row": s.per_row(i.bytes),
                "fresh_bytes": fresh.get(i.name),
                "primary": i.primary,
                "unique": i.unique,
                "idx_scan_window": i.idx_scan_window,
                "idx_scan_total": i.idx_scan_total,
            }
            for i in s.indexes
        ],
    }


def _equal(e: EqualIndexes | None, m: EqualMeasured | None) -> dict[str, Any] | None:
    if e is None:
        return None
    copies = None
    if m is not None:
        copies = {
            "measured": m.measured,
            "reason": m.reason,
            "method": m.method,
            "questions": [
                {
                    "name": q.name,
                    "legacy_own_ms": spread(q.legacy_own),
                    "legacy_equal_ms": spread(q.legacy_equal),
                    "new_ms": spread(q.new),
                    "legacy_equal_indexes": list(q.legacy_equal_indexes),
                }
                for q in m.questions
            ],
            "shape_cost": m.shape_cost,
            "indexes_buy": m.indexes_buy,
        }
    return {
        "indexes": [
            {"new_index": t.new_index, "legacy_columns": t.legacy_columns, "skipped": t.skipped}
            for t in e.indexes
        ],
        "hypothetical": {
            "measured": e.measured,
            "reason": e.reason,
            "method": e.method,
            "questions": [
                {
                    "name": q.name,
                    "legacy_cost": q.legacy_cost,
                    "legacy_equal_cost": q.legacy_equal_cost,
                    "new_cost": q.new_cost,
                    "legacy_equal_indexes": list(q.legacy_equal_indexes),
                }
                for q in e.questions
            ],
            "shape_cost": e.shape_cost,
            "indexes_buy": e.indexes_buy,
        },
        "copies": copies,
    }


def _scratch(s: Scratch | None) -> dict[str, Any] | None:
    if s is None:
        return None
    floor = s.floor_heap_bytes + s.floor_toast_bytes
    return {
        "measured": s.measured,
        "reason": s.reason,
        "rows": s.rows,
        "heap_bytes": s.heap_bytes,
        "toast_bytes": s.toast_bytes,
        "index_bytes": sum(s.fresh_indexes.values()),
        "floor_heap_bytes": s.floor_heap_bytes,
        "floor_toast_bytes": s.floor_toast_bytes,
        "floor_bytes_per_row": round(floor / s.rows, 2) if s.rows else None,
        "column_order": list(s.column_order),
        "baseline": {name: spread(t) for name, t in s.baseline.items()},
    }


def _advice(a: Advice) -> dict[str, Any]:
    return {
        "kind": a.kind,
        "title": a.title,
        "reason": a.reason,
        "statements": list(a.statements),
        "applied": a.applied,
        "bytes_change": a.bytes_change,
        "per_row_change": a.per_row_change,
        "questions": [
            {
                "name": e.name,
                "before_ms": spread(e.before),
                "after_ms": spread(e.after),
                "change": e.change,
            }
            for e in a.effects
        ],
    }


def _floor(f: Floor | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {"figure": f.figure, "reachable": f.reachable, "value": f.value, "target": f.target}


def _criterion(c: Criterion) -> dict[str, Any]:
    return {"name": c.name, "passed": c.passed, "figure": c.figure, "floor": _floor(c.floor)}
