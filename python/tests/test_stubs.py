"""The shipped stubs match the native module (mypy's stubtest)."""

import pathlib
import subprocess
import sys

import ringmetrics


def test_stubtest_accepts_the_native_module():
    package = pathlib.Path(ringmetrics.__file__).parent
    assert (package / "_native.pyi").exists() and (package / "py.typed").exists()
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "ringmetrics._native", "--ignore-missing-stub"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
