"""Helpers shared by the unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from replicator.events import RowChange
from replicator.mapping.columns import TARGET_COLUMNS
from replicator.mapping.rows import map_to_tuple


@dataclass(frozen=True)
class Mapped:
    run: SimpleNamespace  # the mapped values by target column name
    unavailable: frozenset[str]


def map_row(row: Any) -> Mapped:
    values, unavailable = map_to_tuple(row)
    return Mapped(SimpleNamespace(**dict(zip(TARGET_COLUMNS, values, strict=True))), unavailable)


def row_change(run_id: str, lsn: int | None, delete: bool = False, **values: Any) -> RowChange:
    """A change of ``run_id``; an upsert's values default to a valid mapped row."""
    if delete:
        return RowChange(run_id, lsn, True, None)
    row = dict.fromkeys(TARGET_COLUMNS)
    row.update(run_id=run_id, workflow_type="w", description="d", status="pending", **values)
    return RowChange(run_id, lsn, False, tuple(row[c] for c in TARGET_COLUMNS))


#: Settings a command needs to start, pointing nowhere: the unit tests that run commands.
ENV = {
    "REPLICATOR_TARGET_DSN": "postgresql://app@db.invalid/t",
    "REPLICATOR_SOURCE_DSN": "postgresql://app@db.invalid/s",
    "REPLICATOR_KAFKA_BOOTSTRAP": "k.invalid:9092",
    "REPLICATOR_ENV_FILE": "/dev/null",
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
