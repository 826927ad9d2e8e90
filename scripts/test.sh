#!/usr/bin/env bash
# The whole test suite: lint, unit tests, and integration tests against the real
# local stack (started and stopped by the test fixtures on free ports).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check replicator tests
.venv/bin/python -m pytest "$@"
