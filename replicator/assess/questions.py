"""The questions ``assess`` asks of both tables (pure: it composes SQL, runs nothing).

Each question is written once, over the new table's columns; the legacy table is asked
the same question through the mapping (:data:`replicator.mapping.sql.MAPPED`): its
column names, and its rules where they differ.  ``status = 'pending'`` becomes
``COALESCE(status, 'pending') = 'pending'`` on the legacy side, since the mapping turns
a NULL status into ``'pending'``: both sides then answer with the same rows.

A question on a column the legacy table does not have (``user_id``: the mapping writes
NULL) is asked of the new table only and left out of the comparison; one whose
parameter the data cannot supply (no row has a ``user_id``) is left out altogether,
with the reason, rather than run as a constant-false ``user_id = NULL``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from replicator.mapping.columns import NEW_COLUMN_DEFAULTS
from replicator.mapping.sql import MAPPED

LEGACY, NEW = "legacy", "new"


@dataclass(frozen=True, slots=True)
class Question:
    """``sql`` names the table ``{table}`` and each column ``{column}``; ``%(p)s`` are
    parameters sampled from the data (:func:`left_out` when one is missing)."""

    name: str
    sql: str
    needs: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.sql) if f and f != "table")

    @property
    def legacy_answers(self) -> bool:
        """Whether the legacy table has every column the question reads."""
        return not set(self.columns) & set(NEW_COLUMN_DEFAULTS)


QUESTIONS: tuple[Question, ...] = (
    Question("lookup by id", "SELECT * FROM {table} WHERE {run_id} = %(id)s", ("id",)),
    Question("newest 50", "SELECT * FROM {table} ORDER BY {created_at} DESC LIMIT 50"),
    Question("count by status", "SELECT {status}, count(*) FROM {table} GROUP BY 1"),
    Question(
        "by workflow type and status",
        "SELECT * FROM {table} WHERE {workflow_type} = %(type)s AND {status} = %(status)s",
        ("type", "status"),
    ),
    Question(
        "by user and status",
        "SELECT * FROM {table} WHERE {user_id} = %(user)s AND {status} = %(status)s",
        ("user", "status"),
    ),
    Question(
        "created in a range",
        "SELECT * FROM {table} WHERE {created_at} >= %(created_lo)s"
        " AND {created_at} < %(created_hi)s",
        ("created_lo", "created_hi"),
    ),
    Question(
        "completed in a range",
        "SELECT * FROM {table} WHERE {completed_at} >= %(completed_lo)s"
        " AND {completed_at} < %(completed_hi)s",
        ("completed_lo", "completed_hi"),
    ),
)


def legacy_expression(column: str) -> str:
    """The legacy table's SQL for a new column (the mapping's, over the bare row)."""
    return re.sub(r"\bp\.", "", MAPPED[column].as_string(None))


def quote(table: str) -> str:
    return '"' + table.replace('"', '""') + '"'


def render(question: Question, side: str, table: str) -> str:
    """The question's SQL for ``side`` (``legacy`` or ``new``), asked of ``table``."""
    names: dict[str, str] = {c: c for c in question.columns}
    if side == LEGACY:
        names = {c: legacy_expression(c) for c in question.columns}
    return question.sql.format(table=quote(table), **names)


def left_out(question: Question, params: dict[str, Any]) -> str | None:
    """Why the question is not asked at all (None: it is)."""
    missing = [p for p in question.needs if params.get(p) is None]
    if not missing:
        return None
    if "user" in missing:
        return (
            "no row of the new table has a user_id (the mapping writes NULL: the legacy"
            " table has no user), so there is no real user to ask about; `user_id = NULL`"
            " would be a constant-false plan"
        )
    return f"no value in the data for {', '.join(missing)} (an empty table?)"


def not_compared(question: Question) -> str | None:
    """Why the question is asked of the new table only (None: of both)."""
    if question.legacy_answers:
        return None
    absent = sorted(set(question.columns) & set(NEW_COLUMN_DEFAULTS))
    return f"the legacy table has no {', '.join(absent)} column: asked of the new table only"
