"""The per-question times as a chart: one HTML file with inline SVG, no dependency.

One panel per question (each on its own scale, labelled in milliseconds): the server
and client medians of both tables as bars, the interquartile range as a whisker.
"""

from __future__ import annotations

from html import escape

from replicator.assess.report import Assessment
from replicator.assess.stats import Spread
from replicator.assess.timing import Answered

BAR, GAP, LEFT, WIDTH = 16, 4, 150, 420
COLOURS = {"legacy": "#8c8c8c", "new": "#2b6cb0"}


def _bars(a: Answered) -> list[tuple[str, str, Spread]]:
    out = []
    for kind in ("server", "client"):
        for side, t in (("legacy", a.legacy), ("new", a.new)):
            if t is not None:
                out.append((f"{side} {kind}", side, getattr(t, kind)))
    return out


def panel(a: Answered, y: int) -> tuple[str, int]:
    """SVG of one question's panel at height ``y``; the SVG and the next free height."""
    bars = _bars(a)
    top = max((s.q3_ms for _, _, s in bars), default=1.0) or 1.0
    scale = WIDTH / top
    parts = [f'<text x="0" y="{y + 12}" font-weight="bold">{escape(a.name)}</text>']
    y += 18
    if not bars:
        parts.append(f'<text x="{LEFT}" y="{y + 12}">left out: {escape(a.left_out or "")}</text>')
        return "".join(parts), y + BAR + 2 * GAP
    for label, side, s in bars:
        w = max(1.0, s.median_ms * scale)
        mid = y + BAR / 2
        parts += [
            f'<text x="{LEFT - 6}" y="{mid + 4}" text-anchor="end">{escape(label)}</text>',
            f'<rect x="{LEFT}" y="{y}" width="{w:.1f}" height="{BAR}" fill="{COLOURS[side]}"'
            f' opacity="{1.0 if "server" in label else 0.55}"/>',
            f'<line x1="{LEFT + s.q1_ms * scale:.1f}" x2="{LEFT + s.q3_ms * scale:.1f}"'
            f' y1="{mid}" y2="{mid}" stroke="black"/>',
            f'<text x="{LEFT + w + 6:.1f}" y="{mid + 4}">{s.median_ms:.2f} ms</text>',
        ]
        y += BAR + GAP
    return "".join(parts), y + 2 * GAP


def html(a: Assessment) -> str:
    """The whole page."""
    y, panels = 10, []
    for q in a.questions:
        svg, y = panel(q, y)
        panels.append(svg)
    verdict = "".join(
        f"<li>{'n/a' if c.passed is None else 'PASS' if c.passed else 'FAIL'}"
        f" {escape(c.name)}: {escape(c.figure)}</li>"
        for c in a.criteria
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>replicator assess</title>"
        "<style>body{font-family:sans-serif}svg text{font-size:12px}</style></head><body>"
        f"<h1>{escape(a.legacy_table)} against {escape(a.new_table)}</h1>"
        "<p>Median per question, whisker: interquartile range. Server: EXPLAIN ANALYZE"
        " (planning and execution); client: rows fetched and decoded. Both tables"
        " interleaved.</p>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 120}" height="{y}">'
        + "".join(panels)
        + f"</svg><ul>{verdict}</ul></body></html>\n"
    )
