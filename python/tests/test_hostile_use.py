"""Adversarial tests: each one is a defect found by attacking the plugin and
the native API as a user would. Where Chancy's own plugin defines the
behaviour, the test runs against both and Chancy's passes."""

import asyncio
import datetime
import os

import psycopg
import pytest
from chancy.plugins.metrics import Metrics as ChancyMetrics
from test_persistence import T0, Clock, app, points, syncer_threads, worker

from ringmetrics.chancy import Metrics

pytestmark = pytest.mark.timeout(180)

BOTH = [("chancy", ChancyMetrics), ("ours", Metrics)]


async def drop_tables(dsn, prefix):
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND starts_with(tablename, %s)", [prefix]
        )
        for (t,) in await cur.fetchall():
            await conn.execute(f'DROP TABLE IF EXISTS "{t}" CASCADE')


@pytest.mark.parametrize("name,cls", BOTH)
async def test_a_captured_record_method_follows_worker_id(dsn, prefix, name, cls):
    """``metrics.worker_id`` is read at each call in Chancy, also through a
    bound method captured before the assignment (a partial, a callback
    registered at start-up)."""
    plugin = cls(sync_interval=60)
    inc = plugin.increment_counter
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        plugin.worker_id = "w-late"
        await inc("captured", 3)
        await plugin.flush(chancy)
        result = await plugin.get_metrics(chancy, "captured", worker_id="w-late", resolution="1min")
        assert sum(v for _, v in points(result, "captured")) == 3.0, name


@pytest.mark.parametrize("name,cls", BOTH)
async def test_a_captured_record_method_is_saved_after_its_aggregator_was_renewed(dsn, prefix, monkeypatch, name, cls):
    """A full aggregator renewed after an hour: records made through a bound
    method captured earlier go to the retired aggregator, which has been
    detached, and are never saved. Chancy saves them."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = cls(sync_interval=60, max_buffered_points=8)
    inc = plugin.increment_counter
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await inc("a", 1)
        await inc("b", 1)
        await plugin.flush(chancy)
        clock.t = T0 + 2 * 3600 + 5
        await plugin.flush(chancy)
        await inc("a", 5)
        await plugin.flush(chancy)
        result = await plugin.get_metrics(chancy, "a", resolution="1min")
        assert points(result, "a") == [(T0 + 2 * 3600, 5.0)], name


@pytest.mark.parametrize("name,cls", BOTH)
async def test_direct_sessions_of_past_worker_ids_are_freed(dsn, prefix, monkeypatch, name, cls):
    """A worker id per request/tenant for direct calls: in Chancy, buckets are
    freed once saved and closed, so memory does not grow with the number of
    worker ids ever used. Ours keeps one aggregator per worker id for ever."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = cls(sync_interval=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for i in range(200):
            plugin.worker_id = f"tenant-{i}"
            await plugin.increment_counter("req", 1)
        plugin.worker_id = ""
        await plugin.flush(chancy)
        # Three months on, everything has closed, been saved and expired.
        clock.t = T0 + 100 * 86400
        await plugin.flush(chancy)
        await plugin.flush(chancy)
        if name == "chancy":
            held = len(plugin._buckets)
        else:
            held = sum(len(a) for a in plugin.aggregators()) + len(plugin.aggregators())
        assert held <= 2, f"{name}: still holding {held} series/aggregators for past worker ids"


@pytest.mark.parametrize("name,cls", BOTH)
async def test_a_clock_stepped_back_keeps_new_records(dsn, prefix, monkeypatch, name, cls):
    """The wall clock steps back 30 minutes (NTP correction, VM restore):
    Chancy keys buckets by time and keeps what is recorded after the step."""
    clock = Clock(monkeypatch, T0 + 1805)
    plugin = cls(sync_interval=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await plugin.increment_counter("step", 1)
        await plugin.flush(chancy)
        clock.t = T0 + 5
        await plugin.increment_counter("step", 2)
        await plugin.flush(chancy)
        result = await plugin.get_metrics(chancy, "step", resolution="1min")
        assert points(result, "step") == [(T0, 2.0)], name


async def test_a_failed_flush_without_a_worker_leaves_no_syncer_thread(dsn, prefix):
    """``flush`` with no worker running stops the syncer afterwards, but only
    when the flush succeeded: after a failed flush (database unavailable),
    the syncer thread stays for as long as the plugin lives, although no run
    loop will ever use it."""
    before = set(syncer_threads())
    plugin = Metrics(sync_interval=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await plugin.increment_counter("x", 1)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'ALTER TABLE "{prefix}metrics" RENAME TO "{prefix}metrics_away"')
            try:
                with pytest.raises(Exception):
                    await plugin.flush(chancy)
            finally:
                await conn.execute(f'ALTER TABLE "{prefix}metrics_away" RENAME TO "{prefix}metrics"')
    await asyncio.sleep(0.5)
    assert set(syncer_threads()) == before, "a syncer thread outlives the app after a failed flush"


def test_a_session_id_given_twice_to_one_syncer_does_not_poison_every_flush(dsn, prefix):
    """``Syncer.attach(agg, worker_id, session_id)`` accepts a session id
    that another attached aggregator already writes under. Every flush then
    fails for good with PostgreSQL's "ON CONFLICT DO UPDATE command cannot
    affect row a second time", and an innocent third aggregator's data is
    never saved either. Expected: attach refuses the duplicate with a clear
    ValueError (or the flush keeps the others saving)."""
    import uuid

    from ringmetrics import Aggregator, ManualClock, Syncer

    asyncio.run(_migrate(dsn, prefix))
    clock = ManualClock(T0 + 5)
    a, b, c = (Aggregator(4, clock=clock) for _ in range(3))
    a.increment_counter("k", 1)
    b.increment_counter("k", 2)
    c.increment_counter("innocent", 4)
    syncer = Syncer(dsn, prefix=prefix, retention_seconds=[10**9] * 4)
    try:
        sid = str(uuid.uuid4())
        syncer.attach(a, "w", sid)
        syncer.attach(c, "w")
        try:
            syncer.attach(b, "w", sid)
        except ValueError:
            return  # refused clearly: fine
        try:
            syncer.flush(10)
        except Exception:
            pass
        with psycopg.connect(dsn, autocommit=True) as conn:
            (n,) = conn.execute(f'SELECT count(*) FROM "{prefix}metrics"').fetchone()
        assert n > 0, "nothing saved at all: one duplicate session id blocks every aggregator of the syncer"
    finally:
        try:
            syncer.stop(5)
        except Exception:
            pass


async def _migrate(dsn, prefix):
    from chancy import Chancy

    async with Chancy(dsn, prefix=prefix, notifications=False) as chancy:
        await chancy.migrate()


@pytest.mark.parametrize("name,cls", BOTH)
async def test_the_plugin_saves_in_a_child_forked_while_a_worker_ran(dsn, prefix, name, cls):
    """A process forks while a worker runs (a pre-fork server, a fork-based
    multiprocessing pool): in the child, the inherited plugin with a new
    Chancy app records and flushes. Chancy's plugin saves; ours keeps the
    parent's dead syncer (same DSN and prefix) and every flush in the child
    fails."""
    import warnings

    plugin = cls(sync_interval=3600)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with worker(chancy):
            await asyncio.sleep(0.5)
            await plugin.increment_counter("parent", 1)
            await plugin.flush(chancy)  # the syncer is alive now
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                code = 1
                try:

                    async def child():
                        async with app(dsn, prefix, plugin) as c:
                            await plugin.increment_counter("child", 1)
                            await plugin.flush(c)

                    asyncio.run(child())
                    code = 0
                except BaseException as e:
                    os.write(2, f"child: {e!r}\n".encode())
                finally:
                    os._exit(code)
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, f"{name}: the child's flush failed"
        result = await ChancyMetrics().get_metrics(chancy, "child", resolution="1min")
        assert sum(v for _, v in points(result, "child")) == 1.0, name


@pytest.mark.parametrize("name,cls", BOTH)
async def test_a_sync_interval_raised_after_construction_loses_no_minute(dsn, prefix, monkeypatch, name, cls):
    """Chancy's ``run`` reads ``self.sync_interval`` afresh each round, so
    raising it on a live plugin (to save fewer transactions) is supported.
    Our ring depths are sized from the constructor's value only: with
    ``sync_interval`` raised from 60 to 1800, minutes older than the 24
    slots of the 1min ring are overwritten before the next save."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = cls(sync_interval=60)
    plugin.sync_interval = 1800
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for minute in range(30):
            clock.t = T0 + minute * 60 + 5
            await plugin.increment_counter("jobs", 1)
        await plugin.flush(chancy)  # the next save, 30 minutes on
        result = await plugin.get_metrics(chancy, "jobs", resolution="1min")
        assert len(points(result, "jobs")) == 30, name


@pytest.mark.parametrize("retention", [10**17, 10**18])
def test_cleanup_with_a_keep_forever_retention_deletes_nothing(dsn, prefix, retention):
    """``cleanup(dsn, retention_seconds=...)`` (and C's ``rm_cleanup``)
    accept any positive retention; a very long one ("keep forever") wraps
    the cutoff's nanoseconds (``chunk * 1_000_000_000`` overflows i64 in
    read.rs) and deletes fresh rows. Expected: nothing deleted, or a
    ValueError naming the maximum."""
    from ringmetrics import Aggregator, Syncer, cleanup

    asyncio.run(_migrate(dsn, prefix))
    agg = Aggregator(4)
    agg.increment_counter("fresh", 1)
    syncer = Syncer(dsn, prefix=prefix)
    syncer.attach(agg)
    syncer.flush(10)
    syncer.stop(10)
    try:
        removed = cleanup(dsn, prefix=prefix, retention_seconds=[retention] * 4)
    except ValueError:
        return
    assert removed == 0, f"cleanup with retention {retention} s deleted {removed} fresh rows"


@pytest.mark.parametrize("span", [10**10, 10**17])
def test_read_metrics_over_a_wide_window_finds_the_bucket_or_refuses(dsn, prefix, span):
    """``read_metrics`` (and C's ``rm_read_metrics``) accept any aligned
    window; one reaching past year 2262 wraps its nanoseconds and silently
    returns the series with no points (a window of 1e12 s finds it again).
    Expected: the bucket, or a ValueError for a window out of range."""
    import time

    from ringmetrics import Aggregator, Syncer, read_metrics

    asyncio.run(_migrate(dsn, prefix))
    agg = Aggregator(4)
    agg.increment_counter("k", 1)
    syncer = Syncer(dsn, prefix=prefix)
    syncer.attach(agg)
    syncer.flush(10)
    syncer.stop(10)
    day = 86400
    now = int(time.time()) // day * day
    try:
        result = read_metrics(dsn, prefix=prefix, resolution="1day", start=(now - span) // day * day, end=(now + span) // day * day)
    except ValueError:
        return
    assert [len(series[-1]) for series in result] == [1], result



async def _switch_while_a_is_locked(dsn, prefix, plugin, a, b):
    """Flush ``plugin`` to ``b`` while ``a``'s metrics table is locked; the
    longest event-loop stall seen, and the flush's exception (or None)."""
    await plugin.increment_counter("x", 1)
    await plugin.flush(a)
    await plugin.increment_counter("x", 2)
    loop = asyncio.get_running_loop()
    gaps, error = [0.0], None
    async with await psycopg.AsyncConnection.connect(dsn) as locker:
        await locker.execute(f'LOCK TABLE "{prefix}a_metrics" IN ACCESS EXCLUSIVE MODE')

        async def ticker():
            last = loop.time()
            while True:
                await asyncio.sleep(0.01)
                gaps.append(loop.time() - last)
                last = loop.time()

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        try:
            await plugin.flush(b)
        except Exception as e:
            error = e
        finally:
            await asyncio.sleep(0.05)  # the ticker's next gap shows any stall
            tick.cancel()
            await locker.rollback()
    return max(gaps), error


async def test_switching_apps_never_blocks_the_event_loop(dsn, prefix):
    """The same plugin flushed to app B while app A's worker runs: our
    ``_syncer_for`` stops A's syncer with a blocking ``Syncer.stop(60)`` on
    the event loop, whose final flush waits on A's database (here a lock:
    10 s of lock_timeout). Every task of the process stalls meanwhile, and
    the flush to B fails with A's error. Chancy's flush to B never touches
    A."""
    plugin = Metrics(sync_interval=3600)
    async with app(dsn, f"{prefix}a_", plugin) as a, app(dsn, f"{prefix}b_", plugin) as b:
        await a.migrate()
        await b.migrate()
        w = worker(a)
        await w.start()
        try:
            await asyncio.sleep(0.5)
            stall, error = await _switch_while_a_is_locked(dsn, prefix, plugin, a, b)
        finally:
            try:
                await w.stop()
            except Exception:
                pass
        assert stall < 1.0 and error is None, f"the event loop stalled {stall:.1f} s; flush to B raised {error!r}"
    await drop_tables(dsn, prefix)


async def test_a_failed_app_switch_does_not_leave_a_stopped_syncer_behind(dsn, prefix):
    """After the switch above failed (A's final flush raised inside
    ``Syncer.stop``), ``self._syncer`` still holds A's now stopped syncer:
    once A is healthy again, every flush to A, the worker's final flush in
    ``on_worker_stopped`` included, raises "the syncer has stopped" for the
    life of the plugin, and x is never saved."""
    plugin = Metrics(sync_interval=3600)
    async with app(dsn, f"{prefix}a_", plugin) as a, app(dsn, f"{prefix}b_", plugin) as b:
        await a.migrate()
        await b.migrate()
        w = worker(a)
        await w.start()
        try:
            await asyncio.sleep(0.5)
            await _switch_while_a_is_locked(dsn, prefix, plugin, a, b)
            # A is healthy again.
            await plugin.flush(a)
        finally:
            stopped = None
            try:
                await w.stop()
            except Exception as e:
                stopped = e
        assert stopped is None, f"the worker's stop raised {stopped!r}"
    await drop_tables(dsn, prefix)


@pytest.mark.parametrize("name,cls", BOTH)
async def test_a_dsn_with_a_client_encoding_chancy_accepts_saves(dsn, prefix, monkeypatch, name, cls):
    """``PGCLIENTENCODING=LATIN1`` (or ``client_encoding=LATIN1`` in the DSN)
    works for Chancy, whose psycopg connections transcode. The syncer
    refuses any client_encoding but UTF8, so with the plugin every flush
    fails. The syncer's own session encoding is private to it: it could
    use UTF8 whatever the DSN asks (as it does for ``auto``)."""
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    plugin = cls(sync_interval=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await plugin.increment_counter("café", 1)
        await plugin.flush(chancy)
        result = await plugin.get_metrics(chancy, "café", resolution="1min")
        assert sum(v for _, v in points(result, "café")) == 1.0, name


def test_a_script_with_a_failing_periodic_syncer_exits_promptly():
    """A script that keeps a periodic ``Syncer`` (``interval=0.2``) whose
    database refuses connections takes 10 s to exit: the interpreter's
    shutdown waits for the syncer thread, which is logging its failure
    through the Python logging bridge. With a healthy database, or with
    ``del syncer`` before the end, the same script exits at once."""
    import subprocess
    import sys
    import time

    script = (
        "import time\n"
        "from ringmetrics import Aggregator, Syncer\n"
        "agg = Aggregator(4)\n"
        "agg.increment_counter('k', 1)\n"
        "syncer = Syncer('host=127.0.0.1 port=1 user=u dbname=d connect_timeout=1', prefix='x_', interval=0.2)\n"
        "syncer.attach(agg)\n"
        "time.sleep(0.5)\n"
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=True)
    took = time.monotonic() - started
    assert took < 3.0, f"the interpreter took {took:.1f} s to exit"


@pytest.mark.parametrize("name,cls", BOTH)
def test_a_large_max_buffered_points_chancy_accepts_constructs(name, cls):
    """``max_buffered_points`` is a limit in Chancy (memory is used as points
    arrive), so ``10**9`` ("no practical limit") is accepted. Ours sizes
    each aggregator from it (``max_buffered_points // 4`` series, reserved
    up front) and refuses anything over 16,777,216 series: the plugin
    cannot be constructed. (``10**7`` already maps 13 GB of address space
    per session.)"""
    cls(max_buffered_points=10**9)
