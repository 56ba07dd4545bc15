"""Adversarial tests of 5027cf5 (pending-minute marks, evictions keeping
other threads' pending minutes) through the native Python API and a real
syncer: every observation saved exactly, or counted once in drops(), never
both."""

import pytest

from ringmetrics import Aggregator, ManualClock, read_metrics
from test_attack_fixes import SMALL, Helper, stored
from test_persistence import T0

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def test_native_an_evicted_bucket_with_an_overflowing_pending_minute_is_not_saved_clamped(dsn, prefix):
    """Minute 0 of counter "c": 1e308 folded into the ring by this thread,
    1e308 more pending in a helper thread's stripe. Minute 6 pushes minute 0
    out of the 6-minute ring: the eviction merges the helper's minute with
    a clamp. Want: minute 0 stored as 1e308 and the helper's observation
    counted as an overflow at 1min (as its own fold would). Got: f64::MAX
    stored, nothing counted at 1min."""
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock)
    s = agg.start_syncer(dsn, prefix=prefix, interval=None)
    helper = Helper()
    try:
        agg.increment_counter("c", 1e308)
        helper(lambda: agg.increment_counter("c", 1e308))
        for m in (1, 6, 7):
            clock.set(T0 + 60 * m)
            agg.increment_counter("c", 0)
        helper(lambda: agg.increment_counter("c", 0))  # folds its minute 0
        s.flush()
        s.stop()
    finally:
        helper.close()
    ones = stored(dsn, prefix, "c", "1min")
    d = agg.drops()
    assert ones[0] == (T0, 1e308) and d["resolution_overflow"]["1min"] == 1, (ones, d)


def test_native_a_saved_bucket_is_not_reported_unsaved_when_the_buffer_is_full(dsn, prefix):
    """unsaved_buckets=1. A flush saves minute 0 of "c" (2: one folded, one
    pending in a helper). Then "d" fills the buffer, and minute 0 of "c",
    unchanged since it was saved, leaves the ring: the eviction pushes it
    anyway (a pending minute adds to it), the buffer is full, and 2
    observations are counted unsaved although the database holds them."""
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock, unsaved_buckets=1)
    s = agg.start_syncer(dsn, prefix=prefix, interval=None)
    helper = Helper()
    try:
        agg.increment_counter("c", 1)
        helper(lambda: agg.increment_counter("c", 1))
        clock.set(T0 + 60)
        agg.increment_counter("c", 1)
        s.flush()
        for m in range(2, 10):
            clock.set(T0 + 60 * m)
            agg.increment_counter("d", 1)
        for m in (12, 13):
            clock.set(T0 + 60 * m)
            agg.increment_counter("c", 1)
        s.flush()
        s.stop()
    finally:
        helper.close()
    assert stored(dsn, prefix, "c", "1min") == [(T0, 2.0), (T0 + 60, 1.0), (T0 + 720, 1.0), (T0 + 780, 1.0)]
    assert stored(dsn, prefix, "d", "1min") == [(T0 + 60 * m, 1.0) for m in range(2, 10)]
    d = agg.drops()
    assert d["unsaved"]["1min"] == 0, f"everything is in the database, yet drops() reports {d}"


def test_native_kept_gauge_minute_saved_with_its_latest_value(dsn, prefix):
    """A gauge's minute 0 partly in the ring, partly in a helper's pending
    minute, pushed out by minute 6 (kept by the eviction): the database has
    the latest sample (the helper's 9) and nothing counts as dropped."""
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock)
    s = agg.start_syncer(dsn, prefix=prefix, interval=None)
    helper = Helper()
    try:
        clock.set(T0 + 10)
        agg.record_gauge("g", 5)
        clock.set(T0 + 20)
        helper(lambda: agg.record_gauge("g", 9))
        for m in (1, 6, 7):
            clock.set(T0 + 60 * m + 1)
            agg.record_gauge("g", 3)
        clock.set(T0 + 421)
        helper(lambda: agg.record_gauge("g", 4))
        s.flush()
        s.stop()
    finally:
        helper.close()
    rows = read_metrics(dsn, prefix=prefix, metric_prefix="g", resolution="1min", start=T0, end=T0 + 7200)
    ones = sorted((b[0], b[5]) for row in rows if row[0] == "g" for b in row[3])  # (start, gauge value)
    assert ones[0] == (T0, 9.0), ones
    d = agg.drops()
    assert (sum(d["stale"].values()), sum(d["unsaved"].values())) == (0, 0), d
