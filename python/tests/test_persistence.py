"""Persistence through the plugin, read back with Chancy's own get_metrics:
saved buckets stay saved, nothing is written twice, every recording path is
saved while a worker runs, memory is bounded as Chancy bounds it."""

import asyncio
import datetime
import logging
import os

import psycopg
import pytest
from chancy import Chancy, Worker
from chancy.plugins.metrics import Metrics as ChancyMetrics
from chancy.plugins.metrics import metrics as chancy_metrics

from ringmetrics import Aggregator, ManualClock, read_metrics
from ringmetrics.chancy import Metrics

pytestmark = pytest.mark.timeout(180)

#: 2026-03-02 00:00:00 UTC, a multiple of every chunk width but a day's.
T0 = 1_772_409_600


class Clock:
    """Chancy's ``utcnow``, patched to a time the test moves."""

    def __init__(self, monkeypatch, t: float) -> None:
        self.t = t
        monkeypatch.setattr(chancy_metrics, "utcnow", self)

    def __call__(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.t, datetime.UTC)


def app(dsn, prefix, plugin, **kwargs):
    return Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False, **kwargs)


def worker(chancy, worker_id="w"):
    return Worker(
        chancy,
        worker_id=worker_id,
        register_signal_handlers=False,
        heartbeat_poll_interval=1,
        queue_change_poll_interval=1,
    )


def points(result, key):
    metric = result["series"].get(key)
    return [] if metric is None else [(p.timestamp.timestamp(), p.value) for p in metric.data]


def syncer_threads():
    found = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("ringmetrics-syn"):
                    found.append(int(tid))
        except OSError:
            pass
    return found


async def syncer_connections(dsn):
    """The syncer's connections to ``dsn``'s database (give a test its own
    database: other tests may run syncers on the same server)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ringmetrics-syncer' "
            "AND datname = current_database()"
        )
        return (await cur.fetchone())[0]


async def syncer_backends(dsn):
    """(pid, backend_start) of the syncer's connections to ``dsn``'s database."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity "
            "WHERE application_name = 'ringmetrics-syncer' AND datname = current_database()"
        )
        return await cur.fetchall()


@pytest.fixture
def own_dsn(dsn):
    """A database of this test's own, dropped afterwards."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"rm_{os.getpid()}_{id(object())}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(**{**conninfo_to_dict(dsn), "dbname": name})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def bursty(plugin, chancy, clock):
    """Busy 20 minutes, idle 30, busy 7 more, flushed every minute as
    ``sync_interval=60`` does: 27 minutes with data."""
    for minute in range(57):
        clock.t = T0 + minute * 60 + 5
        if minute < 20 or minute >= 50:
            await plugin.increment_counter("burst", minute + 1)
        await plugin.flush(chancy)


async def test_a_bursty_series_keeps_every_saved_minute(dsn, prefix, monkeypatch):
    clock = Clock(monkeypatch, T0)
    expected = [(T0 + m * 60, float(m + 1)) for m in [*range(20), *range(50, 57)]]
    for name, plugin in (("chancy", ChancyMetrics(sync_interval=60)), ("ours", Metrics(sync_interval=60))):
        async with app(dsn, f"{prefix}{name}_", plugin) as chancy:
            await chancy.migrate()
            await bursty(plugin, chancy, clock)
            result = await plugin.get_metrics(chancy, "burst", resolution="1min")
            assert points(result, "burst") == expected, name
            five = points(await plugin.get_metrics(chancy, "burst", resolution="5min"), "burst")
            assert sum(v for _, v in five) == sum(v for _, v in expected), name
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for t in ("metrics", "metric_definitions", "schema_version"):
            await conn.execute(f'DROP TABLE IF EXISTS "{prefix}chancy_{t}" CASCADE')


async def test_unchanged_chunks_are_not_rewritten_and_cleanup_stays_done(dsn, prefix, monkeypatch):
    clock = Clock(monkeypatch, T0)
    plugin = Metrics(sync_interval=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await plugin.increment_counter("a", 1)
        await plugin.increment_counter("b", 1)
        await plugin.flush(chancy)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            xmin = f'SELECT count(*) FILTER (WHERE xmin::text::bigint > %s) FROM "{prefix}metrics"'
            cur = await conn.execute("SELECT txid_current()")
            (mark,) = await cur.fetchone()
            clock.t += 1
            await plugin.increment_counter("a", 1)
            await plugin.flush(chancy)
            cur = await conn.execute(xmin, [mark])
            assert (await cur.fetchone())[0] == 4, "only a's four chunks are rewritten, not b's"
            # Two hours on, cleanup removes the expired 1min chunks; a later
            # change to the series never brings them back.
            clock.t = T0 + 2 * 3600
            assert await plugin.cleanup(chancy) >= 2
            await plugin.increment_counter("a", 1)
            await plugin.flush(chancy)
            cur = await conn.execute(
                f'SELECT count(*) FROM "{prefix}metrics" WHERE resolution = 60 AND chunk < %s',
                [datetime.datetime.fromtimestamp(T0 + 3600, datetime.UTC)],
            )
            assert (await cur.fetchone())[0] == 0, "cleanup's rows stay removed"
        result = await plugin.get_metrics(chancy, "a", resolution="1day")
        assert points(result, "a") == [(T0, 3.0)]


async def test_direct_calls_are_saved_every_sync_interval_while_a_worker_runs(dsn, prefix):
    plugin = Metrics(sync_interval=1)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with worker(chancy) as w:
            await plugin.increment_counter("direct", 2)
            await w.increment_counter("hub", 3)
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                result = await reader.get_metrics(chancy, resolution="1min")
                if points(result, "direct") and points(result, "hub"):
                    break
                assert asyncio.get_running_loop().time() < deadline, "not saved without an explicit flush"
                await asyncio.sleep(0.2)
            assert sum(v for _, v in points(result, "direct")) == 2.0
            assert sum(v for _, v in points(result, "hub")) == 3.0


async def test_the_periodic_save_goes_through_self_flush_and_rereads_sync_interval(dsn, prefix):
    calls = []

    class Counting(Metrics):
        async def flush(self, chancy):
            calls.append(asyncio.get_running_loop().time())
            await super().flush(chancy)

    plugin = Counting(sync_interval=1)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with worker(chancy):
            await asyncio.sleep(2.6)
            assert len(calls) >= 2
            plugin.sync_interval = 3600
            await asyncio.sleep(1.2)  # the round already sleeping ends
            seen = len(calls)
            await asyncio.sleep(2.0)
            assert len(calls) == seen, "a changed sync_interval is read afresh"


async def test_a_restarted_syncer_continues_its_session_and_never_doubles(dsn, prefix):
    agg = Aggregator(8, clock=ManualClock(T0))
    agg.increment_counter("jobs:done", 5)
    first = agg.start_syncer(dsn, prefix=prefix, worker_id="w", interval=None)
    with pytest.raises(ValueError, match="already has a running syncer"):
        agg.start_syncer(dsn, prefix=prefix, worker_id="w", interval=None)
    first.flush()
    first.stop()
    again = agg.start_syncer(dsn, prefix=prefix, worker_id="w", interval=None)
    again.flush()
    assert again.session_id == first.session_id
    with pytest.raises(ValueError, match="under session"):
        Aggregator.start_syncer(agg, dsn, prefix=prefix, session_id="00000000-0000-0000-0000-000000000001")
    again.stop()
    series = read_metrics(dsn, prefix=prefix, resolution="1min", start=T0, end=T0 + 60)
    assert [(k, [p[5] for p in pts]) for k, _, _, pts in series] == [("jobs:done", [5.0])]


async def test_max_buffered_points_bounds_what_is_unsaved_not_the_keys_of_a_life(dsn, prefix, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    clock = Clock(monkeypatch, T0)
    plugin = Metrics(sync_interval=60, max_buffered_points=8)  # two series unsaved
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await plugin.increment_counter("a", 1)
        await plugin.increment_counter("b", 1)
        await plugin.increment_counter("c", 1)  # buffer full: dropped, as Chancy does
        assert plugin.drops()["capacity_exhausted"] == 1
        await plugin.flush(chancy)
        for day in range(1, 14):
            clock.t = T0 + day * 86400
            await plugin.flush(chancy)  # the periodic flush
        await plugin.increment_counter("c", 1)
        await plugin.increment_counter("a", 1)
        await plugin.flush(chancy)
        assert plugin.drops()["capacity_exhausted"] == 1
        assert await plugin.list_metrics(chancy) == ["a", "b", "c"]
        result = await plugin.get_metrics(chancy, resolution="1day", range_seconds=30 * 86400)
        assert points(result, "a") == [(T0, 1.0), (T0 + 13 * 86400, 1.0)]
        assert points(result, "c") == [(T0 + 13 * 86400, 1.0)]
        assert len(plugin.aggregators()) <= 2, "a full, saved aggregator is freed"


async def test_nothing_is_left_running_once_no_worker_runs(own_dsn, prefix):
    dsn = own_dsn
    before = set(syncer_threads())
    plugin = Metrics(sync_interval=1)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await plugin.increment_counter("direct", 1)
        await plugin.flush(chancy)
        assert set(syncer_threads()) == before and await syncer_connections(dsn) == 0
        async with worker(chancy) as w:
            await w.increment_counter("hub", 1)
            await plugin.flush(chancy)
            assert await syncer_connections(dsn) == 0, "no connection held between flushes"
        assert set(syncer_threads()) == before and await syncer_connections(dsn) == 0
    reader = ChancyMetrics()
    async with app(dsn, prefix, reader) as chancy:
        result = await reader.get_metrics(chancy, resolution="1min")
    assert sum(v for _, v in points(result, "direct")) == 1.0


async def test_hold_connection_keeps_one_connection_and_closes_it_at_stop(own_dsn, prefix):
    # hold_connection=True: one connection across flushes (no connection
    # start per flush), closed once no worker runs; every path still saved.
    dsn = own_dsn
    before = set(syncer_threads())
    plugin = Metrics(sync_interval=1, hold_connection=True)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with worker(chancy) as w:
            await w.increment_counter("hub", 1)
            await plugin.increment_counter("direct", 2)
            await plugin.flush(chancy)
            first = await syncer_backends(dsn)
            assert len(first) == 1, "one connection held between flushes"
            await plugin.increment_counter("direct", 3)
            await plugin.flush(chancy)
            assert await syncer_backends(dsn) == first, "the same connection, not a new one per flush"
        assert set(syncer_threads()) == before
        # (a closed connection's backend leaves pg_stat_activity soon after)
        for _ in range(100):
            if await syncer_connections(dsn) == 0:
                break
            await asyncio.sleep(0.05)
        assert await syncer_connections(dsn) == 0, "closed once no worker runs"
    reader = ChancyMetrics()
    async with app(dsn, prefix, reader) as chancy:
        result = await reader.get_metrics(chancy, resolution="1min")
    assert sum(v for _, v in points(result, "direct")) == 5.0
    assert sum(v for _, v in points(result, "hub")) == 1.0



async def test_worker_id_is_read_at_each_direct_call(dsn, prefix):
    plugin = Metrics(sync_interval=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await plugin.increment_counter("c", 1)
        plugin.worker_id = "w-1"
        await plugin.increment_counter("c", 2)
        plugin.worker_id = "w-2"
        await plugin.increment_counter("c", 4)
        plugin.worker_id = ""
        await plugin.increment_counter("c", 8)
        await plugin.flush(chancy)
        for worker_id, total in ((None, 15.0), ("w-1", 2.0), ("w-2", 4.0)):
            result = await plugin.get_metrics(chancy, "c", worker_id=worker_id, resolution="1min")
            assert sum(v for _, v in points(result, "c")) == total, worker_id


async def test_records_after_a_worker_stopped_carry_its_worker_id(dsn, prefix):
    import uuid

    from chancy.job import QueuedJob

    plugin = Metrics(sync_interval=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w = worker(chancy, "late-worker")
        await w.start()
        await w.stop()
        now = datetime.datetime.now(datetime.UTC)
        job = QueuedJob(
            id=uuid.uuid4(),
            func="jobs.quick",
            queue="late",
            created_at=now,
            started_at=now,
            completed_at=now,
            state=QueuedJob.State.SUCCEEDED,
        )
        await plugin.on_job_updated(worker=w, job=job)
        await plugin.flush(chancy)
        result = await plugin.get_metrics(chancy, "queue:late", worker_id="late-worker", resolution="1min")
        assert points(result, "queue:late:throughput"), "saved under the stopped worker's id"


async def test_a_conflicting_definition_is_warned_in_python_logging_and_rechecked(dsn, prefix, caplog):
    caplog.set_level(logging.WARNING)
    plugin = Metrics(sync_interval=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                f"INSERT INTO \"{prefix}metric_definitions\" (key, metric_type, unit) VALUES ('x', 'gauge', 'bytes')"
            )
            await plugin.increment_counter("x", 1)
            await plugin.increment_counter("y", 1)
            await plugin.flush(chancy)
            warned = [r for r in caplog.records if r.name.startswith("ringmetrics") and '"x"' in r.getMessage()]
            assert warned and warned[0].levelno == logging.WARNING, [r.getMessage() for r in caplog.records]
            assert await plugin.list_metrics(chancy) == ["x", "y"]
            assert points(await plugin.get_metrics(chancy, "x", resolution="1min"), "x") == []
            # The stored definition goes away (cleanup of an orphan): the
            # next flush checks again and saves what was held.
            await conn.execute(f"DELETE FROM \"{prefix}metric_definitions\" WHERE key = 'x'")
            await plugin.flush(chancy)
            result = await plugin.get_metrics(chancy, "x", resolution="1min")
            assert sum(v for _, v in points(result, "x")) == 1.0


async def test_a_later_plugin_failing_to_start_leaves_nothing_running(own_dsn, prefix):
    dsn = own_dsn
    from chancy.plugin import Plugin, PluginScope

    class Broken(Plugin):
        @staticmethod
        def get_identifier():
            return "test.broken"

        @staticmethod
        def get_scope():
            return PluginScope.WORKER

        async def on_worker_started(self, *, worker):
            raise RuntimeError("broken plugin")

    before = set(syncer_threads())
    plugin = Metrics(sync_interval=1)
    async with Chancy(dsn, prefix=prefix, plugins=[plugin, Broken()], notifications=False) as chancy:
        await chancy.migrate()
        w = worker(chancy, "never-started")
        with pytest.raises(RuntimeError, match="broken plugin"):
            await w.start()
        await w.manager.cancel_all()
        await asyncio.sleep(1.5)
        assert set(syncer_threads()) == before and await syncer_connections(dsn) == 0


async def test_a_failed_final_flush_keeps_the_session_and_a_retry_saves_it(dsn, prefix):
    plugin = Metrics(sync_interval=3600)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w = worker(chancy, "retry-stop")
        await w.start()
        await w.increment_counter("kept", 1)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'ALTER TABLE "{prefix}metrics" RENAME TO "{prefix}metrics_away"')
            with pytest.raises(Exception):
                await w.stop()
            assert w in plugin._workers, "the subscription and session are kept for a retry"
            await conn.execute(f'ALTER TABLE "{prefix}metrics_away" RENAME TO "{prefix}metrics"')
        await w.stop()
        result = await reader.get_metrics(chancy, "kept", resolution="1min")
        assert sum(v for _, v in points(result, "kept")) == 1.0
