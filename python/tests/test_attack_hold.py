"""Adversarial tests of ``Metrics(hold_connection=True)`` (commit dd264a4)
and of the native API's refusal of bools (commit ca97a01), through real
Chancy apps and workers, read back with Chancy's own ``get_metrics`` or the
real tables."""

import asyncio
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap

import psycopg
import pytest
from chancy.plugins.metrics import Metrics as ChancyMetrics
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ringmetrics import Aggregator, ManualClock, Syncer, cleanup, read_metrics
from ringmetrics.chancy import Metrics
from test_persistence import app, own_dsn, points, syncer_connections, worker  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: 2026-03-02 00:00:00 UTC.
T0 = 1_772_409_600

HELD = (
    "SELECT pid, backend_start FROM pg_stat_activity "
    "WHERE application_name = 'ringmetrics-syncer' AND datname = current_database()"
)


async def held(dsn):
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await (await conn.execute(HELD)).fetchall()


async def kill_syncer_connections(dsn) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'ringmetrics-syncer' AND datname = current_database()"
            )
        ).fetchall()
    # (the backend leaves pg_stat_activity soon after)
    for _ in range(100):
        if not await held(dsn):
            break
        await asyncio.sleep(0.02)
    return len(rows)


async def no_connection_left(dsn) -> int:
    for _ in range(100):
        if await syncer_connections(dsn) == 0:
            return 0
        await asyncio.sleep(0.05)
    return await syncer_connections(dsn)


async def chancy_sum(dsn, prefix, key, resolution="1min"):
    reader = ChancyMetrics()
    async with app(dsn, prefix, reader) as chancy:
        result = await reader.get_metrics(chancy, resolution=resolution)
    return sum(v for _, v in points(result, key))


def second_db(dsn):
    return make_conninfo(**{**conninfo_to_dict(dsn), "dbname": conninfo_to_dict(dsn)["dbname"] + "_b"})


@pytest.fixture
def two_dsns(own_dsn):  # noqa: F811
    other = second_db(own_dsn)
    name = conninfo_to_dict(other)["dbname"]
    with psycopg.connect(own_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield own_dsn, other
    with psycopg.connect(own_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- a held connection that the server closed while idle ---------------------


async def test_a_held_connection_killed_while_idle_does_not_fail_the_next_flush(own_dsn, prefix):  # noqa: F811
    # REGRESSION (found by the fifth adversarial review, fixed in thread.rs
    # `State::flush`: a failed flush on a held connection the server had
    # closed is tried once more on a fresh connection). Before the fix:
    # with hold_connection=True, a held connection the server closed between
    # flushes (a server restart, pg_terminate_backend, a pooler's or
    # firewall's idle timeout) fails the next flush: StorageError 57P01 is
    # raised to the caller of flush() and Chancy's run loop logs an exception
    # and doubles its delay. Without hold_connection the same flush succeeds
    # (it connects afresh). The syncer reuses the client without noticing it
    # is dead (`State::connect` only checks
    # Client::is_closed(), which is false until a read fails) and does not
    # retry a failure that happened before anything was sent
    # (`State::flush`; `begin` in writer.rs). The data is kept and the
    # flush after that reconnects, so nothing is lost, but "reconnect on the
    # next flush" does not hold: it is the one after.
    dsn = own_dsn
    plugin = Metrics(sync_interval=3600, hold_connection=True)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with worker(chancy):
            await plugin.increment_counter("direct", 1)
            await plugin.flush(chancy)
            assert await kill_syncer_connections(dsn) == 1
            await plugin.increment_counter("direct", 2)
            failed = None
            try:
                await plugin.flush(chancy)
            except Exception as e:  # noqa: BLE001
                failed = e
            await plugin.increment_counter("direct", 4)
            await plugin.flush(chancy)  # reconnects
        assert await no_connection_left(dsn) == 0
    assert await chancy_sum(dsn, prefix, "direct") == 7.0
    assert failed is None, f"the flush after an idle kill failed: {failed!r}"


async def test_an_idle_session_timeout_never_fails_a_held_connection_flush(own_dsn, prefix, caplog):  # noqa: F811
    # REGRESSION (found by the fifth adversarial review, fixed in thread.rs
    # `State::flush`: a failed flush on a held connection the server had
    # closed is tried once more on a fresh connection). Before the fix:
    # the same with a server idle_session_timeout shorter than sync_interval
    # (common on managed PostgreSQL, PgBouncer's client_idle_timeout, cloud
    # NATs): every held connection dies between flushes, so every other
    # periodic flush fails, logs Chancy's "Metrics flush failed" exception,
    # and doubles the delay: the plugin saves half as often as configured.
    # hold_connection=False never fails. (Cause as above:
    # `State::connect`, no liveness check or one-shot retry of a
    # stale held connection.)
    caplog.set_level(logging.WARNING)
    dsn = own_dsn
    dbname = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{dbname}\" SET idle_session_timeout = '300ms'")
    results = {}
    for hold in (False, True):
        failures = 0
        plugin = Metrics(sync_interval=3600, hold_connection=hold)
        p = f"{prefix}{int(hold)}_"
        async with app(dsn, p, plugin) as chancy:
            await chancy.migrate()
            async with worker(chancy):
                for i in range(4):
                    await plugin.increment_counter("c", 1)
                    try:
                        await plugin.flush(chancy)
                    except Exception:  # noqa: BLE001
                        failures += 1
                    await asyncio.sleep(0.6)  # longer than the idle timeout
        results[hold] = (failures, await chancy_sum(dsn, p, "c"))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for t in ("metrics", "metric_definitions", "schema_version"):
                await conn.execute(f'DROP TABLE IF EXISTS "{p}{t}" CASCADE')
    assert results[False] == (0, 4.0)
    assert results[True][1] == 4.0, "nothing lost"
    assert results[True][0] == 0, f"held connection: {results[True][0]} of 4 flushes failed"


async def test_a_final_flush_after_an_idle_kill_saves_everything_and_closes(own_dsn, prefix):  # noqa: F811
    # REGRESSION (found by the fifth adversarial review, fixed in thread.rs
    # `State::flush`: a failed flush on a held connection the server had
    # closed is tried once more on a fresh connection). Before the fix:
    # the worker stops right after its held connection was killed while idle
    # (a server restart during a quiet period): the stop's flush
    # (on_worker_stopped) reuses the dead connection and raises StorageError
    # 57P01 out of Worker.stop() / `async with Worker`, so the worker's
    # "worker.stopped" event is never emitted and the caller sees a failed
    # shutdown, although the database is up. (The data is then saved by the
    # syncer's own final flush on a fresh connection, and nothing is left
    # connected.) Without hold_connection the stop succeeds. Cause:
    # `State::connect` reuses a held client without a liveness
    # check and no retry when the failure came before anything was sent.
    dsn = own_dsn
    plugin = Metrics(sync_interval=3600, hold_connection=True)
    stopped = []
    failed = None
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        try:
            async with worker(chancy) as w:
                w.hub.on("worker.stopped", lambda event: stopped.append(1))
                await w.increment_counter("hub", 1)
                await plugin.increment_counter("direct", 2)
                await plugin.flush(chancy)
                assert len(await held(dsn)) == 1
                assert await kill_syncer_connections(dsn) == 1
                await w.increment_counter("hub", 10)
                await plugin.increment_counter("direct", 20)
        except Exception as e:  # noqa: BLE001
            failed = e
        assert await no_connection_left(dsn) == 0
    assert await chancy_sum(dsn, prefix, "direct") == 22.0
    assert await chancy_sum(dsn, prefix, "hub") == 11.0
    assert failed is None, f"Worker.stop() raised: {failed!r}"
    assert stopped == [1]


async def test_a_held_connection_cut_at_commit_never_doubles(dsn, prefix):
    # The proxy cuts the held connection after forwarding COMMIT: the
    # outcome is unknown; the flush retries at once on a new connection
    # (the held one is closed), resending absolute buckets: the stored
    # values are exact, not doubled, and the flush succeeds.
    from pgproxy import Proxy

    params = conninfo_to_dict(dsn)
    proxy = await Proxy(params.get("host", "127.0.0.1"), int(params.get("port", 5432))).start()
    try:
        proxied = make_conninfo(**{**params, "host": "127.0.0.1", "port": proxy.listen_port, "sslmode": "disable"})
        plugin = Metrics(sync_interval=3600, hold_connection=True)
        async with app(proxied, prefix, plugin) as chancy:
            await chancy.migrate()
            async with worker(chancy):
                await plugin.increment_counter("c", 1)
                await plugin.flush(chancy)
                await plugin.increment_counter("c", 2)
                proxy.arm("cut_after_commit")
                await plugin.flush(chancy)
                assert proxy.fired == ["cut_after_commit"]
                assert await chancy_sum(dsn, prefix, "c") == 3.0
                await plugin.increment_counter("c", 4)
                await plugin.flush(chancy)
                await plugin.flush(chancy)
        assert await chancy_sum(dsn, prefix, "c") == 7.0
    finally:
        await proxy.close()


# -- switching apps, fork, exit ------------------------------------------------


async def test_switching_to_another_app_closes_the_held_connection(two_dsns, prefix):
    # One plugin, a worker on app A, then a flush with app B (another
    # database): A's held connection is closed at once, B's is held, and
    # once the worker stops nothing is held anywhere.
    a, b = two_dsns
    plugin = Metrics(sync_interval=3600, hold_connection=True)
    async with app(a, prefix, plugin) as chancy_a, app(b, prefix, ChancyMetrics()) as chancy_b:
        await chancy_a.migrate()
        await chancy_b.migrate()
        async with worker(chancy_a):
            await plugin.increment_counter("c", 1)
            await plugin.flush(chancy_a)
            assert len(await held(a)) == 1 and await held(b) == []
            await plugin.increment_counter("c", 2)
            await plugin.flush(chancy_b)
            assert await no_connection_left(a) == 0, "the old app's connection is closed"
            assert len(await held(b)) == 1
            await plugin.increment_counter("c", 4)
            await plugin.flush(chancy_b)
            assert len(await held(b)) == 1
        assert await no_connection_left(a) == 0
        assert await no_connection_left(b) == 0
    # A got 1 + 2 (its syncer's final flush), B what the ring held when it
    # took over (saved elsewhere is not saved here) plus 4: one minute.
    assert await chancy_sum(a, prefix, "c") >= 3.0
    assert await chancy_sum(b, prefix, "c") == 7.0


def test_a_forked_child_never_uses_the_parents_held_connection(own_dsn, prefix):  # noqa: F811
    # The parent holds a TLS connection; a child forked meanwhile starts
    # its own syncer, flushes and exits. The parent's connection must be
    # the same backend afterwards and still work; each process's data saved
    # exactly once.
    dsn = own_dsn
    agg = Aggregator(16, clock=ManualClock(T0 + 5))
    syncer = agg.start_syncer(dsn, prefix=prefix, worker_id="parent", interval=None, hold_connection=True)
    agg.increment_counter("p", 1)
    syncer.flush()
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute(HELD).fetchall()
    assert len(before) == 1
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            try:
                syncer.flush()
                code = 2  # the parent's syncer must refuse in a child
            except Exception:  # noqa: BLE001
                child = Aggregator(16, clock=ManualClock(T0 + 5))
                child.increment_counter("k", 5)
                s = child.start_syncer(dsn, prefix=prefix, worker_id="child", interval=None)
                s.flush()
                s.stop()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    agg.increment_counter("p", 2)
    syncer.flush()
    with psycopg.connect(dsn, autocommit=True) as conn:
        after = conn.execute(HELD).fetchall()
    assert after == before, "the parent's held connection survives the child"
    syncer.stop()
    series = read_metrics(dsn, prefix=prefix, resolution="1min", start=T0, end=T0 + 60)
    got = {(k, sum(p[2] for p in pts)) for k, _, _, pts in series}
    assert got == {("p", 3.0), ("k", 5.0)}


def test_interpreter_exit_with_a_running_worker_saves_and_releases(own_dsn, prefix):  # noqa: F811
    # A process that never stops its worker: the interpreter's exit must run
    # the final flush over the held connection and leave nothing behind.
    dsn = own_dsn
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT / "python/tests")!r})
        from test_persistence import app, worker
        from ringmetrics.chancy import Metrics

        async def main():
            plugin = Metrics(sync_interval=3600, hold_connection=True)
            chancy = app({dsn!r}, {prefix!r}, plugin)
            await chancy.__aenter__()
            await chancy.migrate()
            w = worker(chancy)
            await w.start()
            await plugin.increment_counter("x", 1)
            await plugin.flush(chancy)
            await plugin.increment_counter("x", 2)
            print("ready", flush=True)
            # returns with the worker still running and the app open

        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=40)
    assert "ready" in out.stdout, out.stderr[-2000:]
    assert asyncio.run(no_connection_left(dsn)) == 0
    assert asyncio.run(chancy_sum(dsn, prefix, "x")) == 3.0


# -- PgBouncer in transaction mode ----------------------------------------------


@pytest.fixture(scope="module")
def bouncer(dsn):
    d = tempfile.mkdtemp(prefix="rm-hold-bouncer-")
    os.chmod(d, 0o777)
    params = conninfo_to_dict(dsn)
    try:
        out = subprocess.run(
            [
                str(ROOT / "scripts/pgbouncer.sh"),
                "start",
                f"{d}/b",
                params.get("host", "127.0.0.1"),
                str(params.get("port", 5432)),
            ],
            capture_output=True,
            text=True,
            timeout=300,  # (the first start may install Debian's pgbouncer)
        )
        if out.returncode != 0:
            pytest.fail(f"pgbouncer: {out.stderr}")
        yield int(out.stdout.strip())
    finally:
        subprocess.run([str(ROOT / "scripts/pgbouncer.sh"), "stop", f"{d}/b"], check=False)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.timeout(360)  # (its fixture may install Debian's pgbouncer first)
def test_a_held_connection_through_pgbouncer_transaction_mode(own_dsn, prefix, bouncer):  # noqa: F811
    # One client connection to PgBouncer held across flushes, server
    # connections rotated (and one killed) under it; the array path and the
    # COPY/staging path (> 5,000 rows) both exact.
    dsn = own_dsn
    bouncer = make_conninfo(**{**conninfo_to_dict(dsn), "host": "127.0.0.1", "port": bouncer, "sslmode": "disable"})
    clock = ManualClock(T0 + 5)
    agg = Aggregator(2000, clock=clock)
    syncer = agg.start_syncer(bouncer, prefix=prefix, worker_id="w", interval=None, hold_connection=True)
    for i in range(1500):  # 6,000 rows: the staging path
        agg.increment_counter(f"k{i}", 1)
    syncer.flush()
    # another client takes and dirties server connections meanwhile
    with psycopg.connect(bouncer, autocommit=True, prepare_threshold=None) as other:
        other.execute("SELECT 1")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'ringmetrics-syncer' AND pid <> pg_backend_pid() "
            "AND datname = current_database() AND state = 'idle' AND backend_type = 'client backend' "
            "AND client_port IS NOT NULL AND client_addr = '127.0.0.1'"
        )
    clock.advance(60)
    for i in range(0, 1500, 100):  # 60 rows: the array path
        agg.increment_counter(f"k{i}", 2)
    failures = 0
    for _ in range(3):
        try:
            syncer.flush()
            break
        except Exception:  # noqa: BLE001
            failures += 1
    clock.advance(60)
    agg.increment_counter("k0", 4)
    syncer.flush()
    syncer.stop()
    series = read_metrics(dsn, prefix=prefix, resolution="1min", start=T0, end=T0 + 180)
    got = {k: [(p[0], p[2]) for p in pts] for k, _, _, pts in series}
    assert len(got) == 1500
    assert got["k0"] == [(T0, 1.0), (T0 + 60, 2.0), (T0 + 120, 4.0)]
    assert got["k100"] == [(T0, 1.0), (T0 + 60, 2.0)]
    assert got["k1"] == [(T0, 1.0)]
    assert sum(v for pts in got.values() for _, v in pts) == 1500 + 15 * 2 + 4
    day = read_metrics(dsn, prefix=prefix, resolution="1day", start=T0, end=T0 + 86400)
    assert sum(p[2] for _, _, _, pts in day for p in pts) == 1500 + 15 * 2 + 4
    assert failures <= 1


# -- bools refused, ints still taken --------------------------------------------


class IntLike:
    def __index__(self):
        return 8


@pytest.mark.parametrize(
    "make",
    [
        lambda: Aggregator(4, buckets={"1min": True, "5min": 3}),
        lambda: Aggregator(4, buckets={"5min": False}),
        lambda: Aggregator(4, unsaved_buckets=False),
        lambda: Aggregator(capacity=False),
        lambda: Syncer("host=127.0.0.1", retention_seconds=[60, 60, 60, False]),
        lambda: Syncer("host=127.0.0.1", schema_v1_max_points=[True, 1, 1, 1]),
        lambda: cleanup("host=127.0.0.1", retention_seconds=[True, True, True, True]),
    ],
)
def test_every_bool_count_is_refused(make):
    with pytest.raises(TypeError, match="not bool"):
        make()


def test_ints_and_int_subclasses_that_are_not_bool_still_work(dsn, prefix):
    class MyInt(int):
        pass

    clock = ManualClock(T0 + 5)
    agg = Aggregator(MyInt(4), buckets={"1min": MyInt(3)}, key_bytes=MyInt(64), clock=clock, unsaved_buckets=MyInt(16))
    s = agg.start_syncer(dsn, prefix=prefix, worker_id="w", interval=None, retention_seconds=[MyInt(3600)] * 4)
    agg.increment_counter("a", 1)
    s.flush()
    s.stop()
    series = read_metrics(dsn, prefix=prefix, resolution="1min", start=T0, end=T0 + 60)
    assert [(k, [p[2] for p in pts]) for k, _, _, pts in series] == [("a", [1.0])]
    assert cleanup(dsn, prefix=prefix, retention_seconds=[MyInt(10**9)] * 4) == 0

