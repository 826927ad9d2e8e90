"""Progress of a long step on stderr: a rich bar on a terminal, plain lines otherwise.

One reporter for every command (backfill, verify, replay): a step has a label, a total
and a unit; workers call :meth:`Progress.advance` as units finish.  In plain mode a line
is printed at most every ``interval`` seconds, and a last one when a step that advanced
finishes.  Thread-safe; one step at a time.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO


def describe(label: str, done: int, total: int, unit: str, rate: float) -> str:
    """Pure. ``replay: 12,000/50,000 events (24%), 8,000 events/s, ETA 0:00:05``."""
    total = max(total, done)
    share = f" ({done / total:.0%})" if total else ""
    if done >= total:
        eta = _clock(0)
    elif rate > 0:
        eta = _clock((total - done) / rate)
    else:
        eta = "?"
    return f"{label}: {done:,}/{total:,} {unit}{share}, {rate:,.0f} {unit}/s, ETA {eta}"


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Reports one step at a time on ``stream`` (default stderr); silent when disabled."""

    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool = True, interval: float = 5.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interval = interval
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        self._label, self._unit = "", ""
        self._done = self._total = self._base = 0
        self._started = self._printed = time.monotonic()

    def start(self, label: str, total: int, unit: str, *, done: int = 0) -> None:
        """A new step of ``total`` units, ``done`` of them finished before (a resumed run)."""
        self.finish()
        with self._lock:
            self._label, self._unit = label, unit
            self._total, self._done, self._base = total, done, done
            self._started = self._printed = time.monotonic()
            if self.enabled and self.stream.isatty():
                self._bar = _rich_bar(self.stream, unit)
                self._bar.start()
                self._task = self._bar.add_task(label, total=max(total, 1), completed=done)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            self._total = max(self._total, self._done)
            if self._bar is not None:
                self._bar.update(self._task, completed=self._done, total=max(self._total, 1))
            elif self.enabled and self._label and time.monotonic() - self._printed >= self.interval:
                self._line()

    def finish(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(self._task, completed=self._done, total=max(self._total, 1))
                self._bar.stop()
                self._bar = self._task = None
            elif self.enabled and self._label and self._done > self._base:
                self._line()
            self._label = ""

    def _line(self) -> None:
        self._printed = now = time.monotonic()
        elapsed = now - self._started
        rate = (self._done - self._base) / elapsed if elapsed > 0 else 0.0
        text = describe(self._label, self._done, self._total, self._unit, rate)
        print(text, file=self.stream, flush=True)


def _rich_bar(stream: TextIO, unit: str) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed or 0
            return Text(f"{speed:,.0f} {unit}/s")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        Rate(""),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(file=stream),
        speed_estimate_period=10,
    )
