#!/usr/bin/env bash
# The demo (the README's first command): a real Chancy worker runs real jobs
# with ringmetrics' plugin against PostgreSQL, the metrics are read back
# through Chancy's API, next to the same run with Chancy's built-in plugin.
# Uses $RINGMETRICS_DSN, else an embedded throwaway PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh >/dev/null
if [ -z "${RINGMETRICS_DSN:-}" ]; then
  pgdir=$(mktemp -d /tmp/ringmetrics-demo.XXXXXX)
  trap 'scripts/pg-throwaway.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
  RINGMETRICS_DSN=$(scripts/pg-throwaway.sh start "$pgdir")
  echo "demo: using an embedded PostgreSQL ($RINGMETRICS_DSN)"
fi
PYTHONPATH=python/examples .venv/bin/python python/examples/demo.py "$RINGMETRICS_DSN"
echo
echo "The core alone, on a manual clock: cargo run --release -p ringmetrics --example demo"
