#!/usr/bin/env bash
# Create .venv-025 (Python 3.11+) with Chancy 0.25.1 and the pinned test
# dependencies of python/requirements-025.txt, and build the ringmetrics
# extension into it. Idempotent, like scripts/setup-python.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

py=${PYTHON:-python3}
venv=.venv-025
if [ ! -x $venv/bin/python ]; then
  echo "setup-python-025: creating $venv with $($py --version)"
  "$py" -m venv $venv
fi
stamp=$venv/.requirements.sha
want=$(sha256sum python/requirements-025.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup-python-025: installing pinned dependencies"
  $venv/bin/python -m pip install --quiet --upgrade pip==25.3
  $venv/bin/python -m pip install --quiet -r python/requirements-025.txt
  echo "$want" > "$stamp"
fi
echo "setup-python-025: building the extension (maturin develop --release)"
VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" \
  $venv/bin/maturin develop --release --quiet -m python/Cargo.toml
$venv/bin/python -c "
import importlib.metadata as m, ringmetrics.chancy
assert m.version('chancy') == '0.25.1', m.version('chancy')
print('setup-python-025: ringmetrics', ringmetrics.__version__, 'with chancy', m.version('chancy'))"
