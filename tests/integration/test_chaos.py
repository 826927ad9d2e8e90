"""The fault campaign (bench/chaos.py), short: a fixed seed, then a random one (printed),
each a minute of faults of every kind the nemesis knows, drawn from the seed, under a
writing application, then its checker.  The long campaign is in bench (README)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXED_SEED = 7  # the seed that found a member assigned its partitions still paused


def campaign(seed: int, tmp_path: Path) -> dict[str, object]:
    out = tmp_path / str(seed)
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--seed", str(seed),
         "--minutes", "1", "--every", "5", "--converge", "180", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    print(res.stdout[-6000:])
    assert res.returncode == 0, f"seed {seed}:\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    return json.loads(next(out.glob("*-chaos.json")).read_text())


@pytest.mark.parametrize("which", ["fixed", "random"])
def test_a_random_sequence_of_faults_loses_nothing(which: str, tmp_path: Path) -> None:
    # drawn here, not at collection: every pytest-xdist worker collects the same tests
    seed = FIXED_SEED if which == "fixed" else random.SystemRandom().randrange(10**6)
    print(f"fault campaign seed {seed} (bench/chaos.py --seed {seed} replays it)")
    result = campaign(seed, tmp_path)
    assert result["passed"] and all(result["checks"].values()), result["checks"]
    kinds = {k for k, n in result["faults_by_kind"].items() if n}
    if seed == FIXED_SEED:  # the random seed's draw may be narrower; this one is known
        assert len(result["faults"]) >= 8 and len(kinds) >= 5, result["faults_by_kind"]
