"""A source database with its own connector and topic, on the session's stack.

verify and replay compare or rebuild WHOLE tables; on the session's shared source and
topic they would see every other test's rows.  An isolated source has only the rows its
test writes: its own database (with the signal table and the grants and publication of
schemas/roles.sql), its own Debezium connector (own slot and topic prefix;
``database.dbname`` written literally), its own topic.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import psycopg

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.db.schema import apply_source_schema, roles_script
from replicator.local.stack import SERVICE_ROLE
from tests.integration.conftest import (
    StackInfo,
    create_change_topic,
    execute,
    new_database,
    remove_slot,
    unique,
)


@contextlib.contextmanager
def isolated_source(stack: StackInfo, tag: str) -> Iterator[StackInfo]:
    """``stack`` with its source and topic replaced by fresh ones (see the module doc)."""
    source = new_database(stack, f"{tag}src")
    apply_source_schema(source)
    execute(source, roles_script("source"))  # grants and the publication, in this database
    name, prefix = unique(f"{tag}conn"), unique(f"{tag}topic")
    config = {
        **load_connector_file()["config"],
        "topic.prefix": prefix,
        "slot.name": name,
        "database.dbname": psycopg.conninfo.conninfo_to_dict(source)["dbname"],
    }
    topic = f"{prefix}.public.workflow_processes"
    create_change_topic(stack.bootstrap, topic)
    client = ConnectClient(stack.connect_url)
    client.put_config(name, config)
    try:
        client.wait_running(name, timeout=60)
        service = psycopg.conninfo.make_conninfo(source, user=SERVICE_ROLE)
        yield dataclasses.replace(stack, source_dsn=source, service_source_dsn=service, topic=topic)
    finally:
        client.delete(name)
        remove_slot(source, name)
