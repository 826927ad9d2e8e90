"""Packs the repository's ``schemas/`` and ``connectors/`` into the wheel, as package data
under ``replicator/bundled/`` (read with importlib.resources: replicator/resources.py).
Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("schemas", "connectors")


class BuildWithResources(build_py):
    def run(self) -> None:
        super().run()
        for name in BUNDLED:
            target = Path(self.build_lib) / "replicator" / "bundled" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target)


setup(cmdclass={"build_py": BuildWithResources})
