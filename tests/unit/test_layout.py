"""The package's floor plan: small modules, short functions, one owner per table/client.

These are the structure's own invariants (README, "Layout"); a change that breaks one
should move code to where it belongs rather than raise a limit here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "replicator"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def source(path: Path) -> str:
    return path.read_text()


def name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", MODULES, ids=name)
def test_modules_are_small(path: Path) -> None:
    assert len(source(path).splitlines()) <= MAX_MODULE_LINES


@pytest.mark.parametrize("path", MODULES, ids=name)
def test_functions_are_short(path: Path) -> None:
    tree = ast.parse(source(path))
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]
    ]
    assert not long


def users_of(pattern: str) -> set[str]:
    regex = re.compile(pattern)
    return {name(p) for p in MODULES if regex.search(source(p))}


def test_one_module_owns_the_positions_table() -> None:
    assert users_of(r"kafka_partition") == {"replicator/stream/checkpoint.py"}  # its column
    assert users_of(r"INSERT INTO \{o\}|UPDATE \{o\}|DELETE FROM \{o\}") == {
        "replicator/stream/checkpoint.py"
    }


def test_one_module_builds_kafka_client_configs() -> None:
    assert users_of(r"\"bootstrap\.servers\":") == {"replicator/stream/source.py"}


def test_one_module_opens_postgresql_connections() -> None:
    assert users_of(r"psycopg\.connect\(") == {"replicator/db/connect.py"}
    assert users_of(r"\.sqlstate\b") <= {"replicator/db/connect.py", "replicator/replay/swap.py"}
