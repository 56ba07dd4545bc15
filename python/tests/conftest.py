"""Fixtures: a real PostgreSQL (``RINGMETRICS_DSN``, else a throwaway
cluster), unique table prefixes (dropped afterwards), real Chancy apps."""

import os
import pathlib
import subprocess
import sys
import tempfile
import uuid

import psycopg
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def dsn():
    if env := os.environ.get("RINGMETRICS_DSN"):
        yield env
        return
    d = tempfile.mkdtemp(prefix="ringmetrics-pytest-")
    os.chmod(d, 0o777)
    out = subprocess.check_output([str(ROOT / "scripts/pg-throwaway.sh"), "start", d], text=True)
    try:
        yield out.strip()
    finally:
        subprocess.run([str(ROOT / "scripts/pg-throwaway.sh"), "stop", d], check=False)
        subprocess.run(["rm", "-rf", d], check=False)


@pytest.fixture
def prefix(dsn):
    p = f"t_{uuid.uuid4().hex[:10]}_"
    yield p
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND starts_with(tablename, %s)", [p]
        ).fetchall()
        for (t,) in tables:
            conn.execute(f'DROP TABLE IF EXISTS "{t}" CASCADE')
