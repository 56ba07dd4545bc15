"""The plugin's record methods are native: they record at the call and return
an already finished awaitable. What users and Chancy rely on still holds:
awaiting, asyncio's helpers, Chancy's signature, never raising on bad input,
the rate-limited warning, drop counters and the clock hooks."""

import asyncio
import datetime
import gc
import inspect
import logging
import math
import types
import weakref

import pytest
from chancy.plugins.metrics import metrics as chancy_metrics

from ringmetrics import ManualClock
from ringmetrics._native import Recorded
from ringmetrics.chancy import Metrics

pytestmark = pytest.mark.timeout(60)

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
RECORD_METHODS = ("increment_counter", "record_gauge", "record_histogram_value")


def points(plugin, key):
    """(bucket start, count, sum, last) at 1min from the plugin's own session."""
    return [(b[0], b[1], b[2], b[5]) for b in plugin.aggregators()[0].snapshot(key, "1min")]


async def test_awaiting_records_once_and_returns_none():
    m = Metrics(clock=ManualClock(T0))
    assert await m.increment_counter("c", 1) is None
    assert await m.increment_counter("c", 2.5, unit="count") is None
    assert await m.record_gauge("g", 7, unit="items") is None
    assert await m.record_histogram_value("h", 0.5, unit="seconds") is None
    assert points(m, "c") == [(T0, 2, 3.5, 2.5)]
    assert points(m, "g") == [(T0, 1, 7.0, 7.0)]
    assert points(m, "h") == [(T0, 1, 0.5, 0.5)]
    assert m.aggregators()[0].series() == [
        ("c", "counter", "count"),
        ("g", "gauge", "items"),
        ("h", "histogram", "seconds"),
    ]


async def test_the_methods_are_native_and_share_one_finished_awaitable():
    m = Metrics(clock=ManualClock(T0))
    for name in RECORD_METHODS:
        method = getattr(m, name)
        assert not inspect.iscoroutinefunction(method), "instances use the native method"
        assert inspect.iscoroutinefunction(getattr(Metrics, name)), "the class keeps Chancy's coroutine"
        unit = "count" if name == "increment_counter" else "number"
        assert str(inspect.signature(method)) == f"(metric_key, value, *, unit='{unit}')"
    a = m.increment_counter("c", 1)
    b = m.increment_counter("c", 1)
    assert type(a) is Recorded and a is b, "one preallocated awaitable"
    assert points(m, "c") == [(T0, 2, 2.0, 1.0)], "recorded at the call, before any await"
    await a
    await a  # finished awaitables can be awaited again
    assert points(m, "c") == [(T0, 2, 2.0, 1.0)]
    with pytest.raises(TypeError):
        Recorded()


async def test_asyncio_helpers_accept_the_awaitable():
    m = Metrics(clock=ManualClock(T0))
    r = m.increment_counter("c", 1)
    assert inspect.isawaitable(r) and asyncio.iscoroutine(r)
    assert await asyncio.gather(m.increment_counter("c", 1), m.record_gauge("g", 1)) == [None, None]
    assert await asyncio.create_task(m.increment_counter("c", 1)) is None
    assert await asyncio.ensure_future(m.record_histogram_value("h", 1)) is None
    assert await asyncio.wait_for(m.increment_counter("c", 1), 1) is None

    @types.coroutine
    def by_yield_from():
        return (yield from r.__await__())  # what asyncio's _wrap_awaitable does

    assert await by_yield_from() is None
    assert points(m, "c")[0][1] == 4
    # The coroutine protocol, as a finished coroutine answers it.
    with pytest.raises(StopIteration):
        r.send(None)
    with pytest.raises(KeyError, match="thrown"):
        r.throw(KeyError("thrown"))
    with pytest.raises(ValueError, match="x"):
        r.throw(ValueError, "x")
    assert r.close() is None


async def test_chancys_signature_holds():
    m = Metrics(clock=ManualClock(T0))
    await m.increment_counter(metric_key="kw", value=1, unit="count")
    await m.increment_counter("kw", value=1)
    assert points(m, "kw")[0][1] == 2
    for call, match in [
        (lambda: m.increment_counter("k", 1, "count"), "at most 2 positional"),
        (lambda: m.increment_counter("k"), "missing required argument 'value'"),
        (lambda: m.record_gauge("k", 1, units="x"), "unexpected keyword argument 'units'"),
        (lambda: m.record_histogram_value("k", 1, metric_key="k"), "multiple values"),
    ]:
        with pytest.raises(TypeError, match=match):
            call()


async def test_invalid_input_is_dropped_counted_and_warned_never_raised(caplog):
    caplog.set_level(logging.WARNING)
    m = Metrics(clock=ManualClock(T0), max_buffered_points=8)  # room for 2 series
    for key, value, unit in [
        ("k", math.nan, "count"),
        ("k", math.inf, "count"),
        ("k", True, "count"),
        ("k", 10**400, "count"),
        ("k", "1", "count"),
        ("", 1, "count"),
        ("x" * 1025, 1, "count"),
        ("a\x00b", 1, "count"),
        ("\ud800", 1, "count"),
        (None, 1, "count"),
        (b"k", 1, "count"),
        ("k", 1, "u" * 65),  # a falsy unit is the default, as in Chancy (test_validation.py)
        ("k", 1, "u\x00"),
        ("k", 1, 5),
    ]:
        assert await m.increment_counter(key, value, unit=unit) is None
    await m.increment_counter("good", 1)
    await m.record_gauge("good", 1)  # kind conflict
    await m.increment_counter("second", 1)
    await m.increment_counter("third", 1)  # full
    assert [s[0] for s in m.aggregators()[0].series()] == ["good", "second"]
    assert points(m, "good") == [(T0, 1, 1.0, 1.0)]
    drops = m.drops()
    assert drops["non_finite_value"] == 5
    assert drops["invalid_key"] == 6
    assert drops["invalid_unit"] == 3
    assert drops["conflict"] == 1 and drops["capacity_exhausted"] == 1
    warnings = [r for r in caplog.records if "Dropped metric" in r.getMessage()]
    assert len(warnings) == 1, "Chancy's warning: at most one a minute"
    assert "'k'" in warnings[0].getMessage() and "NaN" in warnings[0].getMessage()


async def test_hub_and_native_paths_share_the_rate_limited_warning(caplog):
    caplog.set_level(logging.WARNING)
    m = Metrics(clock=ManualClock(T0))
    m._record("k", math.nan, "counter", "count")  # the hub-event path
    await m.increment_counter("k", math.nan)
    assert len([r for r in caplog.records if "Dropped" in r.getMessage()]) == 1
    assert m.drops()["non_finite_value"] == 2


async def test_a_monkeypatched_utcnow_stamps_records_on_both_paths(monkeypatch):
    # Ten minutes ago: the plugin's 1min ring (24 buckets) holds the patched
    # minutes and the real one in distinct slots whatever the time of day.
    now = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    patched = now - datetime.timedelta(minutes=10)
    at = int(patched.timestamp())
    m = Metrics()
    monkeypatch.setattr(chancy_metrics, "utcnow", lambda: patched)
    await m.increment_counter("native", 1)
    m._record("hub", 1, "counter", "count")
    assert [p[0] for p in points(m, "native")] == [at]
    assert [p[0] for p in points(m, "hub")] == [at]
    patched += datetime.timedelta(minutes=2)
    await m.record_gauge("g", 1)
    assert [p[0] for p in points(m, "g")] == [at + 120], "each record reads the hook again"
    # Patched by the Python path, unpatched before the native path: the
    # override is dropped, the record lands now.
    m._record("hub", 1, "counter", "count")
    monkeypatch.undo()
    await m.increment_counter("hub", 1, unit="count")
    starts = [p[0] for p in points(m, "hub")]
    assert starts[:2] == [at, at + 120] and abs(starts[2] - datetime.datetime.now(datetime.UTC).timestamp()) < 120
    assert abs(m.aggregators()[0].now() - datetime.datetime.now(datetime.UTC).timestamp()) < 5


async def test_a_failing_utcnow_hook_drops_the_record_without_raising(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)

    def broken():
        raise RuntimeError("clock is broken")

    m = Metrics()
    monkeypatch.setattr(chancy_metrics, "utcnow", broken)
    assert await m.increment_counter("c", 1) is None
    assert m.aggregators()[0].series() == []
    assert m.drops()["invalid_timestamp"] == 1
    assert any("clock is broken" in r.getMessage() for r in caplog.records)


async def test_a_manual_clock_ignores_the_utcnow_hook(monkeypatch):
    clock = ManualClock(T0)
    m = Metrics(clock=clock)
    monkeypatch.setattr(chancy_metrics, "utcnow", lambda: datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    await m.increment_counter("c", 1)
    clock.advance(60)
    await m.increment_counter("c", 1)
    assert [p[0] for p in points(m, "c")] == [T0, T0 + 60]


async def test_subclass_overrides_are_kept():
    calls = []

    class Counting(Metrics):
        async def increment_counter(self, metric_key, value, *, unit="count"):
            calls.append(metric_key)
            await super().increment_counter(metric_key, value, unit=unit)

    m = Counting(clock=ManualClock(T0))
    await m.increment_counter("c", 2)
    await m.record_gauge("g", 1)  # not overridden: native
    assert calls == ["c"] and points(m, "c") == [(T0, 1, 2.0, 2.0)]
    assert not inspect.iscoroutinefunction(m.record_gauge)


def test_the_plugin_is_freed_without_a_cycle_through_the_recorder():
    m = Metrics()
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None
