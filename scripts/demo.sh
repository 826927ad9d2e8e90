#!/usr/bin/env bash
# The main job on the local stack: PostgreSQL + tansu + Kafka Connect/Debezium as
# local processes, sample legacy rows, and `replicator run` replicating them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
R=.venv/bin/replicator

$R stack up
export REPLICATOR_ENV_FILE=.replicator/stack/stack.env  # named: no command reads it unasked
$R sample --rows "${DEMO_ROWS:-20000}" --start "$(date +%s)"
echo "--- replicating (stops after 10 s without new events; Ctrl-C stops it too)" >&2
$R run --log-format human --exit-when-idle 10
set -a; . .replicator/stack/stack.env; set +a
src=$(psql "$REPLICATOR_SOURCE_DSN" -Atc "SELECT count(*) FROM workflow_processes")
dst=$(psql "$REPLICATOR_TARGET_DSN" -Atc "SELECT count(*) FROM workflow_runs")
echo "workflow_processes: $src rows; workflow_runs: $dst rows"
echo "The stack keeps running: 'REPLICATOR_ENV_FILE=$REPLICATOR_ENV_FILE $R run' streams new changes; '$R stack down' stops it."
[ "$src" = "$dst" ]
