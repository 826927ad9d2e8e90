"""MkDocs hook: the reference tables, generated from the code at every build, so they
cannot drift from it.

A page asks for a table with a marker line, ``<!-- generated: NAME -->``; the build puts
the table there.  The sources are the code's own: the argparse parsers of every command
(``replicator.cli.main.build_parser``), the settings model (``replicator.settings``), the
metrics registry (``replicator.observe.metrics.Metrics``), the dead-letter reasons
(``replicator.errors.DEAD_LETTER_REASONS``), the exit codes (``replicator.cli.common``)
and the alert rules (``deploy/prometheus/alerts.yml``).  A marker no renderer knows fails
the build.
"""

from __future__ import annotations

import argparse
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def commands() -> str:
    from replicator.cli.main import build_parser

    return "\n".join(_command("replicator", build_parser(), level=1))


def _command(prog: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    """A command's section (its description, a table of its arguments), then its
    sub-commands' sections."""
    out = []
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if level > 1:
        out += [f"{'#' * min(level, 6)} `{prog}`\n", _cell(parser.description or "") + "\n"]
        rows = [_argument(a) for a in parser._actions if not _skipped(a)]
        if rows:
            out += ["| argument | default | meaning |", "| --- | --- | --- |", *rows, ""]
    for sub in subs:
        helps = {c.dest: c.help or "" for c in sub._choices_actions}
        for name, child in sub.choices.items():
            child.description = child.description or helps.get(name, "")
            out += _command(f"{prog} {name}", child, level + 1)
    return out


def _skipped(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))


def _argument(action: argparse.Action) -> str:
    names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
    if action.choices and not action.option_strings:
        names += " (" + ", ".join(f"`{c}`" for c in action.choices) + ")"
    flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
    default = action.default
    shown = "" if flag or default in (None, False, argparse.SUPPRESS) else f"`{default}`"
    return f"| {names} | {shown} | {_cell(action.help or '')} |"


def settings() -> str:
    from replicator.settings import Settings

    out = ["| environment variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        env = f"`REPLICATOR_{name.upper()}`"
        choices = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is typing.Literal:
            kind = " \\| ".join(f"`{c}`" for c in choices)
        else:
            shown = getattr(field.annotation, "__name__", None) or str(field.annotation)
            kind = "`" + _cell(shown.replace("pydantic.types.", "").replace("typing.", "")) + "`"
        if field.is_required():
            default = "(required)"
        else:
            value = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
            default = f"`{value}`"
        out.append(f"| {env} | {kind} | {_cell(default)} | {_cell(field.description or '')} |")
    return "\n".join(out)


def metrics() -> str:
    from replicator.observe.metrics import Health, Metrics

    registry = Metrics()
    registry.watch(Health(stall_after_s=120))  # what `run` registers as it starts
    declared = {
        getattr(c, "_name", ""): tuple(getattr(c, "_labelnames", ()))
        for c in registry.registry._collector_to_names
    }
    out = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for family in sorted(registry.registry.collect(), key=lambda f: f.name):
        labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
        labels = labels or sorted(declared.get(family.name, ()))
        name = family.name + ("_total" if family.type == "counter" else "")
        shown = ", ".join(f"`{label}`" for label in labels)
        out.append(f"| `{name}` | {family.type} | {shown} | {_cell(family.documentation)} |")
    return "\n".join(out)


def reasons() -> str:
    from replicator.errors import DEAD_LETTER_REASONS

    out = ["| reason (`dlq.reason`) | meaning |", "| --- | --- |"]
    out += [f"| `{name}` | {_cell(why)} |" for name, why in DEAD_LETTER_REASONS.items()]
    return "\n".join(out)


def exit_codes() -> str:
    from replicator.cli.common import EXIT_MEANINGS

    out = ["| exit code | meaning |", "| --- | --- |"]
    out += [f"| `{code}` | {_cell(why)} |" for code, why in sorted(EXIT_MEANINGS.items())]
    return "\n".join(out)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def runbook_page(alert: str) -> str:
    """``docs/runbooks/<alert in kebab case>.md``, relative to ``docs/``."""
    return "runbooks/" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", alert).lower() + ".md"


def alerts() -> str:
    out = ["| alert | severity | summary | runbook |", "| --- | --- | --- | --- |"]
    for rule in alert_rules():
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity", "")
        summary = _cell(rule.get("annotations", {}).get("summary", ""))
        out.append(f"| `{name}` | {severity} | {summary} | [runbook](../{runbook_page(name)}) |")
    return "\n".join(out)


RENDERERS: dict[str, Callable[[], str]] = {
    "commands": commands,
    "settings": settings,
    "metrics": metrics,
    "dead-letter-reasons": reasons,
    "exit-codes": exit_codes,
    "alerts": alerts,
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def render(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in RENDERERS:
            raise ValueError(f"{page.file.src_path}: no generated table named {name!r}")
        return RENDERERS[name]()

    return MARKER.sub(render, markdown)
