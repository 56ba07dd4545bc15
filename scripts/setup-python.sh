#!/usr/bin/env bash
# Create .venv (Python 3.11+) with the pinned dependencies and build the
# ringmetrics extension into it with maturin (release, abi3). Idempotent:
# reinstalls dependencies only when python/requirements-dev.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup-python: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum python/requirements-dev.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup-python: installing pinned dependencies"
  .venv/bin/python -m pip install --quiet --upgrade pip==25.3
  .venv/bin/python -m pip install --quiet -r python/requirements-dev.txt
  echo "$want" > "$stamp"
fi
echo "setup-python: building the extension (maturin develop --release)"
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" \
  .venv/bin/maturin develop --release --quiet -m python/Cargo.toml
.venv/bin/python -c "import ringmetrics, chancy; print('setup-python: ringmetrics', ringmetrics.__version__, 'with chancy', chancy.__name__)"
