"""Swap a rebuilt shadow table in for the live table, atomically, positions included.

One transaction, under ``ACCESS EXCLUSIVE`` locks on both tables and both versions tables
(versions first, in the order the sink locks them):

1. the live table, its versions table, their indexes and constraints are renamed to the
   old name (``<live>_old_<yyyymmddhhmmss>``: ``idx_<live>_status`` becomes
   ``idx_<old>_status``...), or dropped with ``drop_old``;
2. the shadow table and everything of it are renamed to the live names, so the live
   table keeps the plan's index names ``idx_<live>_*``; it gets the live table's grants;
3. positions (through checkpoint.py) and truncate floors (versions.py): the live table's
   move to the old name (or are deleted), and the shadow's become the live table's.

A concurrent reader sees the old table or the new one, never neither: it waits for the
lock, and PostgreSQL looks the name up again once it has it.  A running ``replicator run``
still holds the old positions in memory; its next batch finds the stored positions moved
(the sink's compare-and-set fence), rolls back, and re-positions from the handed-over
positions: it continues exactly where the replay ended.

Refused (nothing changed) when other objects depend on the live table and would keep
pointing at the old one: views, foreign keys into it, publications, triggers, policies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from replicator.db.connect import connect, mapped_errors
from replicator.db.locks import lock
from replicator.db.names import MAX_IDENTIFIER_BYTES, too_long
from replicator.errors import ConfigurationError
from replicator.stream.apply import versions
from replicator.stream.apply.checkpoint import Checkpoint

log = logging.getLogger("replicator.swap")

PRIVILEGES = frozenset(
    ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN")
)


@dataclass(frozen=True, slots=True)
class SwapPlan:
    live: str
    shadow: str
    old: str

    @property
    def tables(self) -> list[tuple[str, str, str]]:
        """(live, shadow, old) names of the tables and of their versions tables."""
        return [
            (self.live, self.shadow, self.old),
            *[(f"{self.live}_versions", f"{self.shadow}_versions", f"{self.old}_versions")],
        ]


def old_name(live: str, now: datetime) -> str:
    """Pure. ``workflow_runs_old_20250101120000``."""
    return f"{live}_old_{now:%Y%m%d%H%M%S}"


def renamed(name: str, table: str, new_table: str) -> str | None:
    """Pure. The name of an index or constraint of ``table`` once the table is called
    ``new_table`` (``idx_<table>_x`` and ``<table>_x`` follow it), or None (left alone)."""
    for prefix, new_prefix in (
        (f"idx_{table}_", f"idx_{new_table}_"),
        (f"{table}_", f"{new_table}_"),
    ):
        if name.startswith(prefix):
            return new_prefix + name[len(prefix) :]
    return None


def plan_swap(live: str, shadow: str, old: str) -> SwapPlan:
    """Check the names before any work: every renamed object must fit in 63 bytes."""
    if len({live, shadow, old}) != 3:
        raise ConfigurationError(f"swap needs three different names, got {live}, {shadow}, {old}")
    plan = SwapPlan(live, shadow, old)
    longest = [f"idx_{old}_workflow_type", f"{old}_versions_pkey", f"{old}_user_id_fkey"]
    long_names = too_long(longest)
    if long_names:
        raise ConfigurationError(
            f"the old table's names would exceed {MAX_IDENTIFIER_BYTES} bytes: {long_names};"
            " use a shorter target table name"
        )
    return plan


def rename_statements(
    kind_names: Iterable[tuple[str, str]], table: str, new_table: str
) -> list[sql.Composed]:
    """Pure. ``ALTER ... RENAME`` for ``table`` and its ``(kind, name)`` objects, kind being
    ``index`` or ``constraint`` (constraints backed by an index follow their index)."""
    t = sql.Identifier(table)
    out = []
    for kind, name in sorted(kind_names):
        new = renamed(name, table, new_table)
        if new is None or new == name:
            continue
        if kind == "index":
            stmt = sql.SQL("ALTER INDEX {} RENAME TO {}")
            out.append(stmt.format(sql.Identifier(name), sql.Identifier(new)))
        else:
            stmt = sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}")
            out.append(stmt.format(t, sql.Identifier(name), sql.Identifier(new)))
    out.append(sql.SQL("ALTER TABLE {} RENAME TO {}").format(t, sql.Identifier(new_table)))
    return out


_OBJECTS = """
    SELECT 'index', i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
    WHERE x.indrelid = %(t)s::regclass
    UNION ALL
    SELECT 'constraint', conname FROM pg_constraint
    WHERE conrelid = %(t)s::regclass AND conindid = 0"""
_DEPENDENTS = """
    SELECT 'view ' || v.oid::regclass::text FROM pg_depend d
    JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %(t)s::regclass
      AND v.oid <> %(t)s::regclass
    UNION SELECT 'foreign key ' || conname || ' of ' || conrelid::regclass::text
    FROM pg_constraint WHERE confrelid = %(t)s::regclass AND contype = 'f'
    UNION SELECT 'publication ' || p.pubname FROM pg_publication_rel r
    JOIN pg_publication p ON p.oid = r.prpubid WHERE r.prrelid = %(t)s::regclass
    UNION SELECT 'trigger ' || tgname FROM pg_trigger
    WHERE tgrelid = %(t)s::regclass AND NOT tgisinternal
    UNION SELECT 'policy ' || polname FROM pg_policy WHERE polrelid = %(t)s::regclass"""
_GRANTS = """
    SELECT r.rolname, a.privilege_type, a.is_grantable
    FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
    LEFT JOIN pg_roles r ON r.oid = a.grantee
    WHERE c.oid = %(from)s::regclass
      AND a.grantee <> (SELECT relowner FROM pg_class WHERE oid = %(to)s::regclass)"""


def grant_statements(
    grants: Iterable[tuple[str | None, str, bool]], table: str
) -> list[sql.Composed]:
    """Pure. ``GRANT`` each ``(role or None for PUBLIC, privilege, grantable)`` on ``table``."""
    out = []
    for role, privilege, grantable in grants:
        if privilege not in PRIVILEGES:
            continue
        grantee = sql.SQL("PUBLIC") if role is None else sql.Identifier(role)
        option = sql.SQL(" WITH GRANT OPTION" if grantable else "")
        out.append(
            sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege), sql.Identifier(table), grantee, option
            )
        )
    return out


def swap_tables(
    conninfo: str,
    *,
    live: str,
    shadow: str,
    old: str,
    offsets_table: str = "replicator_offsets",
    drop_old: bool = False,
    lock_timeout_s: float = 5.0,
    attempts: int = 10,
) -> None:
    """Swap ``shadow`` in for ``live`` in one transaction (module docstring)."""
    plan = plan_swap(live, shadow, old)
    with (
        connect(conninfo, "the target database", autocommit=False) as conn,
        mapped_errors(f"swap {shadow} in for {live}"),
    ):
        _swap(conn, plan, offsets_table, drop_old, (lock_timeout_s, attempts))
        conn.commit()
    log.info("swapped", extra={"live": live, "shadow": shadow, "old": old})


def _swap(
    conn: psycopg.Connection[Any],
    plan: SwapPlan,
    offsets: str,
    drop_old: bool,
    locking: tuple[float, int],
) -> None:
    def exists(name: str) -> bool:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [_regclass(name)]).fetchone()
        return row is not None and bool(row[0])

    have_live = exists(plan.live)
    conn.rollback()
    names = [n for live, shadow, _ in reversed(plan.tables) for n in (live, shadow)]
    present = [n for n in names if n not in (plan.live, f"{plan.live}_versions") or have_live]
    lock(conn, sql.SQL(", ").join(map(sql.Identifier, present)), *locking)
    if have_live:
        blocking = [r[0] for r in conn.execute(_DEPENDENTS, {"t": _regclass(plan.live)})]
        if blocking:
            raise ConfigurationError(
                f"{plan.live} cannot be swapped: {', '.join(sorted(blocking))} would keep pointing"
                " at the old table; drop them, swap, and create them again"
            )
    statements: list[sql.Composed] = []
    for live, shadow, old in plan.tables:
        if have_live:
            grants = conn.execute(_GRANTS, {"from": _regclass(live), "to": _regclass(shadow)})
            statements += grant_statements(grants, shadow)
            statements += rename_statements(_objects(conn, live), live, old)
        statements += rename_statements(_objects(conn, shadow), shadow, live)
    if have_live and drop_old:
        old_tables = (sql.Identifier(plan.old), sql.Identifier(f"{plan.old}_versions"))
        statements.append(sql.SQL("DROP TABLE {}, {}").format(*old_tables))
    for statement in statements:
        conn.execute(statement)
    if have_live:
        if drop_old:
            Checkpoint(offsets, plan.live).forget(conn)
        else:
            Checkpoint(offsets, plan.live).move(conn, plan.old)
        versions.move_floor(conn, plan.live, None if drop_old else plan.old)
    Checkpoint(offsets, plan.shadow).move(conn, plan.live)
    versions.move_floor(conn, plan.shadow, plan.live)


def _objects(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name in conn.execute(_OBJECTS, {"t": _regclass(table)})]


def _regclass(name: str) -> str:
    return sql.Identifier(name).as_string(None)
