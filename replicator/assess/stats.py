"""Medians and their spread, and changes said plainly (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def quantile(values: Sequence[float], p: float) -> float:
    """The ``p`` quantile (0..1), linear between the two nearest values."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    at = p * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


@dataclass(frozen=True, slots=True)
class Spread:
    """Milliseconds of ``runs`` runs: the median, the quartiles and the extremes."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(
            round(median(values), 4),
            round(quantile(values, 0.25), 4),
            round(quantile(values, 0.75), 4),
            round(min(values), 4),
            round(max(values), 4),
            len(values),
        )

    def overlaps(self, other: Spread) -> bool:
        """Whether the two interquartile ranges meet: a difference within the noise."""
        return self.q1_ms <= other.q3_ms and other.q1_ms <= self.q3_ms


def faster(old: float, new: float) -> str:
    """``new`` against ``old``, in time: "35% faster" / "20% slower"."""
    if old <= 0:
        return "not comparable"
    gain = 1 - new / old
    return f"{abs(gain):.0%} {'faster' if gain >= 0 else 'slower'}"


def smaller(old: float, new: float) -> str:
    """``new`` against ``old``, in bytes: "12% smaller" / "3% larger"."""
    if old <= 0:
        return "not comparable"
    gain = 1 - new / old
    return f"{abs(gain):.0%} {'smaller' if gain >= 0 else 'larger'}"
