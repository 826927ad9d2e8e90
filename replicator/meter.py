"""Progress of a long step on stderr: a rich bar on a terminal, a plain line every few
seconds otherwise, nothing when disabled.  Thread-safe; one step at a time."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO


def describe(label: str, done: int, total: int, unit: str, seconds: float) -> str:
    """Pure. ``replay: 12,000/50,000 events (24%), 8,000 events/s, ETA 0:00:05``."""
    rate = done / seconds if seconds > 0 else 0.0
    share = f" ({done / total:.0%})" if total else ""
    if done >= total:
        eta = "0:00:00"
    elif rate > 0:
        left = round((total - done) / rate)
        eta = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
    else:
        eta = "?"
    return f"{label}: {done:,}/{total:,} {unit}{share}, {rate:,.0f} {unit}/s, ETA {eta}"


class Meter:
    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool = True, interval: float = 5.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interval = interval
        self._lock = threading.Lock()
        self._rich: Any = None
        self._task: Any = None
        self._label, self._unit = "", ""
        self._done = self._total = 0
        self._started = self._printed = time.monotonic()

    def start(self, label: str, total: int, unit: str) -> None:
        self.finish()
        with self._lock:
            self._label, self._unit, self._total, self._done = label, unit, total, 0
            self._started = self._printed = time.monotonic()
            if not self.enabled:
                return
            if self.stream.isatty():
                self._rich = _rich_bar(self.stream, unit)
                self._rich.start()
                self._task = self._rich.add_task(label, total=max(total, 1))

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            if self._done > self._total:
                self._total = self._done
            if self._rich is not None:
                self._rich.update(self._task, completed=self._done, total=max(self._total, 1))
            elif self.enabled and self._label and time.monotonic() - self._printed >= self.interval:
                self._line()

    def finish(self) -> None:
        with self._lock:
            if self._rich is not None:
                self._rich.update(self._task, completed=self._done, total=max(self._total, 1))
                self._rich.stop()
                self._rich = self._task = None
            elif self.enabled and self._label and time.monotonic() - self._started >= self.interval:
                self._line()  # a long step ends with its totals; a short one says nothing
            self._label = ""

    def _line(self) -> None:
        self._printed = now = time.monotonic()
        text = describe(self._label, self._done, self._total, self._unit, now - self._started)
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
