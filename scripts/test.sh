#!/usr/bin/env bash
# Every test of the project, in one command (the README's second command;
# .ci/run calls it). Installs what it needs: the Python venv with pinned
# dependencies and the extension (maturin), cbindgen, cargo-fuzz, Miri. Uses
# $RINGMETRICS_DSN when set, else a throwaway PostgreSQL cluster in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)

step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

# One PostgreSQL for every suite (the soak tests start their own).
if [ -z "${RINGMETRICS_DSN:-}" ]; then
  pgdir=$(mktemp -d /tmp/ringmetrics-pg.XXXXXX)
  trap 'scripts/pg-throwaway.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
  step "starting a throwaway PostgreSQL in $pgdir"
  RINGMETRICS_DSN=$(scripts/pg-throwaway.sh start "$pgdir")
  export RINGMETRICS_PG_DIR="$pgdir"
fi
export RINGMETRICS_DSN

step "Python: venv with pinned dependencies, the extension built by maturin (release)"
scripts/setup-python.sh
export RINGMETRICS_PYTHON="$root/.venv/bin/python"

step "Rust: unit, property, stress, allocation and Postgres tests (release)"
cargo test --release --workspace --locked

step "Rust: loom models of the record/rollover protocol (bounded)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$root/target/loom" LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2} \
  cargo test --release -p ringmetrics --test loom --locked

step "C ABI: header is current, C tests under ASan/UBSan, C++ worker end to end"
tests/c/run.sh

step "Python: pytest against real Chancy and PostgreSQL"
.venv/bin/python -m pytest python/tests

step "Python: the Chancy 0.25.1 environment (.venv-025) and its suite (schema 1, 0.25's own plugin side by side)"
scripts/setup-python-025.sh
.venv-025/bin/python -m pytest python/tests025

step "Wheel: one abi3 wheel through auditwheel, installed in a fresh venv without cargo/rustc, plugin suite there"
scripts/test-wheel.sh

step "Soak and kill tests: a real Chancy worker through connection kills and server restarts (bounded)"
RINGMETRICS_SOAK_SECONDS=${RINGMETRICS_SOAK_SECONDS:-90} .venv/bin/python -m pytest -s tests/soak

step "Fuzz targets (bounded runs) and Miri over the core's unsafe code"
fuzz/run.sh "${RINGMETRICS_FUZZ_SECONDS:-15}"
scripts/miri.sh

step "all suites passed"
