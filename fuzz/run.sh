#!/usr/bin/env bash
# Build every fuzz target and run each for SECONDS (default 20), bounded and
# self-stopping (every target `cargo fuzz list` names: validation, config,
# record_sequence, c_abi); exits non-zero on the first crash (the reproducer is left in
# fuzz/artifacts/<target>/). The project's test command runs `fuzz/run.sh 15`.
#
# Needs the nightly toolchain and cargo-fuzz; installs cargo-fuzz (pinned)
# into ~/.cargo/bin when missing. Seeds: fuzz/seeds/<target>/ (committed,
# tiny); the growing corpus lives in fuzz/corpus/<target>/ (ignored). Every
# target in fuzz/Cargo.toml runs: validation, record_sequence, c_abi,
# c_abi_lengths (key/unit lengths up to SIZE_MAX) and c_abi_durations
# (timeouts and intervals as arbitrary doubles; it opens loopback connections
# that are refused, so it runs only tens of inputs a second).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
cargo_fuzz_version=0.13.2
export PATH="$HOME/.cargo/bin:$PATH"
# The fuzz build is sanitizer-instrumented: keep it out of any shared target
# directory the caller set up.
unset CARGO_TARGET_DIR

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q " $cargo_fuzz_version\$"; then
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

started=$(date +%s)
cargo +nightly fuzz build
echo "fuzz: built in $(( $(date +%s) - started ))s"

for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    echo "fuzz: $target for ${seconds}s"
    # -max_total_time stops libFuzzer; timeout is the backstop should it
    # hang; -timeout fails any single input that runs over 10 s.
    log="artifacts/$target.log"
    mkdir -p artifacts
    status=0
    timeout --kill-after=10 $(( seconds + 60 )) \
        cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target FAILED (exit $status); reproducer in fuzz/artifacts/$target/, log in $log" >&2
        exit "$status"
    fi
done
echo "fuzz: all targets passed in $(( $(date +%s) - started ))s (${seconds}s each)"
