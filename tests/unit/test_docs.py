"""The documentation site (mkdocs.yml, docs/): it builds offline with ``--strict`` (a
broken link or a page missing from the navigation fails), its reference is generated
from the code and names every command, flag, setting, metric, dead-letter reason, exit
code and alert, every alert has a runbook, and the README reaches the cutover checklist,
the rollback and every runbook in two clicks."""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from replicator.cli.common import EXIT_MEANINGS
from replicator.cli.main import build_parser
from replicator.errors import DEAD_LETTER_REASONS
from replicator.observe.metrics import Health, Metrics
from replicator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "hooks"))
import reference  # noqa: E402  (docs/hooks/reference.py, the build's own hook)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    res = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def page(site: Path, path: str) -> str:
    return html.unescape((site / path / "index.html").read_text())


def parsers(
    prog: str, parser: argparse.ArgumentParser
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield f"{prog} {name}", child
                yield from parsers(f"{prog} {name}", child)


def test_every_command_and_flag_is_in_the_reference(site: Path) -> None:
    text = page(site, "reference/commands")
    found = list(parsers("replicator", build_parser()))
    assert len(found) >= 13
    for prog, parser in found:
        assert prog in text, prog
        for action in parser._actions:
            for option in action.option_strings:
                assert option in text, (prog, option)


def test_every_setting_with_its_variable_type_and_default_is_in_the_reference(site: Path) -> None:
    text = page(site, "reference/settings")
    for name, field in Settings.model_fields.items():
        row = re.search(rf"REPLICATOR_{name.upper()}</code></td>(.*?)</tr>", text, re.S)
        assert row, name
        if not field.is_required():
            default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
            assert str(default) in row.group(1), (name, default)


def test_every_metric_with_its_labels_is_in_the_reference(site: Path) -> None:
    text = page(site, "reference/metrics")
    metrics = Metrics()
    metrics.watch(Health(stall_after_s=1))
    families = list(metrics.registry.collect())
    assert len(families) >= 10
    for family in families:
        assert family.name in text, family.name
    assert "<code>reason</code>" in text and "replicator_unready" in text


def test_every_dead_letter_reason_and_exit_code_is_in_the_reference(site: Path) -> None:
    reasons = page(site, "reference/dead-letter-reasons")
    for reason, meaning in DEAD_LETTER_REASONS.items():
        assert reason in reasons and meaning.split("`")[0][:30] in reasons, reason
    codes = page(site, "reference/exit-codes")
    for code in EXIT_MEANINGS:
        assert f"<code>{code}</code>" in codes, code


def test_every_alert_is_in_the_reference_and_has_a_runbook_in_the_navigation(site: Path) -> None:
    nav = yaml.safe_load(
        (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1].join(["nav:", ""])
        if False
        else (ROOT / "mkdocs.yml").read_text()
    )["nav"]
    listed = set(re.findall(r"runbooks/[a-z-]+\.md", str(nav)))
    alerts = reference.alert_rules()
    assert len(alerts) >= 9
    text = page(site, "reference/alerts")
    for rule in alerts:
        name = rule["alert"]
        runbook = reference.runbook_page(name)
        assert name in text, name
        assert (DOCS / runbook).exists() and runbook in listed, runbook
        assert name in (DOCS / runbook).read_text().splitlines()[0], runbook
    for failure in ("lost-broker", "replication-slot-retains-wal", "rebalance-never-completes",
                    "stuck-lane", "interrupted-cutover"):  # fmt: skip
        assert f"runbooks/{failure}.md" in listed, failure


def links(markdown: Path) -> set[str]:
    return set(re.findall(r"\]\(([^)#\s]+)", markdown.read_text()))


def test_the_readme_reaches_the_checklist_the_rollback_and_every_runbook_in_two_clicks() -> None:
    first = {(ROOT / link).resolve() for link in links(ROOT / "README.md") if link.endswith(".md")}
    second = {
        (path.parent / link).resolve()
        for path in first
        if path.exists()
        for link in links(path)
        if link.endswith(".md")
    }
    reached = first | second
    wanted = [
        DOCS / "how-to" / "cutover-checklist.md",
        DOCS / "how-to" / "rollback-and-finalize.md",
    ]
    wanted += [DOCS / reference.runbook_page(rule["alert"]) for rule in reference.alert_rules()]
    for path in wanted:
        assert path.resolve() in reached, path.relative_to(ROOT)
