"""schemas/roles.sql splits into the part of each database when they are separate."""

from __future__ import annotations

from replicator.db.schema import roles_script


def test_each_database_gets_the_roles_and_only_its_own_grants() -> None:
    whole, source, target = roles_script("all"), roles_script("source"), roles_script("target")
    for part in (source, target):
        assert "CREATE ROLE replicator_debezium LOGIN REPLICATION" in part
        assert "CREATE ROLE replicator_app LOGIN" in part
    assert "CREATE PUBLICATION" in source and "ON workflow_processes" in source
    assert "workflow_runs" not in source.split("$$;", 1)[1]
    assert "ON workflow_runs, workflow_runs_versions, replicator_offsets" in target
    assert "PUBLICATION" not in target and "workflow_processes" not in target.split("$$;", 1)[1]
    assert len(source) + len(target) > len(whole) > max(len(source), len(target))
