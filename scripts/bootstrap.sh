#!/usr/bin/env bash
# Install what a fresh Debian machine lacks (system packages, a virtualenv with the
# project and its dev tools). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v psql >/dev/null || need+=(postgresql-client-15)
[ -e /usr/share/postgresql/15/extension/hypopg.control ] || need+=(postgresql-15-hypopg)  # assess: hypothetical indexes
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
compgen -G "/usr/share/java/jetty9-server-9.4.*.jar" >/dev/null || need+=(libjetty9-java)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v promtool >/dev/null || need+=(prometheus)  # the alert rules' tests, a real Prometheus
command -v kubectl >/dev/null || need+=(kubernetes-client)  # renders the Kubernetes kit
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: apt-get install ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# every dependency from the lock file, each file checked against its hash (the local
# broker's wheel included), then the project itself
stamp=.venv/.installed-$(cat pyproject.toml requirements-dev.lock | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  echo "bootstrap: pip install --require-hashes -r requirements-dev.lock; pip install -e ." >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --require-hashes -r requirements-dev.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.installed-* && touch "$stamp"
fi
