"""os.fork() while other threads record: each child records and snapshots the
series those threads were writing, then exits, within a second. Hundreds of
forks; a child still running after a second is killed and counted as hung."""

import os
import signal
import sys
import threading
import time

import pytest

from ringmetrics import Aggregator

pytestmark = [
    pytest.mark.timeout(120),
    # Python 3.12+ warns that forking a threaded process may deadlock: that
    # is what this test checks does not happen.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

FORKS = 200
KEYS = [("counter", "fork:counter"), ("gauge", "fork:gauge"), ("histogram", "fork:histogram")]


def child(agg, handles):
    """The child's work; its exit code says what failed (0: all of it worked)."""
    for i, (kind, key) in enumerate(KEYS):
        getattr(agg, {"counter": "increment_counter", "gauge": "record_gauge", "histogram": "record_histogram"}[kind])(
            key, 5
        )
        handles[i].record(5)
        buckets = agg.snapshot(key, "1min")
        if not buckets or buckets[-1][1] < 1:
            return 10 + i
    agg.increment_counter("fork:child", 1)
    if [b[2] for b in agg.snapshot("fork:child", "1min")] != [1.0]:
        return 20
    return 0


def test_children_forked_while_threads_record_record_snapshot_and_exit_within_a_second():
    agg = Aggregator(64)
    handles = [agg.handle(kind, key) for kind, key in KEYS]
    stop = threading.Event()

    def record(n):
        kind, key = KEYS[n % len(KEYS)]
        by_key = {"counter": agg.increment_counter, "gauge": agg.record_gauge, "histogram": agg.record_histogram}[kind]
        v = 1
        while not stop.is_set():
            by_key(key, v)
            for h in handles:
                h.record(v)
            v = v + 1 if v < 1000 else 1

    threads = [threading.Thread(target=record, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    hung, failed, slowest = [], [], 0.0
    # Hand the GIL over often: the forks land at more points of the
    # recorders' loops, and the parent waits less for its turn.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        for f in range(FORKS):
            time.sleep(0.0001 * (1 + f % 7))
            started = time.monotonic()
            pid = os.fork()
            if pid == 0:
                code = 99
                try:
                    code = child(agg, handles)
                finally:
                    os._exit(code)
            # A blocking wait (it releases the GIL); a timer kills a child
            # still running after a second.
            killed = []

            def kill(pid=pid, f=f, killed=killed):
                killed.append(f)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it exited just now
                    pass

            timer = threading.Timer(1.0, kill)
            timer.start()
            _, status = os.waitpid(pid, 0)
            timer.cancel()
            if killed:
                hung.append(f)
                continue
            slowest = max(slowest, time.monotonic() - started)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                failed.append((f, os.WEXITSTATUS(status)))
            elif os.WIFSIGNALED(status) and status != 0:
                failed.append((f, -os.WTERMSIG(status)))
    finally:
        sys.setswitchinterval(switch)
        stop.set()
        for t in threads:
            t.join()
    assert not hung, f"{len(hung)} of {FORKS} children still ran after 1 s (forks {hung[:10]}...)"
    assert not failed, f"children failed (fork, exit code): {failed[:10]}"
    assert slowest < 1.0
    # The parent's series are intact too.
    assert agg.snapshot("fork:counter", "1min")[-1][1] > 0


def syncer_child(agg, syncer, dsn, prefix):
    """In a forked child: the parent's syncer fails at once (its thread is
    the parent's), the inherited aggregator records and reads but cannot
    be saved again (the parent saves it), and dropping the syncer does not
    wait. Exit code 0 when all of that holds."""
    started = time.monotonic()
    try:
        syncer.flush(timeout=10)
        return 1
    except ValueError as e:
        if "fork" not in str(e):
            return 2
    if syncer.status()["running"]:
        return 3
    agg.increment_counter("fork:saved", 1)
    if agg.snapshot("fork:saved", "1min")[-1][1] != 2:
        return 4
    try:
        agg.start_syncer(dsn, prefix=prefix, interval=3600)
        return 5
    except ValueError as e:
        if "fork" not in str(e):
            return 6
    fresh = Aggregator(4)
    fresh.increment_counter("fork:child", 1)
    child_syncer = fresh.start_syncer(dsn, prefix=prefix, worker_id="child", interval=None)
    child_syncer.flush(timeout=30)
    child_syncer.stop(timeout=30)
    del syncer
    return 0 if time.monotonic() - started < 10 else 7


def test_a_syncer_in_a_forked_child_fails_at_once_and_the_child_can_start_its_own(dsn, prefix):
    from ringmetrics import read_metrics

    agg = Aggregator(8)
    agg.increment_counter("fork:saved", 1)
    syncer = agg.start_syncer(dsn, prefix=prefix, worker_id="parent", interval=3600)
    syncer.flush(timeout=30)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = syncer_child(agg, syncer, dsn, prefix)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    syncer.stop(timeout=30)
    now = int(time.time())
    series = read_metrics(dsn, prefix=prefix, resolution="1day", start=now - now % 86400, end=now - now % 86400 + 86400)
    totals = {key: sum(p[2] for p in points) for key, _, _, points in series}
    assert totals == {"fork:saved": 1.0, "fork:child": 1.0}, "the child's copy is never saved twice"
