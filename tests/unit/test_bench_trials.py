"""The bench's trials: the headline figure is the median trial's, and each ratio is taken
within one trial (its numerator and denominator measured back to back)."""

from __future__ import annotations

from typing import Any

from bench.run import cpu_ratios, medians, summarize, trial_ratios
from bench.stages import markdown as stages_markdown


def trial(a: float, run: float, c: float, mem: float) -> dict[str, Any]:
    return {
        "A_in_database": {"rows_per_s": a, "seconds": 1000 / a},
        "run_replicator": {"events_per_s": run, "peak_rss_mb": 90.0},
        "C_peer": {"events_per_s": c},
        "in_memory": {"rows_per_s": mem},
    }


def test_the_headline_of_each_figure_is_its_median_trial() -> None:
    trials = [trial(100, 40, 20, 50), trial(120, 60, 40, 30), trial(80, 50, 10, 70)]
    headline = medians(trials)
    assert headline["A_in_database"] is trials[0]["A_in_database"]  # 80 < 100 < 120
    assert headline["run_replicator"] is trials[2]["run_replicator"]  # 40 < 50 < 60
    assert headline["C_peer"] is trials[0]["C_peer"]  # 10 < 20 < 40
    assert headline["in_memory"] is trials[0]["in_memory"]
    two = medians(trials[:2])  # of an even count, the lower one
    assert two["A_in_database"] is trials[0]["A_in_database"]


def test_ratios_are_medians_of_each_trials_own_ratio() -> None:
    trials = [trial(100, 40, 20, 50), trial(120, 60, 40, 30), trial(80, 50, 10, 70)]
    assert trial_ratios(trials) == {
        "run/A": [0.4, 0.5, 0.625],
        "run/C": [2.0, 1.5, 5.0],
        "in_memory/A": [0.5, 0.25, 0.875],
    }
    results = {
        **medians(trials),
        "trials": trials,
        "B_bare_consumer": {"events_per_s": 100.0},
        "initial_load_snapshot": {"seconds": 20.0},
    }
    summary = summarize(results)
    assert summary["run/A"] == 0.5 and summary["run/A trials"] == [0.4, 0.5, 0.625]
    assert summary["run/C"] == 2.0  # not 2.5, the headline run over the headline C
    assert summary["in_memory/A"] == 0.5
    assert summary["run/B"] == 0.5


def test_cpu_figures_are_taken_within_each_trial() -> None:
    trials = [trial(100, 40, 20, 50), trial(120, 60, 40, 30), trial(80, 50, 10, 70)]
    for t, (own, sessions, rest, a_row) in zip(
        trials,
        [(20.0, 22.5, 7.5, 15.0), (24.0, 24.0, 12.0, 12.0), (22.0, 16.0, 4.0, 20.0)],
        strict=True,
    ):
        t["run_replicator"]["cpu_us_per_event"] = {
            "replicator": own,
            "PostgreSQL, the replicator's sessions": sessions,
            "PostgreSQL, the rest": rest,
        }
        t["A_in_database"]["backend_us_per_row"] = a_row
    assert cpu_ratios(trials) == {
        "replicator_us_per_event": [20.0, 24.0, 22.0],
        "pg_sessions/A": [1.5, 2.0, 0.8],
        "pg_backends/A": [2.0, 3.0, 1.0],
    }
    results = {
        **medians(trials),
        "trials": trials,
        "B_bare_consumer": {"events_per_s": 100.0},
        "initial_load_snapshot": {"seconds": 20.0},
    }
    summary = summarize(results)
    assert summary["replicator_us_per_event"] == 22.0
    assert summary["pg_backends/A"] == 2.0
    assert summary["pg_sessions/A"] == 1.5


def test_the_stage_table_sums_the_replicators_own_stages() -> None:
    costs = {
        "events": 1000,
        "us_per_event": {
            "decode": 4.0,
            "map": 5.0,
            "batch + fold": 1.0,
            "apply, client": 2.5,
            "apply, server": 24.0,
        },
    }
    text = "\n".join(stages_markdown(costs, 16.0))
    assert "| the replicator's stages together | 12.50 |" in text
    assert "(server / A 1.50)" in text
