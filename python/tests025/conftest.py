"""Fixtures for the Chancy 0.25 suite: a fresh database per test (0.25's
core migration hard-codes a constraint name, so two prefixes cannot share
one database), dropped afterwards."""

import datetime
import os
import pathlib
import subprocess
import sys
import tempfile
import types
import uuid

import psycopg
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def server():
    """A libpq DSN of the server (``RINGMETRICS_DSN``, else a throwaway
    cluster); tests make their own databases on it."""
    if env := os.environ.get("RINGMETRICS_DSN"):
        yield env
        return
    d = tempfile.mkdtemp(prefix="ringmetrics-pytest025-")
    os.chmod(d, 0o777)
    out = subprocess.check_output([str(ROOT / "scripts/pg-throwaway.sh"), "start", d], text=True)
    try:
        yield out.strip()
    finally:
        subprocess.run([str(ROOT / "scripts/pg-throwaway.sh"), "stop", d], check=False)
        subprocess.run(["rm", "-rf", d], check=False)


def _in(server: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(server, dbname=dbname)


@pytest.fixture
def make_db(server):
    """Create databases on demand (``make_db()`` -> DSN); all are dropped
    afterwards."""
    made = []

    def make() -> str:
        name = f"rm025_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_in(server, "postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return _in(server, name)

    yield make
    with psycopg.connect(_in(server, "postgres"), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(make_db):
    return make_db()


@pytest.fixture
def freeze025(monkeypatch):
    """Drive Chancy 0.25's own plugin's clock (it calls
    ``datetime.datetime.now(datetime.timezone.utc)``): returns a setter."""
    from chancy.plugins.metrics import metrics as m025

    now = {"t": None}

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return now["t"] if now["t"] is not None else datetime.datetime.now(tz)

    shim = types.SimpleNamespace(datetime=Frozen, timezone=datetime.timezone, timedelta=datetime.timedelta)
    monkeypatch.setattr(m025, "datetime", shim)

    def set_time(seconds: float) -> None:
        now["t"] = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)

    return set_time
