"""ringmetrics.chancy.Metrics on Chancy 0.25.1, against Chancy 0.25's own
plugin: golden rows, retention by bucket count, idempotent resends,
restarts, the three get_metrics paths, cleanup, the API routes through
0.25's own API plugin, a mixed fleet, real workers running real jobs."""

import asyncio
import json
import datetime
import functools
import importlib.metadata
import logging
import types

import httpx
import jobs025
import psycopg
import pytest
from chancy import Chancy, Queue, Worker
from chancy.plugins.metrics import Metrics as Chancy025Metrics
from chancy.plugins.metrics.api import MetricsApiPlugin
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware

import ringmetrics
from ringmetrics.chancy import CHANCY_SERIES, Metrics

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
UTC = datetime.timezone.utc


def at(seconds):
    return datetime.datetime.fromtimestamp(seconds, UTC)


def test_the_025_plugin_is_chosen():
    assert importlib.metadata.version("chancy") == "0.25.1"
    assert CHANCY_SERIES == "0.25"
    assert Metrics.__name__ == "Metrics"
    assert issubclass(Metrics, Chancy025Metrics)
    m = Metrics()
    assert m.get_tables() == ["metrics"]
    assert m.get_identifier() == "chancy.metrics"
    assert m.api_plugin() == "chancy.plugins.metrics.api.MetricsApiPlugin"
    assert m.max_points == {"1min": 60, "5min": 288, "1hour": 168, "1day": 90}
    m = Metrics(sync_interval=5, max_points_per_resolution={"1min": 10}, maximum_metric_age=60, collection_interval=7)
    assert (m.sync_interval, m.max_points["1min"], m.maximum_metric_age, m.collection_interval) == (5, 10, 60, 7)
    with pytest.raises(ValueError, match="positive int"):
        Metrics(max_points_per_resolution={"1min": 0})
    with pytest.raises(ValueError, match="unknown resolution"):
        Metrics(max_points_per_resolution={"2min": 3})


async def rows(dsn, prefix="chancy_"):
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            f'SELECT metric_key, resolution, worker_id, timestamps, values, metric_type FROM "{prefix}metrics" '
            "ORDER BY 1, 2, 3"
        )
        return [
            (k, r, w, [t.astimezone(UTC) for t in ts], vs, ty) for k, r, w, ts, vs, ty in await cur.fetchall()
        ]


# The observations of the golden test: (seconds after T0, method, key, value).
OBSERVATIONS = [
    (5, "increment_counter", "job:a:succeeded", 1),
    (6, "increment_counter", "job:a:succeeded", 2),
    (7, "record_gauge", "queue:q:depth", 7),
    (8, "record_histogram_value", "job:a:execution_time", 0.5),
    (65, "increment_counter", "job:a:succeeded", 0.25),
    (66, "record_gauge", "queue:q:depth", 3),
    (67, "record_histogram_value", "job:a:execution_time", 1.5),
    (68, "record_histogram_value", "job:a:execution_time", 2),
    (400, "increment_counter", "job:a:succeeded", 4),
    (401, "record_gauge", "queue:q:depth", 2.5),
    (3700, "record_histogram_value", "job:a:execution_time", 10),
    (90000, "increment_counter", "job:a:succeeded", 1),
]


async def test_golden_rows_match_chancy_025s_own_plugin(make_db, freeze025):
    theirs_db, ours_db = make_db(), make_db()
    theirs = Chancy025Metrics()
    async with Chancy(theirs_db, plugins=[theirs]) as chancy:
        await chancy.migrate()
        theirs.worker_id = "w"
        for dt, method, key, value in OBSERVATIONS:
            freeze025(T0 + dt)
            await getattr(theirs, method)(key, value)
        await theirs._push_metrics_to_db(chancy, metric_keys=set(theirs.local_metrics_cache))
    clock = ringmetrics.ManualClock(T0)
    ours = Metrics(clock=clock)
    async with Chancy(ours_db, plugins=[ours]) as chancy:
        await chancy.migrate()
        ours.worker_id = "w"
        for dt, method, key, value in OBSERVATIONS:
            clock.set(T0 + dt)
            await getattr(ours, method)(key, value)
            # run() saves every sync_interval: here after each observation.
            await ours.flush(chancy)
        # The own-worker view is the live ring: 0.25's local cache as far as
        # the ring still holds it (the ring keeps buckets by time slot, so a
        # sparse series shows fewer old buckets than 0.25's last max_points
        # non-empty ones; all of them are in the database).
        local = await ours.get_metrics(chancy, worker_id="w")
        for key, metric in theirs.local_metrics_cache.items():
            for r, points in metric.values.items():
                mine = local[key].values[r]
                assert mine and mine[0] == points[0] and all(p in points for p in mine), (key, r)
                assert [t for t, _ in mine] == sorted((t for t, _ in mine), reverse=True)
        # Another worker's view of "w" (from the database) is exactly it.
        reader = Metrics()
        reader.worker_id = "reader"
        assert await reader.get_metrics(chancy, worker_id="w") == theirs.local_metrics_cache
    expected = await rows(theirs_db)
    assert len(expected) == 12
    got = await rows(ours_db)
    assert got == expected
    # Equal as JSON numbers (0.25's int-or-float follows Python's type
    # history, e.g. a sum of floats that is integral stays 4.0; ours writes
    # integral numbers as integers): integer counts, integral counters as
    # JSON integers.
    for key, _, _, _, values, kind in got:
        for v in values:
            if kind == "histogram":
                assert type(v["count"]) is int and set(v) == {"count", "sum", "avg", "min", "max"}
            elif kind == "counter" and v == int(v):
                assert type(v) is int, (key, v)
    assert json.dumps([r[4] for r in got if r[5] == "counter"]) == json.dumps(
        [r[4] for r in expected if r[5] == "counter"]
    )


async def test_retention_counts_buckets(db):
    clock = ringmetrics.ManualClock(T0)
    # A 5min ring of 4 buckets: far fewer than the 13 five-minute buckets
    # 61 minutes span.
    m = Metrics(clock=clock, ring_buckets={"1min": 8, "5min": 4})
    async with Chancy(db, plugins=[m]) as chancy:
        await chancy.migrate()
        m.worker_id = "w"
        for minute in range(61):
            await m.increment_counter("c:x", 1)
            if minute % 3 == 2:
                await m.flush(chancy)
            clock.advance(60)
        await m.flush(chancy)
        order = ["1min", "5min", "1hour", "1day"]
        one, five, hour, day = sorted([r for r in await rows(db) if r[0] == "c:x"], key=lambda r: order.index(r[1]))
        assert len(one[3]) == 60
        assert one[3][0] == at(T0 + 60 * 60) and one[3][-1] == at(T0 + 60)
        assert one[4] == [1] * 60
        assert len(five[3]) == 13
        assert five[4] == [1] + [5] * 12
        assert hour[4] == [1, 60] and day[4] == [61]
        # Another worker's view (from the database) has all of it.
        other = Metrics()
        other.worker_id = "reader"
        seen = await other.get_metrics(chancy, "c", worker_id="w")
        assert len(seen["c:x"].values_1min) == 60 and len(seen["c:x"].values_5min) == 13


async def test_resends_are_idempotent_and_a_restart_keeps_history(db):
    clock = ringmetrics.ManualClock(T0)
    m = Metrics(clock=clock)
    async with Chancy(db, plugins=[m]) as chancy:
        await chancy.migrate()
        m.worker_id = "w"
        for _ in range(3):
            await m.increment_counter("c:x", 2)
            await m.record_histogram_value("h:x", 1.5)
            clock.advance(60)
        await m.flush(chancy)
        before = await rows(db)
        assert (await m.flush(chancy))["rows_written"] == 0
        # A syncer with no memory of the save (another connection string to
        # the same database) sends every bucket again: the rows stay.
        m._syncer.stop(30)
        m._syncer = None
        elsewhere = types.SimpleNamespace(dsn=db + " application_name=resend", prefix=chancy.prefix)
        assert (await m.flush(elsewhere))["rows_written"] == 8
        assert await rows(db) == before
        # A restarted worker under the same id: a fresh plugin, later time.
        clock2 = ringmetrics.ManualClock(T0 + 600)
        again = Metrics(clock=clock2)
        again.worker_id = "w"
        await again.increment_counter("c:x", 5)
        await again.flush(chancy)
        await again._flush_and_stop(chancy)
        await m._flush_and_stop(elsewhere)
    one = next(r for r in await rows(db) if r[:2] == ("c:x", "1min"))
    assert one[3] == [at(T0 + 600), at(T0 + 120), at(T0 + 60), at(T0)]
    assert one[4] == [5, 2, 2, 2]


async def test_hold_connection_keeps_one_connection_until_stop(db):
    clock = ringmetrics.ManualClock(T0)
    m = Metrics(clock=clock, hold_connection=True)
    q = (
        "SELECT pid, backend_start FROM pg_stat_activity "
        "WHERE application_name = 'ringmetrics-syncer' AND datname = current_database()"
    )
    async with Chancy(db, plugins=[m]) as chancy:
        await chancy.migrate()
        m.worker_id = "w"
        await m.increment_counter("c:x", 2)
        await m.flush(chancy)
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            first = await (await conn.execute(q)).fetchall()
            assert len(first) == 1, "one connection held between flushes"
            clock.advance(60)
            await m.increment_counter("c:x", 3)
            await m.flush(chancy)
            assert await (await conn.execute(q)).fetchall() == first, "the same connection"
            await m._flush_and_stop(chancy)
            # (a closed connection's backend leaves pg_stat_activity soon after)
            for _ in range(100):
                if await (await conn.execute(q)).fetchall() == []:
                    break
                await asyncio.sleep(0.05)
            assert await (await conn.execute(q)).fetchall() == [], "closed at stop"
    one = next(r for r in await rows(db) if r[:2] == ("c:x", "1min"))
    assert one[4] == [3, 2]


async def test_final_flush_after_the_held_connection_was_killed_loses_nothing(db):
    # Found by the fifth adversarial review: with hold_connection=True, the
    # held connection killed while idle (a server restart, an idle timeout)
    # and then the worker stopping: 0.25's final flush (one attempt, in
    # Syncer.stop) failed on the dead connection and everything recorded
    # since the last flush was lost (stored 2, not 5). A flush now tries once
    # more on a fresh connection when its held one turns out closed.
    m = Metrics(hold_connection=True, sync_interval=3600, collection_interval=3600)
    on = "WHERE application_name = 'ringmetrics-syncer' AND datname = current_database()"
    async with Chancy(db, plugins=[m], notifications=False) as chancy:
        await chancy.migrate()
        async with Worker(chancy, worker_id="w", register_signal_handlers=False):
            await asyncio.sleep(0.5)
            await m.increment_counter("c:x", 2)
            await m.flush(chancy)
            async with await psycopg.AsyncConnection.connect(db, autocommit=True) as c:
                killed = await (await c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity " + on)).fetchall()
            assert len(killed) == 1
            await asyncio.sleep(0.3)
            await m.increment_counter("c:x", 3)
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as c:
        stored = await (
            await c.execute("SELECT values::text FROM chancy_metrics WHERE metric_key = 'c:x' AND resolution = '1day'")
        ).fetchall()
        for _ in range(100):
            if (await (await c.execute("SELECT count(*) FROM pg_stat_activity " + on)).fetchone())[0] == 0:
                break
            await asyncio.sleep(0.05)
        assert (await (await c.execute("SELECT count(*) FROM pg_stat_activity " + on)).fetchone())[0] == 0
    assert [v for (v,) in stored] == ["{5}"]


async def test_three_paths_and_cleanup(db):
    clock = ringmetrics.ManualClock(T0 + 10)
    a, b = Metrics(clock=clock), Metrics(clock=clock)
    async with Chancy(db, plugins=[a]) as chancy:
        await chancy.migrate()
        a.worker_id, b.worker_id = "w1", "w2"
        await a.increment_counter("job:x:succeeded", 1)
        await b.increment_counter("job:x:succeeded", 2)
        await a.record_histogram_value("job:x:execution_time", 1)
        await b.record_histogram_value("job:x:execution_time", 3)
        await b.record_gauge("queue:q:depth", 4)
        await b.flush(chancy)
        await a.record_gauge("queue:q:depth", 9)  # written later: the latest
        await a.flush(chancy)
        await a._sync_metrics(chancy)
        await a.increment_counter("job:x:succeeded", 10)  # not yet saved
        merged = await a.get_metrics(chancy)
        assert merged["job:x:succeeded"].values_1min == [(at(T0), 3)]
        assert merged["job:x:execution_time"].values_1hour == [
            (at(T0), {"count": 2, "sum": 4, "avg": 2.0, "min": 1, "max": 3})
        ]
        assert merged["queue:q:depth"].values_1day == [(at(T0), 9)]
        assert set(await a.get_metrics(chancy, "job")) == {"job:x:succeeded", "job:x:execution_time"}
        assert set(await a.get_metrics(chancy, "job:x:succeeded")) == {"job:x:succeeded"}
        assert await a.get_metrics(chancy, "jo") == {}
        # Own worker id: live, unsaved included.
        own = await a.get_metrics(chancy, "job:x:succeeded", worker_id="w1")
        assert own["job:x:succeeded"].values_5min == [(at(T0), 11)]
        # Another worker id: its rows.
        theirs = await a.get_metrics(chancy, worker_id="w2")
        assert theirs["job:x:succeeded"].values_1min == [(at(T0), 2)]
        assert theirs["queue:q:depth"].values_1min == [(at(T0), 4)]
        for metrics in (merged, own, theirs):
            for metric in metrics.values():
                for points in metric.values.values():
                    assert all(t.tzinfo is UTC for t, _ in points)
        # The merged view costs no query: it is the cache.
        chancy.pool.connection = None  # any query would fail
        assert await a.get_metrics(chancy) == merged
        del chancy.pool.connection
        # cleanup: whole rows older than maximum_metric_age.
        async with chancy.pool.connection() as conn:
            await conn.execute(
                "UPDATE chancy_metrics SET updated_at = now() - interval '91 days' WHERE worker_id = 'w2'"
            )
        assert await a.cleanup(chancy) == 12
        assert await a.cleanup(chancy) is None
        assert {r[2] for r in await rows(db)} == {"w1"}
        await a._flush_and_stop(chancy)
        await b._flush_and_stop(chancy)


async def test_invalid_input_is_warned_and_dropped(db, caplog):
    clock = ringmetrics.ManualClock(T0)
    m = Metrics(clock=clock)
    with caplog.at_level(logging.WARNING, logger="ringmetrics.chancy"):
        await m.increment_counter("ok:x", 1)
        await m.increment_counter("bad:x", "one")
        await m.record_gauge("bad:y", float("nan"))
        await m.record_histogram_value("", 1)
    assert [k for k, *_ in m.aggregator().series()] == ["ok:x"]
    assert "dropped a metric record" in caplog.text


async def test_a_database_at_version_2_is_refused(db):
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE chancy_schema_version (version_of VARCHAR(255) PRIMARY KEY, version INT);"
            "INSERT INTO chancy_schema_version VALUES ('metrics', 2)"
        )
    m = Metrics()
    m.worker_id = "w"
    await m.increment_counter("c:x", 1)
    chancy = types.SimpleNamespace(dsn=db, prefix="chancy_")
    with pytest.raises(Exception, match="Chancy 0.25 cannot use a database migrated by Chancy 0.26"):
        await m.flush(chancy)
    # Nothing was written, so the final flush at stop fails the same way.
    with pytest.raises(Exception, match="schema version 2"):
        m._syncer.stop(5)
    async with await psycopg.AsyncConnection.connect(db) as conn:
        assert await (await conn.execute("SELECT to_regclass('chancy_metrics')")).fetchone() == (None,)


class Everyone(AuthenticationBackend):
    async def authenticate(self, conn):
        return AuthCredentials(["authenticated"]), SimpleUser("test")


def api_client(chancy, worker):
    """Chancy 0.25's own metrics API routes, mounted as its Api plugin does."""

    def bind(f):
        return functools.partial(f, chancy=chancy, worker=worker)

    app = Starlette(middleware=[Middleware(AuthenticationMiddleware, backend=Everyone())])
    for route in MetricsApiPlugin(None).routes():
        app.add_route(route["path"], bind(route["endpoint"]), methods=route["methods"], name=route["name"])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def normalized(metrics, prefixes=("job:", "queue:", "global:")):
    """A merged view with ISO timestamps parsed (0.25's own plugin keeps
    strings) and only the keys both fleets' jobs write."""
    out = {}
    for key, metric in metrics.items():
        if not key.startswith(prefixes):
            continue
        out[key] = (
            metric.metric_type,
            {
                r: [
                    (datetime.datetime.fromisoformat(t).astimezone(UTC) if isinstance(t, str) else t, v)
                    for t, v in points
                ]
                for r, points in metric.values.items()
            },
        )
    return out


async def test_mixed_fleet_real_workers_and_the_api(db):
    """One worker with Chancy 0.25's own plugin, one with ours, one database
    and prefix, real jobs: both plugins' merged views and API answers
    agree."""
    theirs = Chancy025Metrics(sync_interval=1, collection_interval=3600)
    ours = Metrics(sync_interval=1, collection_interval=3600)
    async with (
        Chancy(db, plugins=[theirs], notifications=False) as app1,
        Chancy(db, plugins=[ours], notifications=False) as app2,
    ):
        await app1.migrate()
        await app1.declare(
            Queue("q", concurrency=2, polling_interval=1, executor="chancy.executors.asyncex.AsyncExecutor")
        )
        w1 = Worker(app1, worker_id="w-theirs", register_signal_handlers=False, queue_change_poll_interval=1)
        w2 = Worker(app2, worker_id="w-ours", register_signal_handlers=False, queue_change_poll_interval=1)
        await w1.start()
        await w2.start()
        refs = [
            ref
            async for batch in app1.push_many(
                [jobs025.quick.job.with_queue("q").with_kwargs(n=i) for i in range(20)]
                + [jobs025.boom.job.with_queue("q") for _ in range(3)]
            )
            for ref in batch
        ]
        await asyncio.wait_for(app1.wait_for_jobs(refs, interval=0.2), 60)
        want = None
        for _ in range(100):
            await asyncio.sleep(0.3)
            a = normalized(await theirs.get_metrics(app1))
            b = normalized(await ours.get_metrics(app2))
            total = sum(v for _, v in a.get("global:status:succeeded", ("", {"1day": []}))[1]["1day"])
            if a == b and total == 20:
                want = a
                break
        assert want is not None, (a, b)
        assert "job:jobs025.quick:succeeded" in want and "job:jobs025.boom:failed" in want
        # Both workers ran jobs and both wrote rows.
        workers = {r[2] for r in await rows(db)}
        assert {"w-theirs", "w-ours"} <= workers
        # The API: Chancy 0.25's own routes over each plugin.
        async with api_client(app1, w1) as c1, api_client(app2, w2) as c2:
            l1, l2 = (await c1.get("/api/v1/metrics")).json(), (await c2.get("/api/v1/metrics")).json()
            assert set(l1["categories"]) >= {"job", "queue", "global"}
            for category in ("job", "queue", "global"):
                assert sorted(l1["categories"][category]) == sorted(l2["categories"][category])
            for r in ("1min", "5min", "1hour", "1day"):
                d1 = (await c1.get(f"/api/v1/metrics/global:status?resolution={r}")).json()
                d2 = (await c2.get(f"/api/v1/metrics/global:status?resolution={r}")).json()
                assert d2 and d1.keys() == d2.keys()
                for key in d1:
                    assert d1[key]["type"] == d2[key]["type"]
                    assert [p["value"] for p in d1[key]["data"]] == [p["value"] for p in d2[key]["data"]]
                    t1 = [datetime.datetime.fromisoformat(p["timestamp"]) for p in d1[key]["data"]]
                    t2 = [datetime.datetime.fromisoformat(p["timestamp"]) for p in d2[key]["data"]]
                    assert t1 == t2
                    # Exact bucket starts (the dashboard's UTC grid).
                    width = {"1min": 60, "5min": 300, "1hour": 3600, "1day": 86400}[r]
                    assert all(t.timestamp() % width == 0 for t in t2)
            own = (await c2.get("/api/v1/metrics/global:status?resolution=1min&worker_id=w-ours")).json()
            other = (await c2.get("/api/v1/metrics/global:status?resolution=1min&worker_id=w-theirs")).json()
            theirs_view = (await c1.get("/api/v1/metrics/global:status?resolution=1min&worker_id=w-ours")).json()
            assert own and other
            assert {k: [p["value"] for p in v["data"]] for k, v in own.items()} == {
                k: [p["value"] for p in v["data"]] for k, v in theirs_view.items()
            }
        await w2.stop()
        await w1.stop()
    # Our final flush at stop saved everything our worker recorded.
    final = [r for r in await rows(db) if r[2] == "w-ours" and r[:2] == ("global:status:succeeded", "1day")]
    assert final and sum(final[0][4]) > 0


async def test_stop_flushes_through_repeated_cancellation(db):
    """The worker's stop cancels run() (0.25 cancels again and again while
    other tasks finish): the final flush still completes, even while the
    table is locked for a moment."""
    m = Metrics(sync_interval=3600, collection_interval=3600)
    async with Chancy(db, plugins=[m], notifications=False) as chancy:
        await chancy.migrate()
        w = Worker(chancy, worker_id="w-stop", register_signal_handlers=False, queue_change_poll_interval=1)
        await w.start()
        await asyncio.sleep(0.5)
        await m.increment_counter("stop:probe", 3)
        async with await psycopg.AsyncConnection.connect(db) as locker:
            await locker.execute("LOCK TABLE chancy_metrics IN ACCESS EXCLUSIVE MODE")
            stopping = asyncio.ensure_future(w.stop())
            run = next(t for t in w.manager._tasks if t.get_name() == "Metrics")
            for _ in range(5):
                await asyncio.sleep(0.1)
                run.cancel()  # more cancellation while the flush waits
            assert not stopping.done()
            await locker.rollback()
        assert await asyncio.wait_for(stopping, 30) is True
    probe = [r for r in await rows(db) if r[0] == "stop:probe"]
    assert len(probe) == 4 and all(r[4] == [3] for r in probe)


async def test_real_worker_records_jobs_and_a_restart_keeps_history(db):
    """Real jobs through a real worker with ours alone; the worker restarts
    under the same id and its rows keep the first run's buckets. (A bucket
    both runs record, such as today's 1day bucket of a key both record,
    holds the second run's value: see the module's documentation.)"""
    for func, n in ((jobs025.quick, 5), (jobs025.boom, 3)):
        m = Metrics(sync_interval=1, collection_interval=3600)
        async with Chancy(db, plugins=[m], notifications=False) as chancy:
            await chancy.migrate()
            await chancy.declare(
                Queue("q", concurrency=2, polling_interval=1, executor="chancy.executors.asyncex.AsyncExecutor"),
                upsert=True,
            )
            w = Worker(chancy, worker_id="w-fixed", register_signal_handlers=False, queue_change_poll_interval=1)
            await w.start()
            refs = [ref async for batch in chancy.push_many([func.job.with_queue("q") for _ in range(n)]) for ref in batch]
            await asyncio.wait_for(chancy.wait_for_jobs(refs, interval=0.2), 60)
            await asyncio.sleep(0.2)
            await w.stop()
    stored = {r[:2]: r for r in await rows(db) if r[2] == "w-fixed"}
    for r in ("1min", "5min", "1hour", "1day"):
        assert sum(stored[("job:jobs025.quick:succeeded", r)][4]) == 5
        assert sum(stored[("job:jobs025.boom:failed", r)][4]) == 3
        assert sum(v["count"] for v in stored[("job:jobs025.quick:execution_time", r)][4]) == 5


async def test_table_sizes_are_histograms(db):
    """0.25's leader task records table sizes as histograms (0.26: gauges):
    ours keeps 0.25's kinds, so a fleet mixed with 0.25's own plugin never
    writes one key with two types."""
    m = Metrics(collection_interval=0.05)
    async with Chancy(db, plugins=[m], notifications=False) as chancy:
        await chancy.migrate()
        leader = asyncio.Event()
        leader.set()
        worker = types.SimpleNamespace(is_leader=leader)
        task = asyncio.ensure_future(m._collect_table_sizes(worker, chancy))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any(k == "table:metrics:total_size_bytes" for k, *_ in m.aggregator().series()):
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        kinds = {k: kind for k, kind, _ in m.aggregator().series()}
        assert kinds["table:metrics:total_size_bytes"] == "histogram"
        assert kinds["table:jobs:index_size_bytes"] == "histogram"
        assert kinds["metrics:table_size_runs"] == "counter"
        m.worker_id = "w"
        await m.flush(chancy)
        await m._flush_and_stop(chancy)
    types_stored = {(r[0], r[5]) for r in await rows(db) if r[0].startswith("table:metrics:")}
    assert types_stored == {
        ("table:metrics:total_size_bytes", "histogram"),
        ("table:metrics:table_size_bytes", "histogram"),
        ("table:metrics:index_size_bytes", "histogram"),
    }
