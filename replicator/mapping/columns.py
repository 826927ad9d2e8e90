"""Every fact about the two tables' columns, stated once.

The migration plan's tables (``shared`` seed, "Data Source Mapping" and "Additional
Fields"): the legacy columns, the target columns, which one feeds which, the target's
types and the defaults of the columns the legacy table does not have.  The Python
mapping (:mod:`replicator.mapping.rows`), the mapping in SQL
(:mod:`replicator.mapping.sql`), the sink, backfill and verify all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

#: The legacy table the application writes.
SOURCE_TABLE = "workflow_processes"

#: ``workflow_processes`` columns in DDL order.
SOURCE_COLUMNS: tuple[str, ...] = (
    "id",
    "workflow_name",
    "message",
    "max_turns",
    "session_name",
    "git_branch",
    "repository_url",
    "created_at",
    "updated_at",
    "status",
    "result",
    "error_message",
    "execution_time",
    "total_cost",
    "started_at",
    "completed_at",
)

#: The source columns' types, which the SQL mapping and binary COPY rely on.
SOURCE_TYPES: dict[str, str] = {
    **dict.fromkeys(SOURCE_COLUMNS, "text"),
    **dict.fromkeys(("max_turns", "execution_time"), "integer"),
    **dict.fromkeys(
        ("created_at", "updated_at", "started_at", "completed_at"), "timestamp without time zone"
    ),
    "total_cost": "real",
}

#: ``workflow_runs`` columns in DDL order, with the type each is written as (JSON as
#: ``json``; integers as ``int4``: the casts into the table check the ranges).
TARGET_TYPES: dict[str, str] = {
    "run_id": "text",
    "workflow_type": "text",
    "description": "text",
    "user_id": "text",
    "status": "text",
    "priority": "text",
    "max_turns": "int4",
    "session_id": "text",
    "git_branch": "text",
    "repository_url": "text",
    "created_at": "timestamp",
    "updated_at": "timestamp",
    "started_at": "timestamp",
    "completed_at": "timestamp",
    "result_data": "json",
    "error_details": "json",
    "execution_time_ms": "int4",
    "total_cost": "numeric",
    "tags": "json",
    "metadata": "json",
    "progress_data": "json",
    "resource_usage": "json",
}
TARGET_COLUMNS: tuple[str, ...] = tuple(TARGET_TYPES)
TARGET_INDEX: dict[str, int] = {name: i for i, name in enumerate(TARGET_COLUMNS)}
JSON_COLUMNS: frozenset[str] = frozenset(n for n, t in TARGET_TYPES.items() if t == "json")

#: The plan's "Data Source Mapping" table: legacy column -> target column.
SOURCE_TO_TARGET: dict[str, str] = {
    "id": "run_id",
    "workflow_name": "workflow_type",
    "message": "description",
    "max_turns": "max_turns",
    "session_name": "session_id",
    "git_branch": "git_branch",
    "repository_url": "repository_url",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "status": "status",
    "result": "result_data",
    "error_message": "error_details",
    "execution_time": "execution_time_ms",
    "total_cost": "total_cost",
    "started_at": "started_at",
    "completed_at": "completed_at",
}

#: The plan's "Additional Fields": target columns the legacy table does not have.
NEW_COLUMN_DEFAULTS: dict[str, Any] = {
    "user_id": None,
    "priority": "normal",
    "tags": "[]",
    "metadata": "{}",
    "progress_data": "{}",
    "resource_usage": "{}",
}

#: The JSON wrapping of two text columns: ``{"<key>": <text>}``, ``{}`` when NULL.
JSON_WRAPPED: dict[str, str] = {"result": "result", "error_message": "error"}

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class CostColumn:
    """The type of the target's ``total_cost``: ``DECIMAL(precision, scale)``, as the plan
    creates it (10, 4) or as an operator widened it; ``precision`` None: unbounded NUMERIC.
    The mapping's limits come from it, so that widening the column lets values through."""

    precision: int | None = 10
    scale: int = 4

    @property
    def limit(self) -> Decimal | None:
        """Exclusive bound of the absolute value (None: none)."""
        return None if self.precision is None else Decimal(10 ** (self.precision - self.scale))

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.scale)

    @property
    def sql_type(self) -> str:
        return "NUMERIC" if self.precision is None else f"DECIMAL({self.precision},{self.scale})"


#: The plan's ``total_cost DECIMAL(10,4)``: at most 6 digits before the point.
PLAN_COST = CostColumn()
COST_LIMIT = PLAN_COST.limit

if set(SOURCE_TO_TARGET.values()) | set(NEW_COLUMN_DEFAULTS) != set(TARGET_COLUMNS):
    raise ImportError("the column facts disagree: every target column needs one source")
