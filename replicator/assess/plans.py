"""What an EXPLAIN (FORMAT JSON) result says (pure)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _root(explained: Any) -> dict[str, Any]:
    """The one statement's object of an EXPLAIN (FORMAT JSON) result."""
    if isinstance(explained, list):
        explained = explained[0] if explained else {}
    return explained if isinstance(explained, dict) else {}


def nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every plan node, depth first."""
    if isinstance(plan, list):
        for p in plan:
            yield from nodes(p)
        return
    if not isinstance(plan, dict):
        return
    if "Node Type" in plan:
        yield plan
    for key in ("Plan", "Plans"):
        if key in plan:
            yield from nodes(plan[key])


def index_names(explained: Any) -> tuple[str, ...]:
    """The indexes the plan reads through, sorted."""
    return tuple(sorted({n["Index Name"] for n in nodes(explained) if "Index Name" in n}))


def index_used(explained: Any) -> bool:
    return any("Index" in str(n.get("Node Type", "")) for n in nodes(explained))


def server_ms(explained: Any) -> float:
    """Planning plus execution, as EXPLAIN ANALYZE measured them on the server (the rows
    are counted, not sent: no network, no client decoding)."""
    root = _root(explained)
    return float(root.get("Planning Time", 0.0)) + float(root.get("Execution Time", 0.0))


def actual_rows(explained: Any) -> int:
    """Rows the statement returned (its top node's, under EXPLAIN ANALYZE)."""
    plan = _root(explained).get("Plan", {})
    return int(plan.get("Actual Rows", 0)) * max(1, int(plan.get("Actual Loops", 1)))


def total_cost(explained: Any) -> float:
    """The planner's estimated total cost of the statement (its units, not time)."""
    return float(_root(explained).get("Plan", {}).get("Total Cost", 0.0))
