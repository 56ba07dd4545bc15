#!/usr/bin/env bash
# The C ABI suite: the committed header is what cbindgen (pinned) generates;
# C tests under ASan + UBSan; the C++ example worker syncing into Chancy's
# tables, read back exactly by Chancy's own Python get_metrics.
#
#   tests/c/run.sh               # needs $RINGMETRICS_DSN
#   tests/c/run.sh --regenerate  # rewrite include/ringmetrics.h
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
CBINDGEN_VERSION=0.29.4

if ! cbindgen --version 2>/dev/null | grep -q " $CBINDGEN_VERSION\$"; then
  echo "c: installing cbindgen $CBINDGEN_VERSION"
  cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet
fi
generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
cbindgen --quiet --config ffi-c/cbindgen.toml --crate ringmetrics-ffi --output "$generated" ffi-c
if [ "${1:-}" = "--regenerate" ]; then
  cp "$generated" include/ringmetrics.h
  echo "c: regenerated include/ringmetrics.h"
  exit 0
fi
if ! diff -u include/ringmetrics.h "$generated"; then
  echo "c: include/ringmetrics.h is stale: run tests/c/run.sh --regenerate" >&2
  exit 1
fi
echo "c: include/ringmetrics.h matches cbindgen $CBINDGEN_VERSION"

: "${RINGMETRICS_DSN:?set RINGMETRICS_DSN to a PostgreSQL DSN}"
cargo build --release --locked -p ringmetrics-ffi --quiet
lib="$root/target/release/libringmetrics.a"
out="$root/target/c"
mkdir -p "$out"
san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
libs="$lib -lpthread -ldl -lm"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

psql_drop() {
  psql "$RINGMETRICS_DSN" -qAt -c "SELECT format('DROP TABLE IF EXISTS %I CASCADE;', tablename) FROM pg_tables
      WHERE schemaname = 'public' AND starts_with(tablename, '$1')" | psql "$RINGMETRICS_DSN" -q -v ON_ERROR_STOP=1 >/dev/null 2>&1
}

cc -std=c11 -Wall -Wextra -Wpedantic -Werror $san -I include tests/c/test_abi.c $libs -o "$out/test_abi"
psql_drop c_abi_
"$out/test_abi" "$RINGMETRICS_DSN"
psql_drop c_abi_

# The unsaved-bucket buffer from C: tiny `spill` and rings, failing
# flushes; rm_drops.unsaved counts exactly what was lost.
cc -std=c11 -Wall -Wextra -Wpedantic -Werror $san -I include tests/c/attack_spill.c $libs -o "$out/attack_spill"
prefix="c_spill_$$_"
"$out/attack_spill" "$RINGMETRICS_DSN" "$prefix"
psql_drop "$prefix"

# rm_read_metrics on catalogs Chancy's migrations would not make and on odd
# stored rows: clear errors or exact values, never RM_PANIC.
cc -std=c11 -Wall -Wextra -Wpedantic -Werror $san -I include tests/c/attack_catalog.c $libs -o "$out/attack_catalog"
prefix="c_catalog_$$_"
"$out/attack_catalog" "$RINGMETRICS_DSN" "$prefix"
psql_drop "$prefix"

# Connecting like libpq: TLS modes and redaction, against a throwaway TLS
# cluster (test CA, SCRAM user).
tlsdir=$(mktemp -d /tmp/ringmetrics-c-tls.XXXXXX)
tlsport=$(scripts/pg-tls.sh start "$tlsdir")
cc -std=c11 -Wall -Wextra -Wpedantic -Werror $san -I include tests/c/test_connect.c $libs -o "$out/test_connect"
"$out/test_connect" "$tlsport" "$tlsdir/ca.crt" || { scripts/pg-tls.sh stop "$tlsdir"; rm -rf "$tlsdir"; exit 1; }
scripts/pg-tls.sh stop "$tlsdir"; rm -rf "$tlsdir"

# The C++ worker records like a Chancy worker and syncs; a Python worker
# with Chancy's own plugin records the same keys; Chancy's get_metrics must
# read back the exact merged values.
c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror $san -I include tests/c/worker.cpp $libs -o "$out/worker"
prefix="cxx_$$_"
"$out/worker" "$RINGMETRICS_DSN" "$prefix" cxx-worker-1
python=${RINGMETRICS_PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || { scripts/setup-python.sh; python=$root/.venv/bin/python; }
"$python" tests/c/check_chancy.py "$RINGMETRICS_DSN" "$prefix"
psql_drop "$prefix"
echo "c: C++ worker end to end: ok"

# The same worker on Chancy 0.25's schema 1 (rm_syncer_start_v1), read back
# by Chancy 0.25.1's own plugin (.venv-025).
c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror $san -I include tests/c/worker025.cpp $libs -o "$out/worker025"
prefix="cxx025_$$_"
"$out/worker025" "$RINGMETRICS_DSN" "$prefix" cxx-025
[ -x "$root/.venv-025/bin/python" ] || scripts/setup-python-025.sh
"$root/.venv-025/bin/python" tests/c/check_chancy025.py "$RINGMETRICS_DSN" "$prefix"
psql_drop "$prefix"
echo "c: C++ worker on schema 1 end to end: ok"

# fork() while threads record: hundreds of children must record, snapshot
# and exit within a second each.
cc -std=c11 -Wall -Wextra -Wpedantic -Werror $san -I include tests/c/test_fork.c $libs -o "$out/test_fork"
"$out/test_fork" 300
