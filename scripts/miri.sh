#!/usr/bin/env bash
# Miri over the core's unsafe code: the registry's key arena (raw copies,
# `UnsafeCell` bytes published with release/acquire), the zeroed allocation
# of accumulators and ring slots, the 128-bit gauge pair, the clock's
# portable path, and the record / rollover protocol under Miri's data-race
# detector. A bounded subset (Miri runs ~1000x slower than native); exits
# non-zero on any undefined behaviour or test failure. See RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
limit=${RINGMETRICS_MIRI_SECONDS:-240} # per step, a backstop

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^miri'; then
    rustup component add --toolchain nightly miri rust-src
fi
cargo +nightly miri setup

# The system clock reads the real time: Miri needs isolation off for it.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
started=$(date +%s)
run() {
    echo "==> miri: $*"
    timeout --kill-after=10 "$limit" cargo +nightly miri test "$@"
}
# The core's own tests: registration, lookup, every kind, rollovers, refusals.
run -p ringmetrics --lib --test smoke
# Longest keys and units through the arena; threads racing to register the
# same keys and record (data-race detector on); the system clock.
run -p ringmetrics-tests --test fuzz_props -- --exact boundaries concurrent_record_key_counts_every_refusal
# RINGMETRICS_MIRI_FULL=1: also the model's ring wrap-around scenario (every
# ring wraps, thousands of rollovers: ~75 s more under Miri).
if [ "${RINGMETRICS_MIRI_FULL:-0}" = 1 ]; then
    run -p ringmetrics-tests --test model -- --exact wraps_around_every_ring
fi
echo "miri: passed in $(( $(date +%s) - started ))s"
