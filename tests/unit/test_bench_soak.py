"""The soak's per-minute quantiles, read from two scrapes of a cumulative histogram."""

from __future__ import annotations

import math

from bench.soak import quantile

BEFORE = {0.1: 10.0, 0.5: 20.0, 1.0: 20.0, math.inf: 20.0}


def test_quantile_interpolates_within_the_minutes_own_bucket_counts() -> None:
    # this minute: 10 more at or below 0.1 s, 10 more in (0.5, 1]
    after = {0.1: 20.0, 0.5: 30.0, 1.0: 40.0, math.inf: 40.0}
    assert quantile(0.5, BEFORE, after) == 0.1  # the 10th of 20: the top of the first bucket
    assert quantile(0.75, BEFORE, after) == 0.75  # halfway into (0.5, 1]


def test_quantile_of_nothing_observed_is_none_and_inf_is_the_last_bound() -> None:
    assert quantile(0.99, BEFORE, dict(BEFORE)) is None
    after = {0.1: 10.0, 0.5: 20.0, 1.0: 20.0, math.inf: 30.0}  # all 10 beyond 1 s
    assert quantile(0.99, BEFORE, after) == 1.0
