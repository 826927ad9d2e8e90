#!/usr/bin/env bash
# The whole test suite: lint, unit tests, and integration tests against the real
# local stack (started and stopped by the test fixtures on free ports), measured for
# line and branch coverage of replicator/, including the replicator processes the
# tests start (pyproject.toml, [tool.coverage.run]).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check replicator tests deploy bench docs
.venv/bin/mypy  # strict on replicator/ (pyproject.toml, [tool.mypy])
# the documentation site, offline: a broken link, an anchor or a page missing from the
# navigation fails the build (the reference pages are generated from the code)
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
rm -f .coverage .coverage.*
log=$(mktemp)
set +e
# two workers (most of an integration test is waiting on a stack), each with its own stacks;
# a file runs whole on one worker, in order (the cutover tests build on each other)
.venv/bin/coverage run -m pytest -n 2 --dist loadfile "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
.venv/bin/coverage combine -q || true
.venv/bin/coverage report --sort=cover || true
echo "pytest: $(grep -E '[0-9]+ (passed|failed|error)' "$log" | tail -n 1)"
rm -f "$log"
exit "$status"
