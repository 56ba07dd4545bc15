"""A worker killed with SIGKILL loses at most one sync interval of
observations; a cleanly stopped one (SIGTERM -> graceful stop) loses none."""

import os
import pathlib
import signal
import struct
import subprocess
import sys
import tempfile
import time

import psycopg
import pytest

HERE = pathlib.Path(__file__).resolve().parent
SYNC_INTERVAL = 1.0


def stored(dsn: str, prefix: str) -> float:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"""
            SELECT coalesce(sum(t), 0) FROM {prefix}metrics m
            JOIN {prefix}metric_definitions d ON d.id = m.metric_id
            CROSS JOIN LATERAL unnest(m.totals) AS t
            WHERE d.key = 'kill:test' AND m.resolution = 86400
            """
        ).fetchone()
        return float(row[0])


def run_child(dsn: str, prefix: str, how: signal.Signals, seconds: float) -> tuple[int, float]:
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(b"\0" * 8)
        counter = f.name
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen(
        [sys.executable, str(HERE / "kill_child.py"), dsn, prefix, counter],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        time.sleep(seconds)
        child.send_signal(how)
        child.wait(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    with open(counter, "rb") as f:
        recorded = struct.unpack("<q", f.read(8))[0]
    os.unlink(counter)
    return recorded, recorded / elapsed


@pytest.mark.timeout(180)
def test_sigkill_loses_at_most_one_sync_interval(cluster):
    recorded, rate = run_child(cluster.dsn, "killed_", signal.SIGKILL, 6.0)
    saved = stored(cluster.dsn, "killed_")
    lost = recorded - saved
    print(f"SIGKILL: recorded {recorded} at {rate:.0f}/s, saved {saved:.0f}, lost {lost:.0f}")
    assert recorded > 1000
    assert saved <= recorded, "more saved than recorded: double counting"
    # At most one sync interval of observations (plus the time one flush
    # takes to commit), never everything.
    assert lost <= rate * SYNC_INTERVAL * 1.5, (lost, rate)
    assert saved > 0


@pytest.mark.timeout(180)
def test_clean_stop_loses_nothing(cluster):
    recorded, rate = run_child(cluster.dsn, "stopped_", signal.SIGTERM, 4.0)
    saved = stored(cluster.dsn, "stopped_")
    print(f"clean stop: recorded {recorded} at {rate:.0f}/s, saved {saved:.0f}")
    assert recorded > 1000
    assert saved == recorded
