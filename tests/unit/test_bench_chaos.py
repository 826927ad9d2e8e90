"""The fault campaign's reading of what the product says."""

from __future__ import annotations

import json

from bench.chaos import connector_runs


def status(connector: str, *tasks: str) -> str:
    doc = {
        "connector": {"state": connector},
        "tasks": [{"id": i, "state": t} for i, t in enumerate(tasks)],
    }
    return json.dumps(doc, indent=2)


def test_the_connector_runs_when_it_and_every_task_do() -> None:
    assert connector_runs(status("RUNNING", "RUNNING"))
    # an unfinished re-snapshot is said after the JSON: the state is still read
    assert connector_runs(
        status("RUNNING", "RUNNING") + "\nsnapshot generation 3 ... not completed"
    )
    assert not connector_runs(status("RUNNING", "FAILED"))
    assert not connector_runs(status("STOPPED"))
    assert not connector_runs("")
