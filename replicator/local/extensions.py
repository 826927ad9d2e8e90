"""Extensions the local cluster offers its databases.

HypoPG (Debian's ``postgresql-15-hypopg``) gives ``replicator assess`` hypothetical
indexes: the legacy questions planned with the new table's indexes, nothing built.  It
is not a trusted extension, so the cluster's superuser creates it, in ``template1``
too (every database created later has it, the tests' included).  Its functions are
executable by every role: the service role uses them without a grant.  Where the
package is missing the stack still comes up, and ``assess`` says "not measured".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from replicator.db.connect import connect
from replicator.errors import ReplicatorError

EXTENSIONS = ("hypopg",)


def enable_extensions(admin_dsns: Iterable[str], log: Callable[[str], None]) -> list[str]:
    """``CREATE EXTENSION IF NOT EXISTS`` each of :data:`EXTENSIONS` in each database (a
    superuser's DSNs); what could not be created is logged and returned, never raised."""
    missing: list[str] = []
    for dsn in dict.fromkeys(admin_dsns):  # the same database once
        try:
            with connect(dsn, "the local cluster") as conn:
                for name in EXTENSIONS:
                    conn.execute(f"CREATE EXTENSION IF NOT EXISTS {name}")
        except ReplicatorError as exc:
            missing.append(f"{dsn}: {exc}")
            log(f"postgresql: an optional extension is not available ({exc})")
    return missing
