"""Progress of a long copy on stderr: a rich bar on a terminal, plain lines otherwise.

Reporters are thread-safe: workers call :meth:`advance` after each committed unit.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def start(self, total_rows: int, done_rows: int, total_chunks: int, done_chunks: int) -> None:
        """``done_*``: finished before this run (a resumed backfill)."""

    def advance(self, rows: int) -> None:
        """One more chunk finished, with ``rows`` rows read."""

    def finish(self) -> None: ...


def describe(rows: int, total: int, chunks: int, total_chunks: int, rate: float) -> str:
    """``12,000/50,000 rows (24%), chunk 3/10, 8,000 rows/s, ETA 0:00:04`` (pure)."""
    total = max(total, rows)
    share = f" ({rows / total:.0%})" if total else ""
    eta = "?"
    if rows >= total:
        eta = _clock(0)
    elif rate > 0:
        eta = _clock((total - rows) / rate)
    return (
        f"{rows:,}/{total:,} rows{share}, chunk {chunks}/{total_chunks}, "
        f"{rate:,.0f} rows/s, ETA {eta}"
    )


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LineProgress:
    """A line at most every ``interval`` seconds, and one at the end."""

    def __init__(self, label: str, stream: TextIO, interval: float = 5.0) -> None:
        self.label, self.stream, self.interval = label, stream, interval
        self._lock = threading.Lock()
        self._rows = self._total = self._chunks = self._total_chunks = self._base = 0
        self._started = self._printed = time.monotonic()

    def start(self, total_rows: int, done_rows: int, total_chunks: int, done_chunks: int) -> None:
        self._total, self._rows, self._base = total_rows, done_rows, done_rows
        self._total_chunks, self._chunks = total_chunks, done_chunks
        self._started = self._printed = time.monotonic()
        self._print()

    def advance(self, rows: int) -> None:
        with self._lock:
            self._rows += rows
            self._chunks += 1
            if time.monotonic() - self._printed >= self.interval:
                self._print()

    def finish(self) -> None:
        with self._lock:
            self._print()

    def _print(self) -> None:
        self._printed = now = time.monotonic()
        elapsed = now - self._started
        rate = (self._rows - self._base) / elapsed if elapsed > 0 else 0.0
        text = describe(self._rows, self._total, self._chunks, self._total_chunks, rate)
        print(f"{self.label}: {text}", file=self.stream, flush=True)


class RichProgress:
    """rich's bar: rows done/total, rows/s, elapsed, ETA."""

    def __init__(self, label: str, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("rows {task.fields[rate]} ETA"),
            TimeRemainingColumn(),
            console=Console(file=stream),
            speed_estimate_period=10,
        )
        self._label = label
        self._lock = threading.Lock()
        self._task = None
        self._base = 0
        self._started = time.monotonic()

    def start(self, total_rows: int, done_rows: int, total_chunks: int, done_chunks: int) -> None:
        self._base, self._started = done_rows, time.monotonic()
        self._bar.start()
        self._task = self._bar.add_task(
            self._label, total=max(total_rows, done_rows), completed=done_rows, rate=""
        )

    def advance(self, rows: int) -> None:
        if self._task is None:
            return
        with self._lock:
            task = self._bar.tasks[self._task]
            done = task.completed + rows
            elapsed = time.monotonic() - self._started
            rate = f"{(done - self._base) / elapsed:,.0f} rows/s" if elapsed > 0 else ""
            total = max(task.total or 0, done)
            self._bar.update(self._task, completed=done, total=total, rate=rate)

    def finish(self) -> None:
        self._bar.stop()


class NoProgress:
    def start(self, total_rows: int, done_rows: int, total_chunks: int, done_chunks: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def finish(self) -> None:
        pass


def for_stream(label: str, stream: TextIO | None = None) -> Progress:
    """A rich bar when ``stream`` (default stderr) is a terminal, else plain lines."""
    stream = stream or sys.stderr
    if stream.isatty():
        return RichProgress(label, stream)
    return LineProgress(label, stream)
