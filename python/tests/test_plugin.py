"""ringmetrics.chancy.Metrics inside real Chancy apps and workers, against
a real PostgreSQL, read back through Chancy's own API."""

import asyncio
import datetime
import logging
import math

import httpx
import psycopg
import pytest
from chancy import Chancy, Queue, Worker
from chancy.plugins.api import Api, SimpleAuthBackend
from chancy.plugins.metrics import Metrics as ChancyMetrics
from chancy.plugins.metrics import metrics as chancy_metrics

import jobs
from ringmetrics.chancy import Metrics

pytestmark = pytest.mark.timeout(120)

EXECUTOR = "chancy.executors.asyncex.AsyncExecutor"


def app(dsn, prefix, plugin):
    return Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False)


def worker(chancy, worker_id):
    return Worker(
        chancy,
        worker_id=worker_id,
        register_signal_handlers=False,
        heartbeat_poll_interval=1,
        queue_change_poll_interval=1,
    )


async def run_jobs(chancy, w, queue, count, *, fail=0):
    batch = [jobs.quick.job.with_queue(queue).with_kwargs(n=i) for i in range(count)] + [
        jobs.boom.job.with_queue(queue).with_max_attempts(1) for _ in range(fail)
    ]
    refs = [ref async for refs in chancy.push_many(batch) for ref in refs]
    await asyncio.wait_for(chancy.wait_for_jobs(refs, interval=0.2), 60)


def summary(result, key):
    metric = result["series"].get(key)
    return None if metric is None else metric.summary


def test_matches_prefix():
    assert Metrics.matches_prefix("queue:default", "queue:default")
    assert Metrics.matches_prefix("queue:default", "queue:default:throughput")
    assert not Metrics.matches_prefix("queue:default", "queue:default2")
    assert not Metrics.matches_prefix("queue:default", "queue")
    assert Metrics.matches_prefix(None, "anything") and Metrics.matches_prefix("", "x")
    assert not Metrics.matches_prefix("a_b", "axb:c")


def test_identity_and_constructor_are_chancys():
    m = Metrics()
    assert m.get_identifier() == "chancy.metrics"
    assert (m.migrate_key(), m.migrate_package()) == ("metrics", "chancy.plugins.metrics.migrations")
    assert m.get_tables() == ["metrics", "metric_definitions"]
    assert m.api_plugin() == "chancy.plugins.metrics.api.MetricsApiPlugin"
    for bad in (
        {"sync_interval": 0},
        {"max_points_per_resolution": {"2min": 5}},
        {"max_points_per_resolution": {"1min": 0}},
        {"maximum_metric_age": -1},
        {"collection_interval": 0},
        {"max_buffered_points": 0},
    ):
        with pytest.raises(ValueError):
            Metrics(**bad)


async def test_job_metrics_from_a_real_worker(dsn, prefix):
    plugin = Metrics(sync_interval=3600)  # only the final flush writes
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await chancy.declare(Queue("work", concurrency=5, executor=EXECUTOR, polling_interval=1))
        w = worker(chancy, "w-jobs")
        await w.start()
        await run_jobs(chancy, w, "work", 6, fail=2)
        await w.stop()  # graceful: the final flush saves everything
        result = await plugin.get_metrics(chancy, resolution="1min", range_seconds=3600)
        assert summary(result, "global:status:succeeded") == 6
        assert summary(result, "global:status:failed") == 2
        assert summary(result, "job:jobs.quick:succeeded") == 6
        hist = summary(result, "job:jobs.quick:execution_time")
        assert hist["count"] == 6 and 0.005 < hist["min"] <= hist["avg"] <= hist["max"] < 5
        assert result["series"]["job:jobs.quick:execution_time"].unit == "seconds"
        assert summary(result, "queue:work:succeeded") == 6
        assert summary(result, "queue:work:throughput") >= 8
        # Rows carry this worker's id and its own session.
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            rows = await (
                await conn.execute(f"SELECT DISTINCT worker_id, session_id FROM {prefix}metrics")
            ).fetchall()
        assert [r[0] for r in rows] == ["w-jobs"]
        # Prefix reads: the key and its descendants only.
        queue = await plugin.get_metrics(chancy, "queue:work", resolution="5min")
        assert sorted(queue["series"]) == [
            "queue:work:execution_time",
            "queue:work:failed",
            "queue:work:running",
            "queue:work:succeeded",
            "queue:work:throughput",
        ] or all(k.startswith("queue:work:") for k in queue["series"])


async def test_hub_events_gaps_and_the_http_api(dsn, prefix, monkeypatch):
    base = datetime.datetime(2026, 11, 24, 10, 0, tzinfo=datetime.UTC)
    now = [base]
    monkeypatch.setattr(chancy_metrics, "utcnow", lambda: now[0])
    plugin = Metrics(sync_interval=3600)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w = worker(chancy, "w-hub")
        await w.start()
        await w.increment_counter("custom:hits", 2)
        await w.record_gauge("custom:depth", 5, unit="items")
        await w.record_histogram_value("custom:latency", 0.25, unit="seconds")
        now[0] = base + datetime.timedelta(minutes=3)  # minutes 1 and 2 stay empty
        await w.increment_counter("custom:hits", 3)
        await w.record_gauge("custom:depth", 7, unit="items")
        await w.record_histogram_value("custom:latency", 0.75, unit="seconds")
        await plugin.flush(chancy)
        end = base + datetime.timedelta(minutes=5)
        result = await plugin.get_metrics(chancy, "custom", resolution="1min", start=base, end=end)
        hits = result["series"]["custom:hits"]
        assert [(p.timestamp, p.value) for p in hits.data] == [
            (base, 2.0),
            (base + datetime.timedelta(minutes=3), 3.0),
        ], "gaps must stay gaps"
        assert result["series"]["custom:depth"].summary == 7.0
        assert result["series"]["custom:depth"].unit == "items"
        assert result["series"]["custom:latency"].summary["avg"] == 0.5

        api = Api(authentication_backend=SimpleAuthBackend({"admin": "pw"}), secret_key="test-secret")
        asgi = api.build_starlette_app(w, chancy)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://test") as http:
            token = (await http.post("/api/v1/login", json={"username": "admin", "password": "pw"})).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            listing = (await http.get("/api/v1/metrics", headers=auth)).json()
            assert listing["categories"] == {"custom": ["depth", "hits", "latency"]} and listing["count"] == 3
            params = {"resolution": "1min", "start": base.isoformat(), "end": end.isoformat()}
            detail = (await http.get("/api/v1/metrics/custom", headers=auth, params=params)).json()
            latency = detail["series"]["custom:latency"]
            assert latency["aggregation"] == "summary"
            for point in latency["data"]:
                assert isinstance(point["value"]["count"], int) and point["value"]["count"] > 0
            assert detail["series"]["custom:hits"]["summary"] == 5.0
            bad = await http.get("/api/v1/metrics/custom", headers=auth, params={"resolution": "2min"})
            assert bad.status_code == 422
        await w.stop()


async def test_invalid_input_never_raises_and_poisons_nothing(dsn, prefix, caplog):
    plugin = Metrics(sync_interval=3600, max_buffered_points=8)  # room for 2 series
    caplog.set_level(logging.WARNING)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for key, value, unit in [
            ("k", math.nan, "count"),
            ("k", math.inf, "count"),
            ("k", True, "count"),
            ("k", 10**400, "count"),
            ("", 1, "count"),
            ("x" * 1025, 1, "count"),
            ("a\x00b", 1, "count"),
            ("k", 1, "u\x00"),  # not "": a falsy unit is the default, as in Chancy
            ("k", 1, "u" * 65),
            (None, 1, "count"),
        ]:
            await plugin.increment_counter(key, value, unit=unit)
        await plugin.increment_counter("good", 1)
        await plugin.record_gauge("good", 1)  # type conflict
        await plugin.increment_counter("good", 1, unit="seconds")  # unit conflict
        await plugin.increment_counter("second", 1)
        await plugin.increment_counter("third", 1)  # buffer full
        await plugin.flush(chancy)
        assert await plugin.list_metrics(chancy) == ["good", "second"]
        result = await plugin.get_metrics(chancy, resolution="1min")
        assert summary(result, "good") == 1.0
        warnings = [r for r in caplog.records if "Dropped" in r.getMessage()]
        assert len(warnings) == 1, "warnings are rate limited to one a minute"
        drops = plugin.drops()
        assert drops["non_finite_value"] >= 4 and drops["conflict"] == 2 and drops["capacity_exhausted"] == 1


async def test_invalid_windows_raise(dsn, prefix):
    plugin = Metrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for kwargs in (
            {"resolution": "2min"},
            {"resolution": "1min", "range_seconds": 90},
            {"resolution": "1min", "limit": 61},
            {"resolution": "1min", "start": datetime.datetime(2026, 1, 1)},
        ):
            with pytest.raises(ValueError):
                await plugin.get_metrics(chancy, **kwargs)


async def test_sessions_reused_worker_ids_and_shared_app(dsn, prefix):
    plugin = Metrics(sync_interval=3600)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        a, b = worker(chancy, "w-a"), worker(chancy, "w-b")
        await a.start()
        await b.start()
        await a.increment_counter("shared", 1)
        await b.increment_counter("shared", 10)
        await a.stop()
        await b.stop()
        again = worker(chancy, "w-a")  # the same worker id, registered again
        await again.start()
        await again.increment_counter("shared", 100)
        await again.stop()
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            rows = await (
                await conn.execute(
                    f"SELECT worker_id, session_id, totals FROM {prefix}metrics WHERE resolution = 60 ORDER BY totals[1]"
                )
            ).fetchall()
        assert [(r[0], r[2]) for r in rows] == [("w-a", [1.0]), ("w-b", [10.0]), ("w-a", [100.0])]
        assert len({r[1] for r in rows}) == 3, "each registration has its own session"
        result = await plugin.get_metrics(chancy, "shared", resolution="1min")
        assert summary(result, "shared") == 111.0
        only_a = await plugin.get_metrics(chancy, "shared", "w-a", resolution="1min")
        assert summary(only_a, "shared") == 101.0


async def test_latest_gauge_and_weighted_histogram_across_workers(dsn, prefix, monkeypatch):
    base = datetime.datetime(2026, 11, 24, 11, 0, tzinfo=datetime.UTC)
    now = [base]
    monkeypatch.setattr(chancy_metrics, "utcnow", lambda: now[0])
    plugin = Metrics(sync_interval=3600)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        a, b = worker(chancy, "g-a"), worker(chancy, "g-b")
        await a.start()
        await b.start()
        await a.record_histogram_value("h", 1.0)
        await a.record_histogram_value("h", 1.0)
        await a.record_histogram_value("h", 1.0)
        await b.record_histogram_value("h", 5.0)
        now[0] = base + datetime.timedelta(seconds=20)
        await b.record_gauge("g", 2.0)
        now[0] = base + datetime.timedelta(seconds=40)
        await a.record_gauge("g", 9.0)  # later: wins
        now[0] = base + datetime.timedelta(seconds=50)
        await a.stop()
        await b.stop()
        result = await plugin.get_metrics(chancy, resolution="5min", start=base, end=base + datetime.timedelta(minutes=5))
        assert summary(result, "g") == 9.0
        h = summary(result, "h")
        assert h == {"count": 4, "sum": 8.0, "avg": 2.0, "min": 1.0, "max": 5.0}


async def test_periodic_flush_failure_is_retried_without_stopping_the_worker(dsn, prefix):
    plugin = Metrics(sync_interval=1)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w = worker(chancy, "w-retry")
        await w.start()
        await w.increment_counter("before", 1)
        await plugin.flush(chancy)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f"ALTER TABLE {prefix}metrics RENAME TO {prefix}metrics_away")
            await w.increment_counter("during", 1)
            with pytest.raises(Exception):
                await plugin.flush(chancy)
            await asyncio.sleep(1.5)  # periodic attempts fail too; the worker keeps running
            assert not w.shutdown_event.is_set()
            await w.increment_counter("during", 1)
            await conn.execute(f"ALTER TABLE {prefix}metrics_away RENAME TO {prefix}metrics")
        await plugin.flush(chancy)
        result = await plugin.get_metrics(chancy, resolution="1min")
        assert summary(result, "before") == 1.0 and summary(result, "during") == 2.0
        await w.stop()


async def test_cleanup_expires_and_removes(dsn, prefix, monkeypatch):
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=120)
    plugin = Metrics(sync_interval=3600)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        monkeypatch.setattr(chancy_metrics, "utcnow", lambda: old)
        await plugin.increment_counter("ancient", 1)
        await plugin.flush(chancy)  # saved while current (expired data is never written)
        monkeypatch.undo()
        await plugin.increment_counter("fresh", 1)
        await plugin.flush(chancy)
        assert await plugin.list_metrics(chancy) == ["ancient", "fresh"]
        removed = await plugin.cleanup(chancy)
        assert removed == 4
        assert await plugin.list_metrics(chancy) == ["fresh"]
        assert summary(await plugin.get_metrics(chancy, resolution="1min"), "fresh") == 1.0


async def test_mixed_fleet_agrees_with_chancys_plugin(dsn, prefix):
    ours, theirs = Metrics(sync_interval=3600), ChancyMetrics(sync_interval=3600)
    async with app(dsn, prefix, ours) as chancy_ours, app(dsn, prefix, theirs) as chancy_theirs:
        await chancy_ours.migrate()
        await chancy_ours.declare(Queue("mixed", concurrency=5, executor=EXECUTOR, polling_interval=1))
        w_ours, w_theirs = worker(chancy_ours, "ours"), worker(chancy_theirs, "theirs")
        await w_ours.start()
        await w_theirs.start()
        await run_jobs(chancy_ours, w_ours, "mixed", 20)
        await w_ours.increment_counter("custom:mixed", 1.5)
        await w_theirs.increment_counter("custom:mixed", 2.5)
        await w_ours.record_histogram_value("custom:lat", 1.0)
        await w_theirs.record_histogram_value("custom:lat", 3.0)
        await w_ours.stop()
        await w_theirs.stop()
        a = await ours.get_metrics(chancy_ours, resolution="1min")
        b = await theirs.get_metrics(chancy_theirs, resolution="1min")
        assert {k: m.summary for k, m in a["series"].items()} == {k: m.summary for k, m in b["series"].items()}
        assert summary(a, "global:status:succeeded") == 20
        assert summary(a, "custom:mixed") == 4.0
        assert summary(a, "custom:lat") == {"count": 2, "sum": 4.0, "avg": 2.0, "min": 1.0, "max": 3.0}
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            workers = await (await conn.execute(f"SELECT DISTINCT worker_id FROM {prefix}metrics ORDER BY 1")).fetchall()
        assert [w[0] for w in workers] == ["ours", "theirs"]


async def test_record_calls_do_not_block_the_loop_while_postgres_is_slow(dsn, prefix):
    plugin = Metrics(sync_interval=3600)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for i in range(2000):
            await plugin.increment_counter(f"load:{i}", 1)
        gaps = []

        async def ticker():
            last = asyncio.get_running_loop().time()
            for _ in range(200):
                await asyncio.sleep(0.001)
                t = asyncio.get_running_loop().time()
                gaps.append(t - last)
                last = t

        await asyncio.gather(plugin.flush(chancy), ticker())
        assert max(gaps) < 0.05, f"the event loop stalled {max(gaps) * 1000:.1f} ms during a flush"
        assert len(await plugin.list_metrics(chancy)) == 2000


async def test_flush_starts_no_python_thread(dsn, prefix, monkeypatch):
    # Waiting on the syncer takes no Python thread: starting one blocks the
    # event loop until it runs, and it would need the GIL back to report.
    import threading

    plugin = Metrics(sync_interval=3600)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await plugin.increment_counter("c", 1)

        def no_threads(self):
            raise AssertionError("flush started a Python thread")

        monkeypatch.setattr(threading.Thread, "start", no_threads)
        await plugin.flush(chancy)
        monkeypatch.undo()
        assert summary(await plugin.get_metrics(chancy, resolution="1min"), "c") == 1.0


@pytest.mark.parametrize("low", [False, True])
async def test_the_plugins_syncers_run_at_normal_priority_unless_asked(dsn, prefix, low):
    import os

    from test_native import syncer_threads

    plugin = Metrics(sync_interval=3600, low_priority_syncer=low)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        before = set(syncer_threads())
        # While a worker runs, the syncer outlives a flush.
        w = worker(chancy, "prio")
        await w.start()
        await plugin.increment_counter("c", 1)
        await plugin.flush(chancy)
        new = {t: p for t, p in syncer_threads().items() if t not in before}
        assert list(new.values()) == [os.SCHED_IDLE if low else os.SCHED_OTHER]
        await w.stop()
        assert not {t for t in syncer_threads() if t not in before}, "no syncer thread once no worker runs"
