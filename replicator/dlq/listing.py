"""``replicator dlq list|show``: what the dead-letter topic holds (pure: it formats).

Row contents are not printed by ``list``; ``show`` prints one payload, size-capped, on
explicit request."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from replicator.dlq.letters import DeadLetter

SAMPLE_KEYS = 3
SHOWN_PAYLOAD_BYTES = 64 * 1024

Outcomes = Mapping[tuple[int, int], str]  # (dlq partition, dlq offset) -> outcome of a redrive


@dataclass
class Group:
    """The dead letters of one reason."""

    reason: str
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    origins: dict[int, list[int]] = field(default_factory=dict)  # partition -> [min, max]
    sample_keys: list[str] = field(default_factory=list)
    redriven: int = 0  # re-driven for good: applied
    # resolved by a newer applied change of the row: decided before mapping (superseded),
    # or found by the order guard when applied (stale)
    superseded: int = 0
    failed: int = 0  # the last redrive failed again
    dismissed: int = 0  # `dlq dismiss`: fixed another way

    def add(self, letter: DeadLetter, outcome: str | None) -> None:
        self.count += 1
        stamp = letter.timestamp_ms
        if stamp is not None:
            self.first_ms = stamp if self.first_ms is None else min(self.first_ms, stamp)
            self.last_ms = stamp if self.last_ms is None else max(self.last_ms, stamp)
        _, partition, offset = letter.origin
        if partition is not None and offset is not None:
            lo_hi = self.origins.setdefault(partition, [offset, offset])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], offset), max(lo_hi[1], offset)
        if len(self.sample_keys) < SAMPLE_KEYS and letter.key_text not in self.sample_keys:
            self.sample_keys.append(letter.key_text)
        self.redriven += outcome == "applied"
        self.superseded += outcome in ("superseded", "stale")
        self.failed += outcome == "failed"
        self.dismissed += outcome == "dismissed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "count": self.count,
            "first": _time(self.first_ms),
            "last": _time(self.last_ms),
            "origin_offsets": {str(p): lo_hi for p, lo_hi in sorted(self.origins.items())},
            "sample_keys": self.sample_keys,
            "redriven": self.redriven,
            "superseded": self.superseded,
            "failed": self.failed,
            "dismissed": self.dismissed,
        }


def groups(letters: Iterable[DeadLetter], outcomes: Outcomes) -> list[Group]:
    """Pure. The letters by reason, the largest group first."""
    by_reason: dict[str, Group] = {}
    for letter in letters:
        group = by_reason.setdefault(letter.reason, Group(letter.reason))
        group.add(letter, outcomes.get((letter.partition, letter.offset)))
    return sorted(by_reason.values(), key=lambda g: (-g.count, g.reason))


def event_dict(letter: DeadLetter, outcome: str | None) -> dict[str, Any]:
    """Pure. One dead letter without its payload (``list --json``)."""
    topic, partition, offset = letter.origin
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "time": _time(letter.timestamp_ms),
        "reason": letter.reason,
        "error": letter.error,
        "origin": {"topic": topic, "partition": partition, "offset": offset},
        "key": letter.key_text,
        "value_bytes": letter.original_size,
        "redriven": outcome,
    }


def list_lines(topic: str, found: list[Group]) -> list[str]:
    """Pure. The groups for people."""
    if not found:
        return [f"{topic}: no dead letters"]
    total = sum(g.count for g in found)
    lines = [f"{topic}: {total} dead letters"]
    for g in found:
        origins = ", ".join(f"p{p} {lo}..{hi}" for p, (lo, hi) in sorted(g.origins.items()))
        lines.append(
            f"  {g.reason}: {g.count} ({g.redriven} re-driven, {g.superseded} superseded,"
            f" {g.failed} failed again, {g.dismissed} dismissed), {_time(g.first_ms)} .."
            f" {_time(g.last_ms)}, origin {origins or '?'}, keys {', '.join(g.sample_keys)}"
        )
    return lines


def show_dict(letter: DeadLetter, outcome: str | None) -> dict[str, Any]:
    """Pure. One dead letter with its headers and its payload, cut to 64 KiB."""
    out = event_dict(letter, outcome)
    out["headers"] = {k: (v.decode("utf-8", "replace") if v else v) for k, v in letter.headers}
    value = letter.value
    if value is None:
        out["value"] = None
    else:
        out["value"] = value[:SHOWN_PAYLOAD_BYTES].decode("utf-8", "replace")
        out["value_cut"] = len(value) > SHOWN_PAYLOAD_BYTES
    return out


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
