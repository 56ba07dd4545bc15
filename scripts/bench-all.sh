#!/usr/bin/env bash
# Rerun every side-by-side comparison in the project and rewrite
# BENCHMARKS.md from the results (medians and ratios, one run):
#   core record vs floor and peers, threads, snapshot, memory (criterion);
#   C ABI vs Rust; Python plugin vs Chancy's and native vs prometheus_client;
#   loop stall during a flush; flush vs Chancy's flush and the in-database floor.
# Uses the PostgreSQL in $RINGMETRICS_DSN (default: 127.0.0.1:5432, db test).
# Takes about 15 minutes on 2 cores.  scripts/bench-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RINGMETRICS_DSN=${RINGMETRICS_DSN:-host=127.0.0.1 port=5432 user=postgres dbname=test}
export RINGMETRICS_BENCH_DSN=$RINGMETRICS_DSN
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
scripts/setup-python.sh >/dev/null
crit="--warm-up-time 1 --measurement-time 3"
echo "bench-all: core (criterion)"
cargo bench -q --locked -p ringmetrics-benches --bench record -- $crit >"$out/record.log" 2>&1
cargo bench -q --locked -p ringmetrics-benches --bench threads -- $crit >"$out/threads.log" 2>&1
cargo bench -q --locked -p ringmetrics-benches --bench memory >"$out/memory.md" 2>/dev/null
echo "bench-all: C ABI vs Rust"
tests/c/bench.sh >"$out/c.md"
tests/c/bench.sh --callgrind >"$out/c-callgrind.md"
echo "bench-all: Python"
.venv/bin/python python/benches/bench_record.py "$RINGMETRICS_DSN" >"$out/python.md"
echo "bench-all: flush"
RINGMETRICS_BENCH_RUNS=${RINGMETRICS_BENCH_RUNS:-21} cargo bench -q --locked -p ringmetrics-postgres --bench flush >"$out/flush.md" 2>/dev/null
echo "bench-all: connections and transactions of a worker"
.venv/bin/python python/benches/bench_connections.py "$RINGMETRICS_DSN" 45 >"$out/connections.md" 2>/dev/null
python3 scripts/bench_report.py "$out" >BENCHMARKS.md
echo "bench-all: BENCHMARKS.md rewritten"
