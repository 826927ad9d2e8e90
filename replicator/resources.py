"""Where the product's own files are: ``schemas/`` (the DDL, roles, Avro schemas) and
``connectors/`` (the Debezium connector config).

The repository's top-level folders are the sources of truth; the wheel carries copies
inside the package (``replicator/bundled/``, written by ``setup.py`` at build time), so
an installed replicator finds them wherever it runs.  A checkout finds its own folders.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from replicator.errors import ConfigurationError


@functools.cache
def resource_dir(name: str) -> Path:
    """The folder ``name`` (``schemas`` or ``connectors``): bundled, else the checkout's."""
    bundled = resources.files("replicator").joinpath("bundled", name)
    if bundled.is_dir():
        return Path(str(bundled))
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    raise ConfigurationError(
        f"the product's {name}/ folder is missing: neither bundled in the installed package"
        f" ({bundled}) nor next to it ({checkout}); reinstall workflow-runs-replicator"
    )


def schemas_dir() -> Path:
    return resource_dir("schemas")


def connector_file() -> Path:
    return resource_dir("connectors") / "workflow-processes.json"
