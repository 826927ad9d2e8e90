"""What the cutover and rollback read from PostgreSQL's catalog: the legacy table's
columns, defaults and grants, what depends on it, who owns what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.cutover import objects
from replicator.db.schema import relkind as relkind

q = sql.SQL


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    default: str | None  # the expression, as pg_get_expr prints it


def schema_of(conn: psycopg.Connection[Any], table: str) -> str:
    row = conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s)",
        [table],
    ).fetchone()
    if row is None:
        raise LookupError(table)
    return str(row[0])


def columns(conn: psycopg.Connection[Any], table: str) -> list[Column]:
    """The columns of ``table`` in their order, with type and default."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attribute a LEFT JOIN pg_attrdef d"
        " ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        [table],
    ).fetchall()
    return [Column(*row) for row in rows]


def owned(conn: psycopg.Connection[Any], table: str) -> bool:
    """The current role owns ``table`` (or is a member of its owner, or superuser)."""
    row = conn.execute(
        "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c"
        " WHERE c.oid = to_regclass(%s)",
        [table],
    ).fetchone()
    return bool(row and row[0])


def can_replicate(conn: psycopg.Connection[Any]) -> bool:
    """The current role may create and drop replication slots."""
    row = conn.execute(
        "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row[0])


_DEPENDENTS = """
SELECT 'view ' || v.oid::regclass::text
  FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
 WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = to_regclass(%(t)s)
   AND v.oid <> to_regclass(%(t)s)
UNION
SELECT 'rule ' || r.rulename FROM pg_rewrite r
 WHERE r.ev_class = to_regclass(%(t)s) AND r.rulename <> '_RETURN'
UNION
SELECT 'foreign key ' || c.conname || ' of ' || c.conrelid::regclass::text
  FROM pg_constraint c
 WHERE c.contype = 'f' AND (c.confrelid = to_regclass(%(t)s) OR c.conrelid = to_regclass(%(t)s))
UNION
SELECT 'trigger ' || g.tgname FROM pg_trigger g
 WHERE g.tgrelid = to_regclass(%(t)s) AND NOT g.tgisinternal
   AND NOT (g.tgname = ANY(%(ours)s) AND g.tgfoid IN (
       SELECT f.oid FROM pg_proc f WHERE f.proname = ANY(%(functions)s)))
UNION
SELECT 'row-level security policy ' || p.polname FROM pg_policy p
 WHERE p.polrelid = to_regclass(%(t)s)
UNION
SELECT 'publication ' || p.pubname FROM pg_publication p
 WHERE p.pubname <> %(pub)s AND (p.puballtables OR EXISTS (
       SELECT FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = to_regclass(%(t)s)))
UNION
SELECT 'inheritance or partition ' || i.inhrelid::regclass::text FROM pg_inherits i
 WHERE i.inhparent = to_regclass(%(t)s) OR i.inhrelid = to_regclass(%(t)s)
ORDER BY 1
"""


def dependents(conn: psycopg.Connection[Any], table: str, publication: str) -> list[str]:
    """What would break or silently change when ``table`` becomes the archive: views,
    rules, foreign keys, triggers, policies, publications other than ``publication``,
    inheritance.  Each would follow the renamed table (or refuse the rename).  The pending
    log's triggers are the cutover's own (objects.py, recognised by name and function):
    the cutover removes them itself."""
    ours = {
        "t": table,
        "pub": publication,
        "ours": sorted(objects.PENDING_TRIGGER_NAMES),
        "functions": sorted(objects.PENDING_FUNCTIONS.values()),
    }
    return [str(r[0]) for r in conn.execute(_DEPENDENTS, ours)]


def copy_grants(conn: psycopg.Connection[Any], source: str, view: str, *, only: str = "") -> int:
    """Grant on ``view`` what every role holds on ``source`` (table and column level),
    except its owner's own rights; ``only`` keeps one privilege (``SELECT``).  The count."""
    rows = conn.execute(
        "SELECT a.privilege_type, a.grantee, a.is_grantable, NULL::name"
        " FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.oid = to_regclass(%(t)s) AND a.grantee <> c.relowner"
        " UNION ALL"
        " SELECT a.privilege_type, a.grantee, a.is_grantable, t.attname"
        " FROM pg_class c JOIN pg_attribute t ON t.attrelid = c.oid, aclexplode(t.attacl) a"
        " WHERE c.oid = to_regclass(%(t)s) AND a.grantee <> c.relowner",
        {"t": source},
    ).fetchall()
    allowed = {"SELECT", "INSERT", "UPDATE", "DELETE", "REFERENCES", "TRIGGER"}
    done = 0
    for privilege, grantee_oid, grantable, column in rows:
        if privilege not in allowed or (only and privilege != only):
            continue
        grantee = (
            q("PUBLIC")
            if grantee_oid == 0
            else sql.Identifier(
                conn.execute(
                    "SELECT rolname FROM pg_roles WHERE oid = %s", [grantee_oid]
                ).fetchone()[0]  # type: ignore[index]  # an aggregate or a function call: always one row
            )
        )
        conn.execute(
            q("GRANT {p}{cols} ON {v} TO {g}{opt}").format(
                p=q(privilege),
                cols=q("") if column is None else q(" ({})").format(sql.Identifier(column)),
                v=sql.Identifier(view),
                g=grantee,
                opt=q(" WITH GRANT OPTION") if grantable else q(""),
            )
        )
        done += 1
    return done
