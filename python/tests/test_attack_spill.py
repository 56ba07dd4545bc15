"""Adversarial tests of the unsaved-bucket buffer (commit 07db832) through
the Chancy plugin and the native API: a bucket that leaves its ring before
it was saved must be saved later, exactly once; saved buckets must not take
the buffer's room; nothing else may hold it forever."""

import os

import psycopg
import pytest
from chancy.plugins.metrics import Metrics as ChancyMetrics

from ringmetrics import Aggregator, ManualClock, read_metrics
from ringmetrics.chancy import Metrics
from test_outage import rename
from test_persistence import T0, Clock, app, own_dsn, points, worker  # noqa: F401 (own_dsn: a fixture)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

SMALL = {"1min": 6, "5min": 6, "1hour": 6, "1day": 6}
NO_DROPS = {"1min": 0, "5min": 0, "1hour": 0, "1day": 0}


def minutes(key_points, first, last, value=1.0):
    return sorted(key_points) == [(T0 + 60 * m, value) for m in range(first, last)]


def stored_minutes(dsn, prefix, key, end):
    """(start, total) of every stored 1min bucket of ``key`` (all sessions)."""
    rows = read_metrics(dsn, prefix=prefix, metric_prefix=key, resolution="1min", start=T0, end=end)
    return [(b[0], b[2]) for row in rows if row[0] == key for b in row[3]]


async def test_a_conflicting_key_does_not_starve_other_keys(dsn, prefix, monkeypatch):
    """A key stored with another type is dropped (warned) on every flush; its
    buckets that leave the rings must not fill max_buffered_points for good,
    or every other key loses the buckets that leave its ring between two
    successful flushes."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL, max_buffered_points=40)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                f'INSERT INTO "{prefix}metric_definitions" (key, metric_type, unit) VALUES (%s, %s, %s)',
                ["bad", "gauge", "number"],
            )
        for m in range(120):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("bad", 1)
            await plugin.increment_counter("good", 1)
            if m % 10 == 9:
                await plugin.flush(chancy)  # succeeds: "good" needs 4 places per interval
        await plugin.flush(chancy)
    good = stored_minutes(dsn, prefix, "good", T0 + 7200)
    assert good == [(T0 + 60 * m, 1.0) for m in range(120)], f"{len(good)} of 120 minutes saved"


async def test_a_saved_minute_does_not_take_an_unsaved_place(dsn, prefix, monkeypatch):
    """Minute 11 is read (pending) and saved by the last flush before the
    outage; when it leaves the ring it must not take one of the 5 places from
    minutes 12..16, which really are unsaved."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL, max_buffered_points=5)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for m in range(12):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("c", 1)
            await plugin.flush(chancy)
        await rename(dsn, prefix, away=True)
        for m in range(12, 24):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("c", 1)
        await rename(dsn, prefix, away=False)
        await plugin.flush(chancy)
        assert plugin.drops()["unsaved"] == NO_DROPS
        assert minutes(points(await reader.get_metrics(chancy, "c", resolution="1min"), "c"), 0, 24)


async def test_a_worker_stopped_during_an_outage_keeps_everything_for_the_retry(dsn, prefix, monkeypatch):
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w1 = worker(chancy, "w1")
        await w1.start()
        await rename(dsn, prefix, away=True)
        try:
            for m in range(30):
                clock.t = T0 + 5 + 60 * m
                await w1.increment_counter("ws", 1)
                await w1.record_gauge("wg", m)
                with pytest.raises(Exception):
                    await plugin.flush(chancy)
            with pytest.raises(Exception):
                await w1.stop()  # the final flush fails
        finally:
            await rename(dsn, prefix, away=False)
        await w1.stop()  # the retry saves
        w2 = worker(chancy, "w2")
        await w2.start()
        try:
            for m in range(30, 35):
                clock.t = T0 + 5 + 60 * m
                await w2.increment_counter("ws", 1)
                await w2.record_gauge("wg", m)
            await plugin.flush(chancy)
        finally:
            await w2.stop()
        assert plugin.drops()["unsaved"] == NO_DROPS
        every = points(await reader.get_metrics(chancy, "ws", resolution="1min"), "ws")
        assert minutes(every, 0, 35), sorted(every)
        one = points(await reader.get_metrics(chancy, "ws", worker_id="w1", resolution="1min"), "ws")
        assert minutes(one, 0, 30), sorted(one)
        two = points(await reader.get_metrics(chancy, "ws", worker_id="w2", resolution="1min"), "ws")
        assert minutes(two, 30, 35), sorted(two)
        gauges = points(await reader.get_metrics(chancy, "wg", resolution="1min"), "wg")
        assert sorted(gauges) == [(T0 + 60 * m, float(m)) for m in range(35)]
        five = points(await reader.get_metrics(chancy, "ws", resolution="5min"), "ws")
        assert sorted(five) == [(T0 + 300 * i, 5.0) for i in range(7)]


async def test_renewing_a_full_aggregator_right_after_an_outage_loses_nothing(dsn, prefix, monkeypatch):
    """max_buffered_points=8: 2 series per aggregator, 8 unsaved buckets. A
    third key refused during the outage makes the first successful flush
    renew the aggregator (retired, detached once saved)."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL, max_buffered_points=8)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await rename(dsn, prefix, away=True)
        for m in range(10):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("ka", 1)
            await plugin.record_histogram_value("kb", m)
            await plugin.increment_counter("kc", 1)  # refused: the aggregator is full
            with pytest.raises(Exception):
                await plugin.flush(chancy)
        await rename(dsn, prefix, away=False)
        first = plugin.aggregators()[0]
        await plugin.flush(chancy)
        assert plugin.aggregators()[0] is not first, "renewed"
        for m in range(10, 13):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("ka", 1)
            await plugin.record_histogram_value("kb", m)
        await plugin.flush(chancy)
        assert plugin.drops()["unsaved"] == NO_DROPS
        ka = points(await reader.get_metrics(chancy, "ka", resolution="1min"), "ka")
        assert minutes(ka, 0, 13), sorted(ka)
        kb = (await reader.get_metrics(chancy, "kb", resolution="1min"))["series"]["kb"].data
        got = sorted((p.timestamp.timestamp(), p.value["count"], p.value["sum"], p.value["min"]) for p in kb)
        assert got == [(T0 + 60 * m, 1, float(m), float(m)) for m in range(13)]


async def test_switching_app_mid_outage_saves_everything_to_the_new_app(dsn, prefix, monkeypatch):
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL)
    pa, pb = f"{prefix}a_", f"{prefix}b_"
    async with app(dsn, pa, plugin) as ca, app(dsn, pb, Metrics()) as cb:
        await ca.migrate()
        await cb.migrate()
        await rename(dsn, pa, away=True)
        for m in range(20):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("sw", 1)
            await plugin.record_gauge("swg", m)
            with pytest.raises(Exception):
                await plugin.flush(ca)
        await plugin.flush(cb)
        assert plugin.drops()["unsaved"] == NO_DROPS
        assert stored_minutes(dsn, pb, "sw", T0 + 3600) == [(T0 + 60 * m, 1.0) for m in range(20)]
        g = read_metrics(dsn, prefix=pb, metric_prefix="swg", resolution="1min", start=T0, end=T0 + 3600)
        assert [(b[0], b[5]) for row in g for b in row[3]] == [(T0 + 60 * m, float(m)) for m in range(20)]
        await rename(dsn, pa, away=False)


async def test_changing_sync_interval_mid_outage_loses_nothing(dsn, prefix, monkeypatch):
    """A new sync_interval resizes the rings: every session is renewed and
    the old ones, holding what left their rings unsaved, are retired."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=60)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await rename(dsn, prefix, away=True)
        for m in range(50):
            clock.t = T0 + 5 + 60 * m
            if m == 35:
                plugin.sync_interval = 3600
            await plugin.increment_counter("si", 1)
            await plugin.record_histogram_value("sih", m)
            with pytest.raises(Exception):
                await plugin.flush(chancy)
        await rename(dsn, prefix, away=False)
        await plugin.flush(chancy)
        assert plugin.drops()["unsaved"] == NO_DROPS
        got = points(await reader.get_metrics(chancy, "si", resolution="1min"), "si")
        assert minutes(got, 0, 50), sorted(got)
        five = (await reader.get_metrics(chancy, "sih", resolution="5min"))["series"]["sih"].data
        got = sorted((p.timestamp.timestamp(), p.value["count"], p.value["min"], p.value["max"]) for p in five)
        assert got == [(T0 + 300 * i, 5, 5.0 * i, 5.0 * i + 4) for i in range(10)]


async def test_histograms_and_gauges_through_a_long_outage_are_exact(dsn, prefix, monkeypatch):
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w = worker(chancy, "hx")
        await w.start()
        try:
            await rename(dsn, prefix, away=True)
            # 10 hours, a record every 10 minutes (the 5min ring holds 30
            # minutes, the 1hour ring 6 hours), a flush failing every hour.
            for step in range(60):
                clock.t = T0 + 5 + 600 * step
                await w.record_histogram_value("hx:h", step)
                await w.record_histogram_value("hx:h", -step)
                await w.record_gauge("hx:g", step)
                if step % 6 == 5:
                    with pytest.raises(Exception):
                        await plugin.flush(chancy)
            await rename(dsn, prefix, away=False)
            await plugin.flush(chancy)
        finally:
            await w.stop()
        assert plugin.drops()["unsaved"] == NO_DROPS
        data = (await reader.get_metrics(chancy, "hx:h", resolution="5min"))["series"]["hx:h"].data
        got = sorted((p.timestamp.timestamp(), p.value["count"], p.value["sum"], p.value["min"], p.value["max"]) for p in data)
        assert got == [(T0 + 600 * s, 2, 0.0, -float(s), float(s)) for s in range(60)]
        data = (await reader.get_metrics(chancy, "hx:h", resolution="1hour", range_seconds=86400))["series"]["hx:h"].data
        got = sorted((p.timestamp.timestamp(), p.value["count"], p.value["min"], p.value["max"]) for p in data)
        assert got == [(T0 + 3600 * h, 12, -(6.0 * h + 5), 6.0 * h + 5) for h in range(10)]
        gauges = points(await reader.get_metrics(chancy, "hx:g", resolution="1hour", range_seconds=86400), "hx:g")
        assert sorted(gauges) == [(T0 + 3600 * h, 6.0 * h + 5) for h in range(10)]


async def test_a_fork_mid_outage_neither_loses_nor_doubles(dsn, prefix, monkeypatch):
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await rename(dsn, prefix, away=True)
        for m in range(20):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("fk", 1)
            with pytest.raises(Exception):
                await plugin.flush(chancy)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                plugin.increment_counter("fk", 100)  # already done; the child's own session
                code = 0 if all(a.unsaved_len() == 0 for a in plugin.aggregators()) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        for m in range(20, 25):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("fk", 1)
        await rename(dsn, prefix, away=False)
        await plugin.flush(chancy)
        got = points(await reader.get_metrics(chancy, "fk", resolution="1min"), "fk")
        assert minutes(got, 0, 25), sorted(got)
        assert plugin.drops()["unsaved"] == NO_DROPS


async def test_a_huge_max_buffered_points_stays_cheap(dsn, prefix, monkeypatch):
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    clock = Clock(monkeypatch, T0 + 5)
    before = rss()
    plugin = Metrics(max_buffered_points=10**12)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for m in range(3):
            clock.t = T0 + 5 + 60 * m
            for k in range(50):
                await plugin.increment_counter(f"huge:{k}", 1)
            plugin.worker_id = f"w{m}"  # a session per worker id
        await plugin.flush(chancy)
        grown = rss() - before
        assert grown < 300 << 20, f"{grown} bytes resident"
        got = points(await reader.get_metrics(chancy, "huge:7", resolution="1min"), "huge:7")
        assert minutes(got, 0, 3), sorted(got)


def test_native_unsaved_buckets_bounds_and_a_zero_buffer():
    with pytest.raises(ValueError):
        Aggregator(4, unsaved_buckets=(1 << 26) + 1)
    with pytest.raises((OverflowError, ValueError)):
        Aggregator(4, unsaved_buckets=-1)
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock, unsaved_buckets=0)
    agg.start_saving()
    for _ in range(10):
        agg.increment_counter("z", 2)
        agg.increment_counter("z", 3)
        clock.advance(60)
    # Minutes 0..2 left the 1min ring (minute 9 is pending, 8 took 2's slot):
    # two observations each, none kept.
    assert agg.unsaved_len() == 0
    assert agg.drops()["unsaved"] == {**NO_DROPS, "1min": 6}


def test_native_steady_state_spills_nothing_and_writes_only_open_chunks(dsn, prefix):
    clock = ManualClock(T0)
    agg = Aggregator(16, buckets=SMALL, clock=clock)
    s = agg.start_syncer(dsn, prefix=prefix, interval=None)
    try:
        for m in range(90):
            agg.increment_counter("c", 1)
            agg.record_gauge("g", m)
            agg.record_histogram("h", m)
            agg.record("histogram", "h", -m, "number", at=T0 + 60 * m + 1)
            assert agg.unsaved_len() == 0, m
            assert s.flush()["rows_written"] == 12, m
            clock.advance(60)
    finally:
        s.stop()
    assert all(not any(v.values()) if isinstance(v, dict) else not v for v in agg.drops().values()), agg.drops()
    assert stored_minutes(dsn, prefix, "c", T0 + 7200) == [(T0 + 60 * m, 1.0) for m in range(90)]
    (h,) = read_metrics(dsn, prefix=prefix, metric_prefix="h", resolution="1hour", start=T0, end=T0 + 7200)
    assert [(b[0], b[1], b[3], b[4]) for b in h[3]] == [(T0, 120, -59.0, 59.0), (T0 + 3600, 60, -89.0, 89.0)]


def test_native_v1_schema_saves_what_left_the_rings(own_dsn):
    """Chancy 0.25's schema (newest-first arrays merged by timestamp): the
    buckets that left the rings during an outage are merged in, in order."""
    from ringmetrics import Syncer

    prefix = "spv1_"
    points_v1 = [60, 288, 168, 90]
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock, unsaved_buckets=100)
    nowhere = Syncer(
        "host=127.0.0.1 port=1 connect_timeout=1", prefix=prefix, interval=None, schema_v1_max_points=points_v1
    )
    nowhere.attach(agg, "w")
    for m in range(30):
        agg.increment_counter("v1:c", 1)
        agg.record_histogram("v1:h", m)
        with pytest.raises(Exception):
            nowhere.flush()
        clock.advance(60)
    with pytest.raises(Exception):
        nowhere.stop(5)
    s = Syncer(own_dsn, prefix=prefix, interval=None, schema_v1_max_points=points_v1)
    s.attach(agg, "w")
    s.flush()
    s.stop()
    assert agg.drops()["unsaved"] == NO_DROPS and agg.unsaved_len() == 0
    with psycopg.connect(own_dsn) as conn:
        rows = conn.execute(
            f'SELECT metric_key, resolution, timestamps, "values" FROM "{prefix}metrics" WHERE worker_id = %s', ["w"]
        ).fetchall()
    got = {(k, r): ([int(t.timestamp()) for t in ts], vs) for k, r, ts, vs in rows}
    assert got[("v1:c", "1min")] == ([T0 + 60 * m for m in reversed(range(30))], [1] * 30)
    ts, vs = got[("v1:h", "5min")]
    assert ts == [T0 + 300 * i for i in reversed(range(6))]
    assert [(v["count"], v["min"], v["max"]) for v in vs] == [(5, 5 * i, 5 * i + 4) for i in reversed(range(6))]


def test_native_a_thread_that_recorded_once_loses_nothing_in_an_outage(dsn, prefix):
    """A thread records once and exits (a short-lived worker thread): its
    minute waits in its writer stripe, unfolded. Through an outage longer
    than the rings, that observation must still be saved at every
    resolution (or at least counted as dropped)."""
    import threading

    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock)
    nowhere = agg.start_syncer("host=127.0.0.1 port=1 connect_timeout=1", prefix=prefix, interval=None)
    agg.increment_counter("lag", 1)  # this thread holds its writer slot
    t = threading.Thread(target=agg.increment_counter, args=("lag", 1))
    t.start()
    t.join()
    for m in range(40):
        if m:
            agg.increment_counter("lag", 1)
        with pytest.raises(Exception):
            nowhere.flush()
        clock.advance(60)
    with pytest.raises(Exception):
        nowhere.stop(5)
    clock.advance(-60)
    s = agg.start_syncer(dsn, prefix=prefix, interval=None)
    s.flush()
    s.stop()
    totals = {}
    for r in ("1min", "5min", "1hour"):
        (row,) = read_metrics(dsn, prefix=prefix, metric_prefix="lag", resolution=r, start=T0, end=T0 + 7200)
        totals[r] = sum(b[2] for b in row[3])
    lost = sum(agg.drops()["stale"].values()) + sum(agg.drops()["unsaved"].values())
    assert (totals, lost) == ({"1min": 41.0, "5min": 41.0, "1hour": 41.0}, 0)


async def test_cleanup_right_after_an_outage_stays_done(dsn, prefix, monkeypatch):
    """Chancy's cleanup runs once the database is back, before the flush that
    saves what waited: that flush must write nothing cleanup would delete,
    and lose nothing within retention."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for m in range(10):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("cl", 1)
            await plugin.flush(chancy)
        await rename(dsn, prefix, away=True)
        for m in range(10, 130):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("cl", 1)
            if m % 10 == 0:
                with pytest.raises(Exception):
                    await plugin.flush(chancy)
        await rename(dsn, prefix, away=False)
        assert await plugin.cleanup(chancy) >= 1  # minutes 0..9 at 1min
        await plugin.flush(chancy)
        assert not await plugin.cleanup(chancy), "the flush wrote expired chunks"
        assert plugin.drops()["unsaved"] == NO_DROPS
        five = points(await reader.get_metrics(chancy, "cl", resolution="5min"), "cl")
        assert sorted(five) == [(T0 + 300 * i, 5.0) for i in range(26)]
        ones = sorted(points(await reader.get_metrics(chancy, "cl", resolution="1min"), "cl"))
        first = round((ones[0][0] - T0) / 60)
        assert len(ones) >= 60 and ones == [(T0 + 60 * m, 1.0) for m in range(first, 130)]
