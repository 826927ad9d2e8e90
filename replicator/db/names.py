"""Table and index names: what PostgreSQL accepts, checked before any statement uses them.

Names from configuration are plain identifiers (a letter or ``_``, then letters, digits
or ``_``) and are always quoted where they are used; PostgreSQL truncates identifiers
beyond 63 bytes silently, which would make two derived names (``idx_<table>_status``...)
collide, so every derived name is checked against that limit.
"""

from __future__ import annotations

import re

from replicator.errors import ConfigurationError

MAX_IDENTIFIER_BYTES = 63
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
IDENTIFIER_RULE = (
    "a plain SQL identifier: a letter or _, then letters, digits or _, at most 63 characters"
)


def plain_identifier(name: str, what: str = "table name") -> str:
    """``name`` when it is a plain identifier; else a :class:`ConfigurationError`."""
    if not IDENTIFIER.match(name):
        raise ConfigurationError(f"{what} {name!r} must be {IDENTIFIER_RULE}")
    return name


def too_long(names: list[str]) -> list[str]:
    """Pure. The names PostgreSQL would truncate."""
    return [n for n in names if not n or len(n.encode()) > MAX_IDENTIFIER_BYTES]
