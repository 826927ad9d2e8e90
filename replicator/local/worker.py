"""The local stack's Kafka Connect worker (distributed mode, one worker) with Debezium.

The connector's ``${env:DBZ_PG_*}`` placeholders are resolved in the worker by
``EnvVarConfigProvider`` from the environment it is started with, so no connection
detail is written in the connector or readable through the REST API.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from replicator.errors import StackError
from replicator.local.binaries import connect_classpath
from replicator.local.processes import spawn

MARKER = "ConnectDistributed"

LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c{1})%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.connect.name = org.apache.kafka.connect.runtime.Worker
logger.connect.level = INFO
logger.debezium.name = io.debezium
logger.debezium.level = INFO
"""


def worker_properties(broker_port: int, rest_port: int) -> str:
    """Pure. The worker's config: JSON without schemas, its topics on the local broker."""
    lines = [
        f"bootstrap.servers=127.0.0.1:{broker_port}",
        "group.id=replicator-connect",
        "key.converter=org.apache.kafka.connect.json.JsonConverter",
        "value.converter=org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable=false",
        "value.converter.schemas.enable=false",
        "offset.storage.topic=_connect_offsets",
        "offset.storage.partitions=1",
        "config.storage.topic=_connect_configs",
        "status.storage.topic=_connect_status",
        "status.storage.partitions=1",
        "offset.storage.replication.factor=1",
        "config.storage.replication.factor=1",
        "status.storage.replication.factor=1",
        "offset.flush.interval.ms=1000",
        f"listeners=http://127.0.0.1:{rest_port}",
        "rest.advertised.host.name=127.0.0.1",
        f"rest.advertised.port={rest_port}",
        "plugin.discovery=service_load",
        "topic.creation.enable=true",
        "config.providers=env",
        "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider",
    ]
    return "\n".join(lines) + "\n"


def rest_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start_worker(
    conf_dir: Path,
    cache_dir: Path,
    broker_port: int,
    rest_port: int,
    logfile: Path,
    env: dict[str, str],
) -> int:
    """Write the worker's config into ``conf_dir`` and start it; its pid."""
    java = shutil.which("java")
    if java is None:
        raise StackError("kafka-connect: java not found; install Debian's openjdk-17-jre-headless")
    classpath = connect_classpath(cache_dir)
    conf_dir.mkdir(exist_ok=True)
    worker = conf_dir / "worker.properties"
    worker.write_text(worker_properties(broker_port, rest_port))
    log4j = conf_dir / "log4j2.properties"
    log4j.write_text(LOG4J2)
    return spawn(
        [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            f"org.apache.kafka.connect.cli.{MARKER}",
            str(worker),
        ],
        logfile,
        env=env,
    )
