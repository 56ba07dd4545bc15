#!/usr/bin/env bash
# C ABI vs Rust record cost, measured side by side. Prints a Markdown table.
#
#   tests/c/bench.sh              # ns per call: medians of 5 interleaved rounds
#   tests/c/bench.sh --callgrind  # instructions per call (valgrind): exact, repeatable
#
# Three sides run the same loops: C through the ABI (tests/c/bench.c, static
# library, -O2); Rust calling the core (core/examples/bench_record.rs); and
# Rust calling the core with every argument the C call passes hidden from
# the optimizer (ffi-c/src/rust_bench.rs says why that is the fair floor).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -q -p ringmetrics-ffi --lib
cargo build --release --locked -q -p ringmetrics --example bench_record
mkdir -p target/c
cc -std=c11 -O2 -I include tests/c/bench.c target/release/libringmetrics.a -lpthread -ldl -lm -o target/c/bench
# The ffi crate's unit-test binary holds the opaque-argument Rust loops.
rust_test=$(cargo test --release --locked -p ringmetrics-ffi --lib --no-run 2>&1 |
  sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))$/\1/p' | tail -1)
[ -x "$rust_test" ] || { echo "bench: no test binary for ringmetrics-ffi" >&2; exit 1; }
opaque() { "$rust_test" --ignored --exact rust_bench::rust_bench --nocapture --test-threads 1 2>/dev/null | grep -o 'rust_opaque_[a-z]*_ns [0-9.]*'; }

if [ "${1:-}" = "--callgrind" ]; then
  # Instructions per call: (count(N calls) - count(0 calls)) / N, one loop at a time.
  n=100000
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | awk '/Collected :/ { print $4 }'; }
  irs() { RM_BENCH_N=$2 RM_BENCH_RUNS=1 RM_BENCH_ONLY=$1 ir "$rust_test" --ignored --exact rust_bench::rust_bench --test-threads 1; }
  per() { awk -v a="$1" -v b="$2" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / n }'; }
  printf '| record | Rust, arguments opaque (instructions) | C ABI (instructions) | C - Rust |\n|---|---:|---:|---:|\n'
  for which in handle key; do
    c=$(per "$(ir target/c/bench $n 1 $which)" "$(ir target/c/bench 0 1 $which)")
    r=$(per "$(irs $which $n)" "$(irs $which 0)")
    printf '| by %s | %s | %s | %s |\n' "$which" "$r" "$c" "$(awk "BEGIN { print $c - $r }")"
  done
  # The layout ffi-c/src/record.rs relies on: the core's record path and
  # registry lookup inlined into the exported functions, not called.
  for f in rm_record rm_record_key; do
    calls=$(objdump -d --no-show-raw-insn -C target/c/bench | awk -v f="<$f>:" '$2 == f, /^$/' |
      grep -cE 'call.*<ringmetrics::(aggregator::Aggregator::(record|record_inner|lookup_bytes)|registry::Registry::find)>' || true)
    printf '
%s: %s out-of-line call(s) to the core'"'"'s record path or lookup (0 expected)' "$f" "$calls"
  done
  echo
  exit 0
fi

# The machine may be shared: run the three sides in turn, 5 rounds, and
# take each one's median.
rounds=5
all=$(for _ in $(seq $rounds); do target/c/bench; target/release/examples/bench_record; opaque; done)
med() { printf '%s\n' "$all" | awk -v k="$1" '$1 == k { print $2 }' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
printf '| record | Rust (ns) | Rust, arguments opaque (ns) | C ABI (ns) | C - Rust (ns) | C - Rust, arguments opaque (ns) | goal |\n'
printf '|---|---:|---:|---:|---:|---:|---|\n'
for which in handle key; do
  r=$(med rust_${which}_ns) o=$(med rust_opaque_${which}_ns) c=$(med c_${which}_ns)
  goal=$([ $which = handle ] && echo "within 2 ns" || echo "within 10 ns")
  printf '| by %s | %s | %s | %s | %s | %s | %s |\n' "$which" "$r" "$o" "$c" "$(minus "$c" "$r")" "$(minus "$c" "$o")" "$goal"
done
printf '\nMedians of %d interleaved rounds, each the median of 7 x 5M calls.\n' "$rounds"
