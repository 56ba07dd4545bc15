#!/usr/bin/env bash
# Every test of the project, in one command (the README's second command;
# .ci/run calls it). Installs what it needs: the Python venv with pinned
# dependencies, maturin, cbindgen. Uses $RINGMETRICS_DSN when set, else a
# throwaway PostgreSQL cluster in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

# One PostgreSQL for every suite.
if [ -z "${RINGMETRICS_DSN:-}" ]; then
  pgdir=$(mktemp -d /tmp/ringmetrics-pg.XXXXXX)
  trap 'scripts/pg-throwaway.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
  step "starting a throwaway PostgreSQL in $pgdir"
  RINGMETRICS_DSN=$(scripts/pg-throwaway.sh start "$pgdir")
fi
export RINGMETRICS_DSN
# Tell the suites a cluster they may stop and restart (fault tests).
export RINGMETRICS_PG_DIR=${pgdir:-${RINGMETRICS_PG_DIR:-}}

step "Rust: unit, property, stress, allocation and Postgres tests (release)"
cargo test --release --workspace --locked

step "Rust: loom models of the record/rollover protocol (bounded)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$root/target/loom" LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2} \
  cargo test --release -p ringmetrics --test loom --locked

step "C ABI: header is current, C tests under ASan/UBSan, C++ worker"
tests/c/run.sh

step "Python: build the extension, run pytest against real Chancy"
scripts/setup-python.sh
export RINGMETRICS_PYTHON="$root/.venv/bin/python"
.venv/bin/python -m pytest python/tests

step "Soak and kill tests: a real Chancy worker through connection kills and server restarts (bounded)"
RINGMETRICS_SOAK_SECONDS=${RINGMETRICS_SOAK_SECONDS:-90} .venv/bin/python -m pytest -s tests/soak
