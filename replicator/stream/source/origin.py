"""Whether a stored position still belongs to the topic it is about to be used on.

A position is an offset in ONE topic's log.  When the topic is deleted and created
again (a broker that restarts empty, a cluster restored, a topic re-created by hand),
Debezium re-snapshots into the new log, whose offsets mean something else: seeking to
the old position there skips every event below it, silently.  So before a partition is
positioned (:func:`starts`):

1. **Identity.**  Each stored position carries the Kafka topic id (a UUID the broker
   gives a topic at creation; a re-created topic gets a new one).  A position stored
   for another id is not used: the partition is read from its beginning.
2. **Bounds**, for positions stored before ids were recorded and for brokers without
   them: a position beyond the partition's exact end (``ends.probe_ends``) cannot
   belong to this log either, and is not used: read from the beginning.
3. **A gap**: a position below the oldest offset the broker still holds means events
   were removed (retention) before they were applied.  Nothing can re-read them, so
   the replicator stops with :class:`~replicator.errors.PositionGap` and says what to run.

Reading a log from its beginning again is safe: the sink's order guard skips every
change older than the version the target holds (a snapshot read never replaces a
streamed change of its generation), so only what the target lacks is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from replicator.errors import PositionGap
from replicator.events import PartitionPosition
from replicator.stream.source.ends import PartitionEnd


@dataclass(frozen=True, slots=True)
class TopicView:
    """What the broker says of the topic now: its id (None: the broker does not tell)
    and the exact ends of its partitions (empty: unknown)."""

    topic_id: str | None
    ends: Mapping[int, PartitionEnd] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Starts:
    """Where each partition starts (None: its beginning), and the stored positions that
    were set aside, ``{partition: (kind, why)}``; kind is ``topic_recreated``,
    ``beyond_end`` or ``gap_accepted``."""

    offsets: dict[int, int | None]
    reset: dict[int, tuple[str, str]]


def starts(
    partitions: Iterable[int],
    stored: Mapping[int, PartitionPosition],
    view: TopicView,
    *,
    accept_gap: bool = False,
) -> Starts:
    """Pure. The start of each partition from its stored position, checked against the
    topic as it is now (module docstring).  A gap raises :class:`PositionGap`, unless
    ``accept_gap`` (the operator repaired the target): then the partition starts at the
    oldest offset the broker holds."""
    offsets: dict[int, int | None] = {}
    reset: dict[int, tuple[str, str]] = {}
    gaps = []
    for p in sorted(partitions):
        position = stored.get(p)
        offsets[p] = None
        if position is None:
            continue
        end = view.ends.get(p)
        if position.topic_id and view.topic_id and position.topic_id != view.topic_id:
            reset[p] = (
                "topic_recreated",
                f"the topic was re-created (stored for topic id {position.topic_id},"
                f" now {view.topic_id}); reading the partition from its start",
            )
        elif end is not None and position.next_offset > end.end:
            reset[p] = (
                "beyond_end",
                f"stored offset {position.next_offset} is beyond the end ({end.end}):"
                " reading the partition from its start",
            )
        elif end is not None and position.next_offset < end.low:
            gap = f"offsets {position.next_offset}..{end.low - 1} are gone"
            if accept_gap:
                offsets[p] = end.low
                reset[p] = ("gap_accepted", f"{gap}; gap accepted, starting at {end.low}")
            else:
                gaps.append(f"partition {p}: {gap} (the oldest held is {end.low})")
        else:
            offsets[p] = position.next_offset
    if gaps:
        topic = next(iter(stored.values())).topic
        raise PositionGap(
            f"events of {topic} were removed by the broker before they were applied:"
            f" {'; '.join(gaps)}.  The target may lack their changes.  Repair it from the"
            " source (`replicator verify --repair`), then start `replicator run --accept-gap`"
            " once: it reads those partitions from the oldest event still held."
        )
    return Starts(offsets, reset)
