"""The native module: recording, validation, snapshots, handles, drops,
time, and the syncer releasing the GIL."""

import gc
import socket
import threading
import time

import psycopg
import pytest

from ringmetrics import Aggregator, ManualClock, StorageError, cleanup, read_metrics

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


class Ticker:
    """A Python thread counting 1 ms sleeps while the body runs: if the body
    held the GIL, it could not count. `elapsed`: how long the body took."""

    def __enter__(self):
        self.ticks, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        self._started = time.monotonic()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.ticks += 1
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self._started
        self._stop.set()
        self._thread.join()


def test_counter_gauge_histogram_on_a_manual_clock():
    clock = ManualClock(T0 + 1)
    agg = Aggregator(16, clock=clock)
    agg.increment_counter("jobs", 1)
    agg.increment_counter("jobs", 2.5)
    agg.record_gauge("depth", 5)
    clock.advance(1)
    agg.record_gauge("depth", 3)
    agg.record_histogram("latency", 0.5, "seconds")
    agg.record_histogram("latency", 1.5, "seconds")
    clock.advance(60)
    agg.increment_counter("jobs", 4)
    assert [(b[0], b[1], b[2]) for b in agg.snapshot("jobs", "1min")] == [(T0, 2, 3.5), (T0 + 60, 1, 4.0)]
    assert [(b[0], b[2]) for b in agg.snapshot("jobs", "1day")] == [(T0, 7.5)]
    (g,) = agg.snapshot("depth", "5min")
    assert g[5] == 3.0 and g[6] == T0 + 2  # latest value and its time
    (h,) = agg.snapshot("latency", "1hour")
    assert h[1:5] == (2, 2.0, 0.5, 1.5)
    assert agg.snapshot("missing") == []
    assert agg.series() == [("jobs", "counter", "count"), ("depth", "gauge", "number"), ("latency", "histogram", "seconds")]
    assert clock.now() == T0 + 62


def test_gaps_stay_gaps():
    clock = ManualClock(T0)
    agg = Aggregator(4, clock=clock)
    agg.increment_counter("c", 1)
    clock.advance(180)
    agg.increment_counter("c", 1)
    assert [b[0] for b in agg.snapshot("c", "1min")] == [T0, T0 + 180]


def test_handles_record_without_lookup():
    clock = ManualClock(T0)
    agg = Aggregator(4, clock=clock)
    h = agg.handle("histogram", "job:x:execution_time", "seconds")
    assert (h.key, h.kind) == ("job:x:execution_time", "histogram")
    for v in (1, 2, 3):
        h.record(v)
    h.record_at(10, T0 - 120)  # late: its own minute
    assert [(b[0], b[1]) for b in agg.snapshot("job:x:execution_time", "1min")] == [(T0 - 120, 1), (T0, 3)]
    with pytest.raises(ValueError):
        agg.handle("counter", "job:x:execution_time")


@pytest.mark.parametrize(
    "key,value,unit,why,reason",
    [
        ("k", float("nan"), "count", "not finite", "non_finite_value"),
        ("k", float("inf"), "count", "not finite", "non_finite_value"),
        ("k", float("-inf"), "count", "not finite", "non_finite_value"),
        ("k", True, "count", "bool", "non_finite_value"),
        ("k", 10**400, "count", "finite number", "non_finite_value"),
        ("k", "1", "count", "finite number", "non_finite_value"),
        ("k", None, "count", "finite number", "non_finite_value"),
        ("", 1, "count", "empty", "invalid_key"),
        ("x" * 1025, 1, "count", "1024", "invalid_key"),
        ("é" * 513, 1, "count", "1024", "invalid_key"),
        ("a\x00b", 1, "count", "NUL", "invalid_key"),
        ("k", 1, "", "empty", "invalid_unit"),
        ("k", 1, "u" * 65, "64", "invalid_unit"),
        ("k", 1, "a\x00", "NUL", "invalid_unit"),
        (b"k", 1, "count", "str", "invalid_key"),
        ("k", 1, 5, "str", "invalid_unit"),
    ],
)
def test_invalid_input_is_refused_counted_and_poisons_nothing(key, value, unit, why, reason):
    agg = Aggregator(8)
    with pytest.raises(ValueError, match=why) if isinstance(key, str) and isinstance(unit, str) else pytest.raises(TypeError):
        agg.record("counter", key, value, unit)
    before = agg.drops()[reason]
    assert why in agg.try_record("counter", key, value, unit)
    drops = agg.drops()
    assert drops[reason] == before + 1, f"try_record counted under {reason}: {drops}"
    assert sum(v for v in drops.values() if isinstance(v, int)) >= 1
    # The aggregator still works and holds nothing from the refused call.
    agg.increment_counter("ok", 1)
    assert len(agg) == 1 and agg.snapshot("ok")[0][2] == 1.0


def test_boundaries_are_accepted():
    agg = Aggregator(8, key_bytes=8192)
    assert agg.try_record("counter", "x" * 1024, 1, "count") is None
    assert agg.try_record("counter", "é" * 512, 1, "u" * 64) is None
    assert agg.try_record("counter", "k", 10**15, "count") is None
    assert agg.try_record("gauge", "g", -0.0, "number") is None
    # Key space is fixed at construction: running out is a counted drop.
    small = Aggregator(8, key_bytes=16)
    assert "key_bytes" in small.try_record("counter", "x" * 20, 1, "count")
    assert small.drops()["capacity_exhausted"] == 1


def test_type_and_unit_conflicts_and_full_capacity():
    agg = Aggregator(2)
    agg.increment_counter("a", 1)
    assert "counter" in agg.try_record("gauge", "a", 1, "number")
    assert "count" in agg.try_record("counter", "a", 1, "seconds")
    agg.increment_counter("b", 1)
    assert "capacity" in agg.try_record("counter", "c", 1, "count")
    d = agg.drops()
    assert (d["conflict"], d["capacity_exhausted"]) == (2, 1)
    assert [b[2] for b in agg.snapshot("a")] == [1.0]


def test_overflowing_sum_is_refused():
    agg = Aggregator(2)
    agg.increment_counter("c", 1e308)
    assert "overflow" in agg.try_record("counter", "c", 1e308, "count")
    assert agg.snapshot("c")[0][2] == 1e308


def test_time_override_and_far_future():
    agg = Aggregator(4)
    agg.set_time_override(T0)
    assert agg.now() == T0
    agg.increment_counter("c", 1)
    assert agg.snapshot("c")[0][0] == T0
    assert "ahead of the clock" in agg.try_record("counter", "c", 1, "count", T0 + 3600)
    agg.set_time_override(None)
    assert abs(agg.now() - time.time()) < 5
    with pytest.raises(ValueError):
        Aggregator(4, clock=ManualClock(T0)).set_time_override(T0)


def test_invalid_config_names_the_field():
    with pytest.raises(ValueError, match="capacity"):
        Aggregator(0)
    with pytest.raises(ValueError, match="resolution"):
        Aggregator(4, buckets={"2min": 5})
    with pytest.raises(ValueError, match="buckets"):
        Aggregator(4, buckets={"1min": 0})


def test_syncer_round_trip_and_rust_read(dsn, prefix):
    clock = ManualClock(T0)
    agg = Aggregator(16, clock=clock)
    syncer = agg.start_syncer(dsn, prefix=prefix, worker_id="py-1", interval=3600)
    agg.increment_counter("jobs:done", 3)
    agg.record_histogram("jobs:time", 2, "seconds")
    report = syncer.flush()
    assert report["rows_written"] == 8 and report["definitions_created"] == 2
    assert syncer.flush()["rows_written"] == 0
    status = syncer.status()
    assert status["running"] and status["flushes"] == 2 and status["last_error"] is None
    series = read_metrics(dsn, prefix=prefix, metric_prefix="jobs", resolution="1min", start=T0, end=T0 + 60)
    assert [(k, kind, unit, [p[5] for p in pts]) for k, kind, unit, pts in series] == [
        ("jobs:done", "counter", "count", [3.0]),
        ("jobs:time", "histogram", "seconds", [2.0]),
    ]
    assert cleanup(dsn, prefix=prefix, retention_seconds=[3600, 86400, 604800, 7776000]) == 8  # 2026-01-01 is long gone
    syncer.stop()
    with pytest.raises(StorageError, match="stopped"):
        syncer.flush()


def test_flush_releases_the_gil():
    # A server that accepts connections and never answers: the flush blocks
    # in the startup handshake until its connect timeout.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        agg = Aggregator(4)
        agg.increment_counter("c", 1)
        syncer = agg.start_syncer(
            f"host=127.0.0.1 port={port} user=x password=secret connect_timeout=2", interval=3600
        )
        with Ticker() as ticker:
            with pytest.raises(StorageError) as err:
                syncer.flush(timeout=10)
        assert ticker.elapsed > 1.0
        assert ticker.ticks > 200, "the GIL was held while flushing"
        assert "secret" not in str(err.value)
        assert syncer.status()["failures"] == 1 and "secret" not in syncer.status()["last_error"]
        # A timeout shorter than the connect timeout: TimeoutError.
        with pytest.raises(TimeoutError):
            syncer.flush(timeout=0.2)


def test_bad_dsn_and_prefix_are_value_errors():
    agg = Aggregator(4)
    with pytest.raises(ValueError, match="DSN"):
        agg.start_syncer("host=x nonsense_option=1")
    with pytest.raises(ValueError, match="prefix"):
        agg.start_syncer("host=127.0.0.1", prefix="bad\x00prefix")
    with pytest.raises(ValueError, match="UUID"):
        agg.start_syncer("host=127.0.0.1", session_id="nope")


def test_record_methods_take_positional_and_keyword_arguments():
    # The record methods are hand-written entry points with a fast path for
    # positional calls; every other call shape still works as a Python
    # signature would.
    clock = ManualClock(T0)
    agg = Aggregator(8, clock=clock)

    class Key(str):
        pass

    agg.increment_counter("c", 1)
    agg.increment_counter(key="c", value=2)
    agg.increment_counter("c", 3.5, "count")
    agg.increment_counter(Key("c"), 4, unit="count")
    agg.increment_counter("c", 2**70)  # an int past i64: the slow path
    assert agg.snapshot("c")[0][1:3] == (5, 10.5 + 2**70)
    agg.record_gauge("g", 7, unit="items")
    agg.record_histogram("h", 0.5, "seconds")
    assert agg.series()[1:] == [("g", "gauge", "items"), ("h", "histogram", "seconds")]
    h = agg.handle("counter", "c")
    h.record(1)
    h.record(value=1.5)
    assert agg.snapshot("c")[0][1] == 7
    for call, error, match in [
        (lambda: agg.increment_counter("c"), TypeError, "missing required argument 'value'"),
        (lambda: agg.increment_counter("c", 1, "count", 4), TypeError, "at most 3 positional"),
        (lambda: agg.increment_counter("c", 1, units="count"), TypeError, "unexpected keyword argument 'units'"),
        (lambda: agg.increment_counter("c", key="c", value=1), TypeError, "multiple values for argument 'key'"),
        (lambda: agg.increment_counter(b"c", 1), TypeError, "argument 'key'"),
        (lambda: agg.record_gauge("g", 1, 5), TypeError, "argument 'unit'"),
        (lambda: agg.increment_counter("c", True), ValueError, "bool"),
        (lambda: agg.increment_counter("c", "1"), ValueError, "finite number"),
        (lambda: agg.record_histogram("h", float("nan"), "seconds"), ValueError, "finite"),
        (lambda: agg.increment_counter("c", 1, "seconds"), ValueError, "count"),
        (lambda: h.record(None), ValueError, "finite number"),
        (lambda: h.record(), TypeError, "missing required argument 'value'"),
        (lambda: Aggregator.increment_counter(h, "c", 1), TypeError, "doesn't apply"),
    ]:
        with pytest.raises(error, match=match):
            call()
    assert agg.snapshot("c")[0][1] == 7, "refused calls record nothing"
    assert agg.drops()["conflict"] == 1


def silent_server():
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, f"host=127.0.0.1 port={server.getsockname()[1]} user=x connect_timeout=1"


def test_flush_in_background_signals_a_socket_and_reports_like_flush(dsn, prefix):
    import select

    agg = Aggregator(4, clock=ManualClock(T0))
    agg.increment_counter("c", 1)
    syncer = agg.start_syncer(dsn, prefix=prefix, interval=3600)
    pending = syncer.flush_in_background(30)
    readable, _, _ = select.select([pending.fileno()], [], [], 30)
    assert readable and pending.done()
    assert pending.result()["rows_written"] == 4
    assert pending.result()["rows_written"] == 4, "the result can be read again"
    syncer.stop()
    stopped = syncer.flush_in_background()
    select.select([stopped.fileno()], [], [], 5)
    with pytest.raises(StorageError, match="stopped"):
        stopped.result()


def test_status_and_background_flushes_never_wait_on_a_flush_in_progress():
    import select

    server, silent = silent_server()
    with server:
        agg = Aggregator(4)
        agg.increment_counter("c", 1)
        syncer = agg.start_syncer(silent, interval=3600)
        blocking = threading.Thread(target=lambda: pytest.raises(StorageError, syncer.flush, timeout=10))
        blocking.start()
        time.sleep(0.2)  # the flush now waits on the silent server
        started = time.monotonic()
        assert syncer.status()["running"]
        pending = syncer.flush_in_background(10)
        assert time.monotonic() - started < 0.5, "status() and flush_in_background() returned at once"
        assert not pending.done()
        with pytest.raises(RuntimeError, match="still running"):
            pending.result()
        # stop() waits for flushes in progress elsewhere, up to its timeout.
        with pytest.raises(TimeoutError):
            syncer.stop(timeout=0.2)
        assert syncer.status()["running"], "a stop that timed out keeps the syncer"
        readable, _, _ = select.select([pending.fileno()], [], [], 60)
        assert readable
        with pytest.raises((StorageError, TimeoutError)):  # queued behind the first flush
            pending.result()
        blocking.join()
        with pytest.raises(StorageError):
            syncer.stop(timeout=30)  # the final flush fails too; the thread stops
        assert not syncer.status()["running"]


def syncer_threads():
    import os

    tids = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("ringmetrics-syn"):
                    tids[int(tid)] = os.sched_getscheduler(int(tid))
        except OSError:
            pass
    return tids


def test_low_priority_syncer_threads_run_sched_idle():
    import os

    agg = Aggregator(4)
    agg.increment_counter("c", 1)  # so the final flush has something to write
    for low, policy in ((True, os.SCHED_IDLE), (False, os.SCHED_OTHER)):
        before = set(syncer_threads())
        syncer = agg.start_syncer("host=127.0.0.1 port=1 connect_timeout=1", interval=3600, low_priority=low)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            new = {t: p for t, p in syncer_threads().items() if t not in before}
            if new and all(p == policy for p in new.values()):
                break
            time.sleep(0.01)
        assert list(new.values()) == [policy]
        with pytest.raises(StorageError):
            syncer.stop(timeout=10)


def test_a_dropped_syncer_flushes_and_releases_the_gil_meanwhile(dsn, prefix):
    # Dropped without stop(): the final flush still saves the data.
    agg = Aggregator(4, clock=ManualClock(T0))
    agg.increment_counter("jobs:done", 5)
    syncer = agg.start_syncer(dsn, prefix=prefix, worker_id="dropped", interval=3600)
    del syncer
    gc.collect()
    series = read_metrics(dsn, prefix=prefix, metric_prefix="jobs", resolution="1min", start=T0, end=T0 + 60)
    assert [(k, [p[5] for p in pts]) for k, _, _, pts in series] == [("jobs:done", [5.0])]

    # Its final flush against a server that never answers waits out the
    # connect timeout: other Python threads run meanwhile.
    server, silent = silent_server()
    with server:
        agg = Aggregator(4)
        agg.increment_counter("c", 1)
        syncer = agg.start_syncer(silent, interval=3600)
        with Ticker() as ticker:
            del syncer
            gc.collect()
        assert ticker.elapsed > 0.5, "the final flush did not wait on the server"
        assert ticker.ticks > 100, "the GIL was held during the final flush"


def test_a_configuration_the_system_cannot_back_is_a_memory_error():
    # Within every cap, but a million series (about 33 GB reserved) in a
    # process limited to 2 GiB of address space: MemoryError, not an abort.
    import subprocess
    import sys

    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from ringmetrics import Aggregator\n"
        "try:\n"
        "    Aggregator(1_000_000)\n"
        "except MemoryError as e:\n"
        "    print('MemoryError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("MemoryError:"), (out.stdout, out.stderr)


def test_the_syncer_timeouts_bound_a_flush_behind_a_lock(dsn, prefix):
    agg = Aggregator(4)
    agg.increment_counter("locked", 1)
    syncer = agg.start_syncer(dsn, prefix=prefix, interval=None, lock_timeout=1.0)
    syncer.flush(timeout=30)  # creates the tables
    with pytest.raises(ValueError, match="timeout"):
        agg.start_syncer(dsn, prefix=prefix, interval=None, statement_timeout=-1.0)
    with psycopg.connect(dsn) as holder:
        holder.execute(f'LOCK TABLE "{prefix}metrics" IN ACCESS EXCLUSIVE MODE')
        agg.increment_counter("locked", 1)
        started = time.monotonic()
        with pytest.raises(StorageError, match="55P03"):
            syncer.flush(timeout=30)
        assert time.monotonic() - started < 5
        holder.rollback()
    syncer.flush(timeout=30)
    syncer.stop()
