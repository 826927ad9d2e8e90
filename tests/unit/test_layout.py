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


def statements_of(path: Path) -> list[str]:
    """The module's string constants but its docstrings (implicit concatenations joined,
    f-string parts included): where its SQL is."""
    tree = ast.parse(source(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


DML = re.compile(r"\b(INSERT INTO|UPDATE|DELETE FROM|TRUNCATE)\s")


def writers_of(*markers: str) -> set[str]:
    """Modules with a data-changing statement that names one of ``markers`` (columns only
    that table has, or the placeholders a statement on it is composed with)."""
    return {
        name(p)
        for p in MODULES
        if any(DML.search(s) and any(m in s for m in markers) for s in statements_of(p))
    }


def imports_of(path: Path) -> set[str]:
    """Every module of the package ``path`` imports, at any depth of the code (a
    function-level import counts: it still makes a circle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("replicator")}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("replicator")
        ):
            found.add(str(node.module))
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULE_NAMES}


def dotted(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_NAMES = {dotted(p) for p in MODULES}


def test_one_module_owns_the_positions_table() -> None:
    owner = {"replicator/stream/apply/checkpoint.py"}
    assert users_of(r"kafka_partition") == owner  # its column
    assert writers_of("next_offset", "replicator_offsets") == owner
    assert users_of(r"Identifier\(\s*[\w.]*offsets") == owner


def test_one_module_writes_the_versions_table_and_the_truncate_floors() -> None:
    owner = {"replicator/stream/apply/versions.py"}
    assert writers_of("source_lsn", "_versions", "replicator_truncated") == owner
    assert users_of(r"\bTRUNCATED_TABLE\b") == {"replicator/db/schema.py", *owner}


def test_one_module_takes_exclusive_locks_with_retry() -> None:
    assert users_of(r"\"LOCK TABLE \{\} IN") == {"replicator/db/locks.py"}
    assert users_of(r"LockNotAvailable") == {"replicator/db/locks.py"}


def test_one_module_builds_kafka_client_configs() -> None:
    assert users_of(r"\"bootstrap\.servers\":") == {"replicator/clients/kafka.py"}


def test_one_module_talks_to_kafka_connect() -> None:
    assert users_of(r"class ConnectClient\b") == {"replicator/clients/connect.py"}
    assert users_of(r"def load_connector_file\b") == {"replicator/clients/connect.py"}


def test_one_module_opens_postgresql_connections() -> None:
    assert users_of(r"psycopg\.connect\(") == {"replicator/db/connect.py"}
    assert users_of(r"\.sqlstate\b") == {"replicator/db/connect.py"}


def test_nothing_at_runtime_imports_the_local_stack() -> None:
    """``replicator/local/`` is the development stack: only it and the commands that
    drive it (``stack``, ``sample``) import it, so no production command loads it."""
    users = {
        name(p) for p in MODULES if any(m.startswith("replicator.local") for m in imports_of(p))
    }
    assert {u for u in users if not u.startswith("replicator/local/")} == {
        "replicator/cli/stack.py"
    }


def test_no_import_circle_between_modules() -> None:
    graph = {dotted(p): imports_of(p) - {dotted(p)} for p in MODULES}
    # a package imports its own modules only through its children: edges into a parent
    # package (``replicator`` itself, a folder's ``__init__``) are not circles of code
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles


def test_the_stream_is_two_rooms() -> None:
    """``stream/``: the source side (poll, positions at the broker, ends, topic identity,
    decode) and the apply side (batch, fold, sink, lanes, versions, truncation, dead
    letters) in two folders, composed by ``replicator.py`` (the loop), ``intake.py`` (one
    message into a batch) and ``closed.py`` (the loop idle after a cutover); the apply side
    never reaches back into the source side."""
    stream = PACKAGE / "stream"
    assert {p.name for p in stream.iterdir() if p.suffix == ".py"} == {
        "__init__.py",
        "closed.py",
        "intake.py",
        "replicator.py",
        "resnapshot.py",
    }
    assert {p.name for p in stream.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "source",
        "apply",
    }
    for path in (stream / "apply").glob("*.py"):
        assert not {m for m in imports_of(path) if m.startswith("replicator.stream.source")}


def test_every_type_ignore_says_which_error_and_why() -> None:
    """mypy runs strict on the package (scripts/test.sh); what it is told to ignore is one
    named error with the reason after it: ``# type: ignore[code]  # why``."""
    bare = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "type: ignore" in line and not re.search(r"type: ignore\[[a-z-]+\]  # \w", line):
                bare.append(f"{path.relative_to(PACKAGE)}:{number}")
    assert not bare, bare
