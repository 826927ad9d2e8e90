"""What ``replicator verify`` found, compared row by row, and how it is shown.

Pure: the row comparison that decides every reported difference, the report, its JSON
form for machines and its rich table for people.

The exit code says whether the target is the mapped source: 0 in sync, 1 not (drift), 2
could not tell.  A source row the mapping refuses (:class:`Unmappable`, dead-lettered by
the replicator) is not in sync either way, and is counted as drift, with its reason:

* the target holds a row for it: an older image, which the source no longer has (the row
  was changed to a value the mapping refuses, and its change was dead-lettered);
* the target has no row for it: the source has a row the target lacks, and its dead
  letter says why (``replicator dlq list``).

Neither is repaired by ``--repair``: there is no mapped image to write, and nothing is
written with a guessed value.  Fixing the source row (or the target's column, then
``replicator dlq redrive``) is what brings it in sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from replicator.clients.kafka import EVENT_MAX_BYTES
from replicator.mapping.columns import TARGET_COLUMNS

EXIT_IN_SYNC, EXIT_DRIFT, EXIT_UNVERIFIED = 0, 1, 2

Kind = Literal["missing", "extra", "different", "unmappable"]


@dataclass(frozen=True, slots=True)
class Unmappable:
    """A source row that :func:`~replicator.mapping.rows.map_to_tuple` refuses (dead-lettered
    by the replicator): it has no expected target row, and no target row agrees with it
    (module docstring)."""

    reason: str


#: A source row as the target should hold it: the mapped values, Unmappable, or None
#: (no such source row).
Image = tuple[Any, ...] | Unmappable | None


@dataclass(frozen=True, slots=True)
class KeyDiff:
    """How the target row of ``run_id`` differs from the mapped source row."""

    run_id: str
    kind: Kind
    columns: tuple[str, ...] = ()  # for "different": the target columns that differ
    reason: str = ""  # for "unmappable": why the source row cannot be mapped
    in_target: bool = False  # for "unmappable": the target holds a row for it (stale)

    @property
    def target_state(self) -> str:
        """For "unmappable": what the target holds for the row, in words."""
        return "older image" if self.in_target else "no row"


def compare(run_id: str, expected: Image, actual: tuple[Any, ...] | None) -> KeyDiff | None:
    """Pure. ``expected`` (the mapped source row) against ``actual`` (the target row, JSON
    columns as their exact text); None when they agree."""
    if isinstance(expected, Unmappable):
        return KeyDiff(run_id, "unmappable", reason=expected.reason, in_target=actual is not None)
    if expected is None:
        return None if actual is None else KeyDiff(run_id, "extra")
    if actual is None:
        return KeyDiff(run_id, "missing")
    columns = tuple(
        name
        for name, want, have in zip(TARGET_COLUMNS, expected, actual, strict=True)
        if want != have
    )
    return KeyDiff(run_id, "different", columns) if columns else None


def diff_rows(
    expected: Mapping[str, Image], actual: Mapping[str, tuple[Any, ...]]
) -> dict[str, KeyDiff]:
    """Pure. Every key of either side that differs."""
    out: dict[str, KeyDiff] = {}
    for run_id in expected.keys() | actual.keys():
        found = compare(run_id, expected.get(run_id), actual.get(run_id))
        if found is not None:
            out[run_id] = found
    return out


@dataclass
class RepairSummary:
    """What ``--repair`` did before verifying again."""

    from_source: int = 0  # missing and different rows written from the source
    deleted: int = 0  # extra target rows deleted, at a version (the source lacks them)
    kept_extra: int = 0  # extra rows that exist in the source after all (not deleted)
    converged: bool = False  # the repaired rows matched the source before the final verify
    seconds: float = 0.0
    # repaired rows still differing once the replicator applied everything the topic held
    unrepaired: list[str] = field(default_factory=list)


@dataclass
class Report:
    source_table: str
    target_table: str
    source_rows: int = 0
    target_rows: int = 0
    chunks: int = 0
    chunks_differing: int = 0
    suspects: int = 0  # keys that differed in the first comparison
    rechecks: int = 0  # re-comparison rounds after the replicator caught up
    drift: dict[str, KeyDiff] = field(default_factory=dict)  # confirmed differences
    # confirmed source rows the mapping refuses: not in sync either (module docstring)
    unmappable: dict[str, KeyDiff] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)  # still changing at every re-check
    # drifted rows whose change event is larger than the largest that flows (Connect skips
    # it): run_id -> the row's size as JSON; `--repair` writes them from the source
    too_large: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # why it could not verify
    # after a cutover: what is true (the source is then the archive, after_cutover.py) ...
    cut_over: str | None = None
    changed_since_cutover: int | None = None  # ... the rows written since (not compared)
    finalized: bool = False  # ... and the rollback window closed: nothing left to compare
    seconds: float = 0.0
    repair: RepairSummary | None = None

    def of_kind(self, kind: Kind) -> list[KeyDiff]:
        return sorted((d for d in self.drift.values() if d.kind == kind), key=_key)

    @property
    def status(self) -> str:
        if self.error is not None:
            return "unverified"
        if self.finalized:
            return "finalized"
        return "drift" if self.drift or self.unmappable else "in_sync"

    @property
    def exit_code(self) -> int:
        codes = {"in_sync": EXIT_IN_SYNC, "finalized": EXIT_IN_SYNC, "drift": EXIT_DRIFT}
        return codes.get(self.status, EXIT_UNVERIFIED)

    def to_dict(self, max_report: int = 20) -> dict[str, Any]:
        """The machine-readable report: totals, and the first ``max_report`` ids of each kind."""

        def ids(items: Sequence[KeyDiff]) -> dict[str, Any]:
            return {"total": len(items), "ids": [d.run_id for d in items[:max_report]]}

        different = self.of_kind("different")
        unmappable = sorted(self.unmappable.values(), key=_key)
        out: dict[str, Any] = {
            "status": self.status,
            "exit_code": self.exit_code,
            "confirmed": self.error is None,  # differences re-checked after the catch-up
            "source": {"table": self.source_table, "rows": self.source_rows},
            "target": {"table": self.target_table, "rows": self.target_rows},
            "chunks": {"total": self.chunks, "differing": self.chunks_differing},
            "suspects": self.suspects,
            "rechecks": self.rechecks,
            "missing": ids(self.of_kind("missing")),
            "extra": ids(self.of_kind("extra")),
            "different": {
                "total": len(different),
                "rows": [{"run_id": d.run_id, "columns": list(d.columns)} for d in different][
                    :max_report
                ],
            },
            "unmappable": {
                "total": len(unmappable),
                "rows": [
                    {"run_id": d.run_id, "reason": d.reason, "target": d.target_state}
                    for d in unmappable[:max_report]
                ],
            },
            "still_changing": {"total": len(self.busy), "ids": sorted(self.busy)[:max_report]},
            "too_large_for_the_stream": {
                "total": len(self.too_large),
                "rows": [{"run_id": k, "json_bytes": n} for k, n in sorted(self.too_large.items())][
                    :max_report
                ],
            },
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "cut_over": self.cut_over,
            "changed_since_cutover": self.changed_since_cutover,
        }
        if self.repair is not None:
            out["repair"] = {
                "deleted": self.repair.deleted,
                "from_source": self.repair.from_source,
                "kept_extra": self.repair.kept_extra,
                "converged": self.repair.converged,
                "seconds": round(self.repair.seconds, 3),
                "unrepaired": self.repair.unrepaired,
            }
        return out


def _key(d: KeyDiff) -> bytes:
    return d.run_id.encode("utf-8")  # COLLATE "C" order


def summary_lines(report: Report, max_report: int = 20) -> list[str]:
    """Pure. The report as plain lines (logs, non-terminals)."""
    d = report.to_dict(max_report)
    lines = [
        f"{report.source_table} ({report.source_rows:,} rows) vs {report.target_table}"
        f" ({report.target_rows:,} rows): {d['status'].replace('_', ' ')}"
        f" in {report.seconds:.1f}s; {report.chunks_differing}/{report.chunks} chunks differed,"
        f" {report.suspects} keys re-checked in {report.rechecks} round(s)"
    ]
    if report.error:
        lines.append(f"could not verify: {report.error}")
    if report.cut_over:
        lines.append(f"cut over: {report.cut_over}")
    for kind in ("missing", "extra"):
        if d[kind]["total"]:
            lines.append(f"{kind} in the target ({d[kind]['total']}): {_join(d[kind]['ids'])}")
    if d["different"]["total"]:
        lines.append(f"different ({d['different']['total']}):")
        lines += [f"  {r['run_id']}: {', '.join(r['columns'])}" for r in d["different"]["rows"]]
    if d["unmappable"]["total"]:
        lines.append(
            f"unmappable source rows, not in sync ({d['unmappable']['total']}): the mapping"
            " refuses them, the replicator dead-lettered their changes (`replicator dlq"
            " list`); fix the source row, or the target's column and `replicator dlq redrive`:"
        )
        lines += [
            f"  {r['run_id']}: {r['reason']} (target: {r['target']})"
            for r in d["unmappable"]["rows"]
        ]
    if d["still_changing"]["total"]:
        lines.append(
            f"still changing at every re-check ({d['still_changing']['total']}, not drift):"
            f" {_join(d['still_changing']['ids'])}"
        )
    if report.too_large:
        lines.append(
            f"too large for the stream ({len(report.too_large)}): their change events exceed"
            f" the largest that flows ({EVENT_MAX_BYTES:,} bytes), Kafka Connect skipped them;"
            " `replicator verify --repair` writes them from the source: "
            + _join(f"{k} ({n:,} bytes)" for k, n in sorted(report.too_large.items())[:20])
        )
    if report.repair is not None:
        r = report.repair
        lines.append(
            f"repair: {r.from_source} rows written from the source,"
            f" {r.deleted} extra rows deleted, {r.kept_extra} kept (present in the source),"
            f" {'converged' if r.converged else 'NOT converged'} in {r.seconds:.1f}s"
        )
        if r.unrepaired:
            lines.append(
                f"not repaired ({len(r.unrepaired)}): the replicator applied all the topic"
                " holds and they still differ (a change the target refuses: `replicator dlq"
                " list` says why): " + _join(r.unrepaired[:20])
            )
    return lines


def _join(ids: Iterable[str]) -> str:
    return ", ".join(ids)


def rich_table(report: Report, max_report: int = 20) -> Any:
    """The report as a rich renderable (a summary table, then the differing rows)."""
    from rich.console import Group
    from rich.table import Table

    d = report.to_dict(max_report)
    style = {"in_sync": "bold green", "drift": "bold red"}.get(d["status"], "bold yellow")
    head = Table(title=f"verify {report.source_table} -> {report.target_table}", show_header=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row("status", f"[{style}]{d['status'].replace('_', ' ')}[/]")
    if report.cut_over:
        head.add_row("after the cutover", report.cut_over)
    head.add_row("rows", f"source {report.source_rows:,} / target {report.target_rows:,}")
    if report.changed_since_cutover is not None:
        head.add_row(
            "written since",
            f"{report.changed_since_cutover:,} rows (the application's; a rollback copies them"
            " back; every other row compared)",
        )
    if report.finalized:
        return head
    if report.error:
        head.add_row("could not verify", f"[yellow]{report.error}[/]")
    head.add_row("chunks differing", f"{report.chunks_differing} of {report.chunks}")
    head.add_row("re-checked", f"{report.suspects} keys, {report.rechecks} round(s)")
    for kind in ("missing", "extra", "different", "unmappable", "still_changing"):
        head.add_row(kind.replace("_", " "), f"{d[kind]['total']:,}")
    head.add_row("time", f"{report.seconds:.1f}s")
    parts: list[Any] = [head]
    rows = Table(title=f"first {max_report} of each kind", show_lines=False)
    rows.add_column("run_id")
    rows.add_column("kind")
    rows.add_column("columns / reason")
    shown = 0
    for kind in ("missing", "extra"):
        for run_id in d[kind]["ids"]:
            rows.add_row(run_id, kind, "")
            shown += 1
    for r in d["different"]["rows"]:
        rows.add_row(r["run_id"], "different", ", ".join(r["columns"]))
        shown += 1
    for r in d["unmappable"]["rows"]:
        rows.add_row(r["run_id"], "unmappable", f"{r['reason']} (target: {r['target']})")
        shown += 1
    if shown:
        parts.append(rows)
    lines = summary_lines(report, max_report)
    parts += [line for line in lines if line.startswith("too large for the stream")]
    if report.repair is not None:
        parts += [line for line in lines if line.startswith(("repair:", "cannot be repaired"))]
    return Group(*parts)


def show(report: Report, *, as_json: bool, max_report: int = 20, stream: Any = None) -> None:
    """Print the report: JSON (machines) or a rich table (people) on ``stream`` (stdout)."""
    import json
    import sys

    stream = stream or sys.stdout
    if as_json:
        print(json.dumps(report.to_dict(max_report), indent=2), file=stream)
        return
    from rich.console import Console

    Console(file=stream).print(rich_table(report, max_report))
