"""Outages longer than the rings, through the plugin in a real worker and
through the native API: a bucket that leaves its ring before it was saved
waits in memory for the next successful flush (at most
``max_buffered_points`` of them, as Chancy holds unsaved points), and past
that it is dropped, counted and warned about."""

import logging

import psycopg
import pytest
from chancy.plugins.metrics import Metrics as ChancyMetrics

from ringmetrics import Aggregator, ManualClock, read_metrics
from ringmetrics.chancy import Metrics
from test_persistence import T0, Clock, app, points, worker

pytestmark = pytest.mark.timeout(180)

SMALL = {"1min": 6, "5min": 6, "1hour": 6, "1day": 6}


async def rename(dsn, prefix, away: bool) -> None:
    """Take the metrics table away (every flush fails) or bring it back."""
    a, b = (f"{prefix}metrics", f"{prefix}metrics_away")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'ALTER TABLE "{a if away else b}" RENAME TO "{b if away else a}"')


async def test_a_worker_outage_longer_than_the_rings_loses_nothing(dsn, prefix, monkeypatch):
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w = worker(chancy, "outage")
        await w.start()
        try:
            # 45 minutes of hub events (the 1min ring holds 6), every flush
            # failing.
            await rename(dsn, prefix, away=True)
            for m in range(45):
                clock.t = T0 + 5 + 60 * m
                await w.increment_counter("out:c", 1)
                await w.record_histogram_value("out:h", m)
                with pytest.raises(Exception):
                    await plugin.flush(chancy)
            await rename(dsn, prefix, away=False)
            await plugin.flush(chancy)
            minutes = points(await reader.get_metrics(chancy, "out:c", resolution="1min"), "out:c")
            assert sorted(minutes) == [(T0 + 60 * m, 1.0) for m in range(45)]
            hist = await reader.get_metrics(chancy, "out:h", resolution="1min")
            assert sorted(p.value["count"] for p in hist["series"]["out:h"].data) == [1] * 45
            # Down again, 8 hours at 5min steps (the 5min ring holds 30
            # minutes), a flush failing every 50 minutes.
            await rename(dsn, prefix, away=True)
            start = T0 + 3600
            for step in range(96):
                clock.t = start + 5 + 300 * step
                await w.increment_counter("out:slow", 2)
                if step % 10 == 0:
                    with pytest.raises(Exception):
                        await plugin.flush(chancy)
            await rename(dsn, prefix, away=False)
            await plugin.flush(chancy)
        finally:
            await w.stop()
        assert not any(plugin.drops()["unsaved"].values())
        fives = points(
            await reader.get_metrics(chancy, "out:slow", resolution="5min", range_seconds=10 * 3600), "out:slow"
        )
        assert sorted(fives) == [(start + 300 * s, 2.0) for s in range(96)]


async def test_a_full_buffer_drops_counts_and_warns(dsn, prefix, monkeypatch, caplog):
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL, max_buffered_points=4)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await rename(dsn, prefix, away=True)
        for m in range(20):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("full", 1)
            with pytest.raises(Exception):
                await plugin.flush(chancy)
        await rename(dsn, prefix, away=False)
        with caplog.at_level(logging.WARNING):
            await plugin.flush(chancy)
        # 13 minutes left the ring (minute 19 is pending), 4 fit, 9 lost.
        assert plugin.drops()["unsaved"] == {"1min": 9, "5min": 0, "1hour": 0, "1day": 0}
        assert any("max_buffered_points (4)" in r.getMessage() for r in caplog.records)
        result = await plugin.get_metrics(chancy, "full", resolution="1min")
        assert len(points(result, "full")) == 4 + 7
        five = points(await plugin.get_metrics(chancy, "full", resolution="5min"), "full")
        assert sum(v for _, v in five) == 20.0


def test_the_native_api_keeps_what_left_the_rings_across_syncers(dsn, prefix):
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock, unsaved_buckets=100)
    nowhere = agg.start_syncer("host=127.0.0.1 port=1 connect_timeout=1", prefix=prefix, interval=None)
    for _ in range(30):
        agg.increment_counter("n", 1)
        with pytest.raises(Exception):
            nowhere.flush()
        clock.advance(60)
    with pytest.raises(Exception):
        nowhere.stop(5)
    # What the failing syncer drained goes to the next one.
    s = agg.start_syncer(dsn, prefix=prefix, interval=None)
    s.flush()
    s.stop()
    (row,) = read_metrics(dsn, prefix=prefix, resolution="1min", start=T0, end=T0 + 3600)
    assert [(b[0], b[2]) for b in row[3]] == [(T0 + 60 * m, 1.0) for m in range(30)]
    assert agg.drops()["unsaved"]["1min"] == 0 and agg.unsaved_len() == 0
