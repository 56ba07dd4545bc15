"""Adversarial tests of the one-shot retry on a closed held connection
(``Metrics(hold_connection=True)``) in real Chancy workers running real
jobs, of ``read_metrics`` on a catalog not made by Chancy's migrations, and
of the native API's bool refusal and ``Aggregator``'s text signature."""

import asyncio
import inspect
import os
import pathlib
import subprocess
import sys
import textwrap

import psycopg
import pytest
from chancy import Queue

import jobs
import ringmetrics
from ringmetrics import Aggregator, ManualClock, StorageError, read_metrics
from ringmetrics.chancy import Metrics
from test_attack_hold import HELD, chancy_sum, held, kill_syncer_connections, no_connection_left
from test_persistence import app, own_dsn, worker  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXECUTOR = "chancy.executors.asyncex.AsyncExecutor"
#: 2026-03-02 00:00:00 UTC.
T0 = 1_772_409_600


async def run_jobs(chancy, count):
    batch = [jobs.quick.job.with_queue("work").with_kwargs(n=i) for i in range(count)]
    refs = [ref async for refs in chancy.push_many(batch) for ref in refs]
    await asyncio.wait_for(chancy.wait_for_jobs(refs, interval=0.2), 30)


async def test_real_jobs_across_kills_and_worker_restarts_are_counted_once(own_dsn, prefix):  # noqa: F811
    # One plugin, two workers one after the other, real jobs; the held
    # connection killed while idle before a periodic-style flush, before a
    # worker's final flush, and again while the second worker runs. Every
    # flush succeeds (the retry), every job is counted exactly once, and
    # nothing stays connected.
    dsn = own_dsn
    plugin = Metrics(sync_interval=3600, hold_connection=True)
    errors = []
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await chancy.declare(Queue("work", concurrency=4, executor=EXECUTOR, polling_interval=0.2))
        for worker_id, counts in (("w1", (5, 3)), ("w2", (4, 2))):
            try:
                async with worker(chancy, worker_id):
                    await run_jobs(chancy, counts[0])
                    await plugin.flush(chancy)
                    assert len(await held(dsn)) == 1
                    assert await kill_syncer_connections(dsn) == 1
                    await run_jobs(chancy, counts[1])
                    await plugin.flush(chancy)  # retried on a fresh connection
                    assert len(await held(dsn)) == 1
                    assert await kill_syncer_connections(dsn) == 1
                    await plugin.increment_counter(f"direct:{worker_id}", 1)
                # (the worker's final flush, after a kill)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            assert await no_connection_left(dsn) == 0
    assert errors == []
    assert await chancy_sum(dsn, prefix, "job:jobs.quick:succeeded") == 14.0
    assert await chancy_sum(dsn, prefix, "global:status:succeeded") == 14.0
    assert await chancy_sum(dsn, prefix, "queue:work:succeeded") == 14.0
    assert await chancy_sum(dsn, prefix, "direct:w1") == 1.0
    assert await chancy_sum(dsn, prefix, "direct:w2") == 1.0
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        workers = await (
            await conn.execute(f'SELECT DISTINCT m.worker_id, d.key FROM "{prefix}metrics" m JOIN "{prefix}metric_definitions" d ON d.id = m.metric_id ORDER BY 1, 2')
        ).fetchall()
    # (direct calls carry the plugin's own worker_id, "" as in Chancy)
    assert {w for (w, k) in workers if k.startswith("direct:")} == {""}
    assert {w for (w, k) in workers if k.startswith("job:")} == {"w1", "w2"}


def test_a_forked_child_that_exits_normally_leaves_the_held_connection_alone(own_dsn, prefix):  # noqa: F811
    # The child does not _exit: it returns from its code and the
    # interpreter finalizes (atexit stops every syncer, objects are freed).
    # The parent's held TLS connection must be the same backend afterwards
    # and keep working; the parent's data exact.
    dsn = own_dsn
    script = textwrap.dedent(
        f"""
        import os, sys, psycopg
        from ringmetrics import Aggregator, ManualClock
        dsn, prefix = {dsn!r}, {prefix!r}
        HELD = {HELD!r}
        agg = Aggregator(16, clock=ManualClock({T0 + 5}))
        s = agg.start_syncer(dsn, prefix=prefix, worker_id="parent", interval=None, hold_connection=True)
        agg.increment_counter("p", 1)
        s.flush()
        with psycopg.connect(dsn, autocommit=True) as c:
            before = c.execute(HELD).fetchall()
        pid = os.fork()
        if pid == 0:
            agg.increment_counter("p", 100)  # the child's copy: never saved
            try:
                s.flush()
                print("child flushed through the parent's syncer", flush=True)
            except Exception:
                pass
            sys.exit(0)  # normal finalization
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        agg.increment_counter("p", 2)
        s.flush()
        with psycopg.connect(dsn, autocommit=True) as c:
            after = c.execute(HELD).fetchall()
        assert len(before) == 1 and after == before, (before, after)
        s.stop()
        print("ok", flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=40)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.stdout, out.stderr[-2000:])
    series = read_metrics(dsn, prefix=prefix, resolution="1min", start=T0, end=T0 + 60)
    assert [(k, [p[2] for p in pts]) for k, _, _, pts in series] == [("p", [3.0])]


async def test_a_plugin_held_connection_cut_mid_staged_flush_saves_everything_once(own_dsn, prefix):  # noqa: F811
    # 1,600 keys (6,400 rows: the COPY/staging path) through the plugin; the
    # held connection is killed while idle; the next flush (staged, on the
    # retry) and the final one save everything exactly once.
    dsn = own_dsn
    plugin = Metrics(sync_interval=3600, hold_connection=True, max_buffered_points=40000)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with worker(chancy):
            for i in range(1600):
                await plugin.increment_counter(f"k:{i}", 1)
            await plugin.flush(chancy)
            assert await kill_syncer_connections(dsn) == 1
            for i in range(1600):
                await plugin.increment_counter(f"k:{i}", 2)
            await plugin.flush(chancy)
            assert len(await held(dsn)) == 1
        assert await no_connection_left(dsn) == 0
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        total, keys = await (
            await conn.execute(
                f'SELECT sum(t), count(DISTINCT m.metric_id) FROM "{prefix}metrics" m '
                "CROSS JOIN LATERAL unnest(m.totals) AS u(t) WHERE m.resolution = 86400"
            )
        ).fetchone()
    assert (total, keys) == (1600 * 3.0, 1600)


# -- read_metrics on a catalog not made by Chancy's migrations ----------------


@pytest.mark.parametrize("column", ["metric_type", "unit"])
def test_read_metrics_on_a_null_catalog_column_raises_storage_error(dsn, prefix, column):
    # Found by the sixth adversarial review: read_metrics raised pyo3's
    # PanicException (a BaseException: `except Exception` does not catch
    # it) on a definition whose metric_type or unit is NULL; it reads the
    # catalog with `try_get` now, as the writer does: a StorageError.
    agg = Aggregator(8, clock=ManualClock(T0 + 5))
    s = agg.start_syncer(dsn, prefix=prefix, worker_id="w", interval=None)
    agg.increment_counter("c", 1)
    s.flush()
    s.stop()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{prefix}metric_definitions" ALTER COLUMN {column} DROP NOT NULL')
        conn.execute(f'UPDATE "{prefix}metric_definitions" SET {column} = NULL')
    try:
        read_metrics(dsn, prefix=prefix, resolution="1min", start=T0, end=T0 + 60)
    except StorageError:
        pass
    except BaseException as e:  # noqa: BLE001
        pytest.fail(f"not a StorageError: {type(e).__module__}.{type(e).__name__}: {e}")
    else:
        pytest.fail("a NULL catalog column was read without an error")


def test_read_metrics_on_odd_rows_returns_what_chancys_rules_give(dsn, prefix):
    # Arrays of unequal length, NULLs in them, empty arrays, an unknown
    # metric_type, a definition without rows: no panic, exact values.
    agg = Aggregator(8, clock=ManualClock(T0 + 5))
    s = agg.start_syncer(dsn, prefix=prefix, worker_id="w", interval=None)
    agg.increment_counter("c", 1)
    s.flush()
    s.stop()
    d, m = f'"{prefix}metric_definitions"', f'"{prefix}metrics"'
    ts = lambda t: f"to_timestamp({t})"  # noqa: E731
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE {d} DROP CONSTRAINT "{prefix}metric_definitions_metric_type_check"')
        conn.execute(
            f"INSERT INTO {d} (key, metric_type, unit) VALUES "
            "('uneven', 'histogram', 's'), ('empty', 'gauge', ''), ('odd', 'Counter', ''), ('none', 'counter', '')"
        )
        conn.execute(
            f"INSERT INTO {m} (metric_id, resolution, chunk, session_id, worker_id, buckets, counts, totals, "
            "minimums, maximums, gauges, sampled_at) "
            f"SELECT id, 60, {ts(T0)}, gen_random_uuid(), 'x', "
            f"ARRAY[{ts(T0)}, {ts(T0 + 60)}]::timestamptz[], ARRAY[4]::int8[], ARRAY[8, NULL, 9]::float8[], "
            f"NULL, ARRAY[3]::float8[], NULL, ARRAY[{ts(T0)}]::timestamptz[] FROM {d} WHERE key = 'uneven'"
        )
        conn.execute(
            f"INSERT INTO {m} SELECT id, 60, {ts(T0)}, gen_random_uuid(), 'x', '{{}}', '{{}}', '{{}}', NULL, NULL, "
            f"'{{}}', '{{}}' FROM {d} WHERE key = 'empty'"
        )
        conn.execute(
            f"INSERT INTO {m} SELECT id, 60, {ts(T0)}, gen_random_uuid(), 'x', ARRAY[{ts(T0)}]::timestamptz[], "
            f"NULL, ARRAY[6]::float8[], NULL, NULL, NULL, ARRAY[{ts(T0)}]::timestamptz[] FROM {d} WHERE key = 'odd'"
        )
    got = {k: (kind, unit, [(p[0], p[1], p[2], p[5]) for p in pts]) for k, kind, unit, pts in
           read_metrics(dsn, prefix=prefix, resolution="1min", start=T0, end=T0 + 120)}
    assert got == {
        "c": ("counter", "count", [(T0, 0, 1.0, 1.0)]),
        "empty": ("gauge", "", []),
        "none": ("counter", "", []),
        "odd": ("counter", "", [(T0, 0, 6.0, 6.0)]),
        "uneven": ("histogram", "s", [(T0, 4, 8.0, 2.0), (T0 + 60, 0, 0.0, 0.0)]),
    }


# -- bools refused; the text signature -----------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Aggregator(4, key_bytes=True),
        lambda: Aggregator(4, max_future_seconds=True),
        lambda: Aggregator(True),
        lambda: Aggregator(4, buckets={"1hour": True}),
        lambda: Aggregator(4).start_syncer("host=127.0.0.1", interval=None, retention_seconds=[1, 1, 1, True]),
        lambda: ringmetrics.Syncer("host=127.0.0.1", retention_seconds=(True, 60, 60, 60)),
    ],
)
def test_bools_are_refused_where_counts_are_asked(make):
    with pytest.raises(TypeError, match="not bool"):
        make()


def test_aggregator_signature_is_the_real_one():
    sig = inspect.signature(Aggregator)
    assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == [
        ("capacity", inspect.Parameter.POSITIONAL_OR_KEYWORD, 4096),
        ("buckets", inspect.Parameter.KEYWORD_ONLY, None),
        ("key_bytes", inspect.Parameter.KEYWORD_ONLY, None),
        ("clock", inspect.Parameter.KEYWORD_ONLY, None),
        ("max_future_seconds", inspect.Parameter.KEYWORD_ONLY, 60),
        ("unsaved_buckets", inspect.Parameter.KEYWORD_ONLY, 10000),
    ]
    # The signature's defaults, passed explicitly, are what the call takes.
    a = Aggregator(**{p.name: p.default for p in sig.parameters.values()})
    a.increment_counter("k", 1)
    b = sig.bind(8, buckets={"1min": 2})
    Aggregator(*b.args, **b.kwargs)
    with pytest.raises(TypeError):
        Aggregator(8, None)  # keyword-only, as shown
