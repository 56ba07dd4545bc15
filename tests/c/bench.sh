#!/usr/bin/env bash
# C ABI vs Rust record cost, measured side by side in one run. Prints a
# Markdown table.   tests/c/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -q -p ringmetrics-ffi -p ringmetrics --example bench_record
mkdir -p target/c
cc -std=c11 -O2 -I include tests/c/bench.c target/release/libringmetrics.a -lpthread -ldl -lm -o target/c/bench
c=$(target/c/bench)
rust=$(target/release/examples/bench_record)
get() { printf '%s\n%s\n' "$c" "$rust" | awk -v k="$1" '$1 == k { print $2 }'; }
printf '| record | Rust (ns) | C ABI (ns) | C - Rust (ns) | goal |\n|---|---:|---:|---:|---|\n'
printf '| by handle | %s | %s | %.2f | within 2 ns |\n' "$(get rust_handle_ns)" "$(get c_handle_ns)" "$(awk "BEGIN { print $(get c_handle_ns) - $(get rust_handle_ns) }")"
printf '| by key | %s | %s | %.2f | within 10 ns |\n' "$(get rust_key_ns)" "$(get c_key_ns)" "$(awk "BEGIN { print $(get c_key_ns) - $(get rust_key_ns) }")"
