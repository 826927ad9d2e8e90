"""The fault campaign's reading of what the product says."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_the_campaign_gives_a_stuck_group_a_new_id_only_when_the_product_said_so(
    tmp_path: Path,
) -> None:
    """After the last heal, a member's warning that the group's rebalance has not
    completed (written by the product's own tracker and formatter) makes the campaign
    restart it with another group id, once; an ordinary "no partition" warning, or one
    written before the heal, does not."""
    import logging
    import time

    from bench.chaos import Campaign
    from replicator.observe.logs import HumanFormatter
    from replicator.observe.metrics import GroupState, Health, Metrics
    from replicator.observe.tracker import Tracker
    from replicator.settings import Settings

    class FakeMember:
        def __init__(self, log: Path) -> None:
            self.log, self.env, self.starts, self.stops = log, {}, 0, 0

        def stop(self) -> None:
            self.stops += 1

        def start(self) -> None:
            self.starts += 1

    log = tmp_path / "member-1.log"
    handler = logging.FileHandler(log)
    handler.setFormatter(HumanFormatter())
    logger = logging.getLogger("replicator.consumer")
    logger.addHandler(handler)
    settings = Settings(
        target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1", group_id="chaos"
    )
    health = Health(120, settings.group_id, settings.topic)
    tracker = Tracker(settings, Metrics(), health)
    health.unassigned_since = time.monotonic() - 120

    def warn(group: GroupState | None) -> int:
        tracker.progress([], force=True, group=group)
        handler.flush()
        return log.stat().st_size

    campaign = Campaign.__new__(Campaign)
    campaign.main, campaign.env = FakeMember(log), {"REPLICATOR_GROUP_ID": "chaos"}  # type: ignore[assignment]
    campaign.regrouped, campaign.say = None, lambda line: None
    try:
        mark = warn(GroupState("wait-sync", 300.0))  # before the heal: not acted on
        campaign.regroup(mark)
        mark2 = warn(GroupState("steady", 0.0))  # a full group: not this case
        campaign.regroup(mark)
        assert campaign.regrouped is None and campaign.main.starts == 0  # type: ignore[attr-defined]
        warn(GroupState("wait-join", 95.0))
        campaign.regroup(mark2)
        campaign.regroup(mark2)  # once
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert campaign.regrouped is not None and "has not completed for 95s" in campaign.regrouped
    assert campaign.main.stops == 1 and campaign.main.starts == 1  # type: ignore[attr-defined]
    assert campaign.main.env["REPLICATOR_GROUP_ID"] == "chaos-regrouped"  # type: ignore[attr-defined]
