"""CPU time of the machine's processes during a measurement, by part of the pipeline.

On a machine of two cores the replicator, PostgreSQL, the broker and Kafka Connect share
the same cores, so events/s is bounded by the CPU each event costs all of them together.
:class:`CpuMeter` reads ``/proc/<pid>/stat`` (user + system time) of every process at
each :meth:`CpuMeter.sample` and reports, for a window between two samples, the
seconds each part used.  A process that ended keeps its last reading.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_HZ = os.sysconf("SC_CLK_TCK")

#: the parts, in report order
PARTS = (
    "replicator",
    "PostgreSQL, the replicator's sessions",
    "PostgreSQL, the rest",
    "PostgreSQL WAL sender (Debezium's slot)",
    "broker",
    "Kafka Connect",
    "other",
)


def _read(pid: str) -> tuple[str, str, float] | None:
    """(command name, command line, CPU seconds) of ``pid``, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return comm, cmdline, (int(fields[11]) + int(fields[12])) / _HZ


def part_of(
    pid: int,
    comm: str,
    cmdline: str,
    replicator_pid: int | None,
    sessions: frozenset[int] | set[int] = frozenset(),
) -> str:
    """Pure. Which part of the pipeline a process is.  PostgreSQL's processes are split in
    three: the backends of the replicator's own sessions (``sessions``, their process ids:
    the SQL it runs, what A's backend is compared with), the WAL sender of Debezium's slot,
    and the rest (autovacuum, the checkpointer, the WAL writer, Debezium's and the bench's
    own queries)."""
    if pid == replicator_pid:
        return "replicator"
    if comm == "postgres":
        if "walsender" in cmdline:
            return PARTS[3]
        return PARTS[1] if pid in sessions else PARTS[2]
    if comm == "tansu":
        return "broker"
    if comm == "java":
        return "Kafka Connect"
    return "other"


class CpuMeter:
    """Samples every process's CPU time; :meth:`used` gives a window's seconds by part."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[int, float]]] = []
        #: process ids of the replicator's sessions' backends, as the caller learns them
        self.sessions: set[int] = set()
        self._who: dict[int, tuple[str, str]] = {}

    def sample(self) -> None:
        readings: dict[int, float] = dict(self.samples[-1][1]) if self.samples else {}
        for pid in os.listdir("/proc"):
            if pid.isdigit() and (read := _read(pid)) is not None:
                comm, cmdline, seconds = read
                readings[int(pid)] = seconds
                if cmdline or int(pid) not in self._who:  # an ended process has none
                    self._who[int(pid)] = (comm, cmdline)
        self.samples.append((time.time(), readings))

    def used(self, start: float, end: float, replicator_pid: int | None = None) -> dict[str, float]:
        """CPU seconds by part between the last sample at or before ``start`` (the first
        sample if none) and the first at or after ``end`` (the last if none)."""
        if not self.samples:
            return {}
        before = max((s for s in self.samples if s[0] <= start), default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= end), default=self.samples[-1])
        out = dict.fromkeys(PARTS, 0.0)
        for pid, seconds in after[1].items():
            comm, cmdline = self._who.get(pid, ("", ""))
            spent = seconds - before[1].get(pid, 0.0)
            out[part_of(pid, comm, cmdline, replicator_pid, self.sessions)] += max(0.0, spent)
        out["window_s"] = after[0] - before[0]
        return out


def per_event(used: dict[str, float], events: int) -> dict[str, float]:
    """Pure. Microseconds of CPU per event by part, their total, and the cores kept busy."""
    if not used or not events:
        return {}
    out = {part: used[part] / events * 1e6 for part in PARTS}
    out["total"] = sum(out.values())
    out["cores_busy"] = sum(used[p] for p in PARTS) / max(used["window_s"], 1e-9)
    return out
