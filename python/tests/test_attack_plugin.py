"""Adversarial tests of the unsaved-bucket buffer and pending-minute marks
through the Chancy plugin (``ringmetrics.chancy.Metrics``) in real Chancy
apps: bursts, long idle gaps, tiny rings and buffers, failing flushes,
fork, switching targets, conflicts, absurd sizes. Every observation must be
saved exactly once or counted in ``drops()``."""

import asyncio
import os
import threading
import types

import psycopg
import pytest
from chancy.plugins.metrics import Metrics as ChancyMetrics

from ringmetrics import Aggregator, ManualClock, Syncer, cleanup, read_metrics
from ringmetrics.chancy import Metrics
from pgproxy import Proxy
from test_outage import rename
from test_persistence import T0, Clock, app, points, worker

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

RES = ("1min", "5min", "1hour", "1day")
WIDTH = {"1min": 60, "5min": 300, "1hour": 3600, "1day": 86400}
NO_DROPS = {r: 0 for r in RES}


def stored(dsn, prefix, key, resolution, start=T0 - 86400 * 3, end=T0 + 86400 * 40):
    """{bucket start: summed count over every session} of ``key``."""
    out = {}
    rows = read_metrics(dsn, prefix=prefix, metric_prefix=key, resolution=resolution, start=start, end=end)
    for row in rows:
        if row[0] != key:
            continue
        for b in row[3]:
            out[b[0]] = out.get(b[0], 0) + b[2]
    return out


def expected(times, resolution):
    out = {}
    w = WIDTH[resolution]
    for t in times:
        s = int(t // w * w)
        out[s] = out.get(s, 0) + 1
    return out


def lost(plugin, resolution):
    d = plugin.drops()
    return d["unsaved"][resolution] + d["stale"][resolution] + d["resolution_overflow"][resolution]


# -- 1. bursts, long idle gaps, tiny rings and buffers, failing flushes ------


@pytest.mark.parametrize("buffered", [1, 2, 3])
async def test_bursts_and_day_gaps_with_a_tiny_buffer_account_for_every_observation(dsn, prefix, monkeypatch, buffered):
    """Ring depth 2 everywhere, ``max_buffered_points`` 1-3; bursts of
    minutes, gaps of hours and days, an outage in the middle. At 1hour and
    1day (within Chancy's retention) every observation is stored once or
    counted in drops(); nothing is stored twice at any resolution."""
    clock = Clock(monkeypatch, T0 + 5)
    ring = {r: 2 for r in RES}
    plugin = Metrics(sync_interval=3600, ring_buckets=ring, max_buffered_points=buffered)
    times = []
    t = T0 + 5
    # (burst minutes, gap seconds after it, flush ok?)
    plan = [(5, 3 * 3600, True), (3, 86400 + 7, False), (7, 2 * 86400, False), (4, 5 * 3600, True), (6, 61, True)]
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        down = False
        for burst, gap, ok in plan:
            if not ok and not down:
                await rename(dsn, prefix, away=True)
                down = True
            if ok and down:
                await rename(dsn, prefix, away=False)
                down = False
            for _ in range(burst):
                clock.t = t
                await plugin.increment_counter("bd", 1)
                times.append(t)
                t += 60
            if ok:
                await plugin.flush(chancy)
            else:
                with pytest.raises(Exception):
                    await plugin.flush(chancy)
            t += gap
        if down:
            await rename(dsn, prefix, away=False)
        clock.t = t
        await plugin.flush(chancy)
        await plugin.flush(chancy)
    for r in RES:
        got = stored(dsn, prefix, "bd", r)
        want = expected(times, r)
        extra = {s: (n, want.get(s, 0)) for s, n in got.items() if n > want.get(s, 0)}
        assert not extra, f"{r}: stored more than recorded: {extra}"
    for r in ("1hour", "1day"):
        got = stored(dsn, prefix, "bd", r)
        assert sum(got.values()) + lost(plugin, r) == len(times), (r, got, plugin.drops())


async def test_a_week_idle_between_two_bursts_through_a_worker(dsn, prefix, monkeypatch):
    """A running worker records a burst, the clock jumps a week minus a
    day (a worker left idle), another burst; every flush succeeds. Ring
    depth 2: Chancy's reads must show both bursts exactly."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 2 for r in RES}, max_buffered_points=2)
    reader = ChancyMetrics()
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w = worker(chancy, "idle")
        await w.start()
        try:
            for m in range(10):
                clock.t = T0 + 5 + 60 * m
                await w.increment_counter("wk", 1)
            await plugin.flush(chancy)
            later = T0 + 6 * 86400
            for m in range(10):
                clock.t = later + 5 + 60 * m
                await w.increment_counter("wk", 1)
            await plugin.flush(chancy)
        finally:
            await w.stop()
        # Flushes 10 minutes apart with a 2-deep ring and 2 places: 1min
        # buckets are lost, but counted; the hours are exact.
        ones = sum(stored(dsn, prefix, "wk", "1min").values())
        assert ones + lost(plugin, "1min") == 20, (ones, plugin.drops())
        hours = points(await reader.get_metrics(chancy, "wk", resolution="1hour", range_seconds=7 * 86400), "wk")
        assert sorted(hours) == [(T0, 10.0), (later, 10.0)]
        days = points(await reader.get_metrics(chancy, "wk", resolution="1day", range_seconds=30 * 86400), "wk")
        assert sum(v for _, v in days) == 20.0


async def test_flushes_cut_by_the_network_then_recovering_lose_and_double_nothing(dsn, prefix, monkeypatch):
    """The syncer's connection refused, cut before COMMIT and cut after
    COMMIT (committed, reply lost) while buckets leave a 3-deep ring: once
    it recovers, Chancy's own reads show every minute exactly once."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    proxy = await Proxy(params.get("host", "127.0.0.1"), int(params.get("port", 5432))).start()
    via = make_conninfo(**{**params, "host": "127.0.0.1", "port": str(proxy.listen_port)})
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 3 for r in RES}, max_buffered_points=40)
    reader = ChancyMetrics()
    try:
        async with app(via, prefix, plugin) as chancy:
            await chancy.migrate()
            faults = ["refuse", "cut_before_commit", "cut_after_commit"] * 3
            for m in range(40):
                clock.t = T0 + 5 + 60 * m
                await plugin.increment_counter("net", 1)
                await plugin.record_histogram_value("neth", m)
                if m % 4 == 3:
                    if faults:
                        proxy.arm(faults.pop(0))
                    try:
                        await plugin.flush(chancy)
                    except Exception:
                        pass
            await plugin.flush(chancy)
            assert not proxy.armed
            got = points(await reader.get_metrics(chancy, "net", resolution="1min"), "net")
            assert sorted(got) == [(T0 + 60 * m, 1.0) for m in range(40)]
            h = (await reader.get_metrics(chancy, "neth", resolution="5min"))["series"]["neth"].data
            got = sorted((p.timestamp.timestamp(), p.value["count"], p.value["sum"]) for p in h)
            assert got == [(T0 + 300 * i, 5, float(sum(range(5 * i, 5 * i + 5)))) for i in range(8)]
            assert plugin.drops()["unsaved"] == NO_DROPS
    finally:
        await proxy.close()


async def test_a_burst_of_many_keys_with_a_tiny_buffer_renews_and_counts(dsn, prefix, monkeypatch):
    """max_buffered_points=3 (one series per session): 5 keys each minute
    during an outage. Refused keys are counted as capacity drops; the one
    accepted key's minutes are stored or counted unsaved, never doubled."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 2 for r in RES}, max_buffered_points=3)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await rename(dsn, prefix, away=True)
        for m in range(12):
            clock.t = T0 + 5 + 60 * m
            for k in range(5):
                await plugin.increment_counter(f"mk:{k}", 1)
            with pytest.raises(Exception):
                await plugin.flush(chancy)
        await rename(dsn, prefix, away=False)
        await plugin.flush(chancy)
        for m in range(12, 15):
            clock.t = T0 + 5 + 60 * m
            for k in range(5):
                await plugin.increment_counter(f"mk:{k}", 1)
            await plugin.flush(chancy)
    d = plugin.drops()
    total = {r: sum(sum(stored(dsn, prefix, f"mk:{k}", r, T0, T0 + 86400).values()) for k in range(5)) for r in RES}
    for r in RES:
        assert total[r] + d["unsaved"][r] + d["stale"][r] + d["capacity_exhausted"] == 75, (r, total, d)


# -- 2. fork: parent and child both record and flush -------------------------


async def test_fork_after_evictions_parent_and_child_both_record_and_flush(dsn, prefix, monkeypatch):
    """Records and an outage (buckets waiting in the unsaved buffer, some
    drained into the syncer), then fork. The child records 100 a minute and
    flushes on its own loop; the parent records 1 a minute and flushes.
    Stored: the parent's minutes once, plus the child's, nothing doubled."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 4 for r in RES})
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        for m in range(3):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("fo", 1)
            await plugin.flush(chancy)
        await rename(dsn, prefix, away=True)
        for m in range(3, 15):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("fo", 1)
            with pytest.raises(Exception):
                await plugin.flush(chancy)
        await rename(dsn, prefix, away=False)
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                asyncio.events._set_running_loop(None)
                fake = types.SimpleNamespace(dsn=chancy.dsn, prefix=chancy.prefix)

                async def child():
                    for m in range(15, 20):
                        clock.t = T0 + 5 + 60 * m
                        await plugin.increment_counter("fo", 100)
                        await plugin.flush(fake)

                asyncio.run(child())
                code = 0 if sum(sum(a.drops()["unsaved"].values()) for a in plugin.aggregators()) == 0 else 3
            except BaseException as e:
                os.write(wfd, repr(e).encode()[:500])
            finally:
                os._exit(code)
        os.close(wfd)
        for m in range(15, 20):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("fo", 1)
        await plugin.flush(chancy)
        _, status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
        msg = os.read(r, 1000)
        os.close(r)
        assert os.waitstatus_to_exitcode(status) == 0, msg
        await plugin.flush(chancy)
        assert plugin.drops()["unsaved"] == NO_DROPS
    rows = read_metrics(dsn, prefix=prefix, metric_prefix="fo", resolution="1min", start=T0, end=T0 + 7200)
    sums = {}
    for row in rows:
        for b in row[3]:
            sums[b[0]] = sums.get(b[0], 0) + b[2]
    want = {T0 + 60 * m: 1.0 if m < 15 else 101.0 for m in range(20)}
    assert dict(sorted(sums.items())) == want


async def test_fork_in_a_running_worker_child_flushes_only_its_own(dsn, prefix, monkeypatch):
    """A running worker's hub events, evictions, then fork: the child's
    worker session is fresh; it records and flushes; the parent's data is
    stored once."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 3 for r in RES}, max_buffered_points=40)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        w = worker(chancy, "fw")
        await w.start()
        try:
            for m in range(10):
                clock.t = T0 + 5 + 60 * m
                await w.increment_counter("fw", 1)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    asyncio.events._set_running_loop(None)
                    fake = types.SimpleNamespace(dsn=chancy.dsn, prefix=chancy.prefix)

                    async def child():
                        for m in range(10, 13):
                            clock.t = T0 + 5 + 60 * m
                            plugin._record("fw", 10, "counter", "count", worker=w)
                        await plugin.flush(fake)

                    asyncio.run(child())
                    code = 0
                finally:
                    os._exit(code)
            _, status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            for m in range(10, 13):
                clock.t = T0 + 5 + 60 * m
                await w.increment_counter("fw", 1)
            await plugin.flush(chancy)
        finally:
            await w.stop()
    rows = read_metrics(dsn, prefix=prefix, metric_prefix="fw", resolution="1min", start=T0, end=T0 + 7200)
    sums = {}
    for row in rows:
        for b in row[3]:
            sums[b[0]] = sums.get(b[0], 0) + b[2]
    assert dict(sorted(sums.items())) == {T0 + 60 * m: 1.0 if m < 10 else 11.0 for m in range(13)}


# -- 3. a syncer restarted to another target ----------------------------------


async def test_switching_target_after_a_save_keeps_what_the_old_target_marked_saved(dsn, prefix, monkeypatch):
    """Minutes 0..5 saved at app A (minute 5 pending, marked saved, a
    second thread's pending minute 5 too). The plugin then flushes to app B,
    which fails (B's table away): B's writer forgot A's saves. Minutes
    6..20 push 0..14 out of the 6-deep ring: B must get all of 0..20, and
    A again when the plugin comes back to it."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 6 for r in RES})
    pa, pb = f"{prefix}a_", f"{prefix}b_"
    async with app(dsn, pa, plugin) as ca, app(dsn, pb, Metrics()) as cb:
        await ca.migrate()
        await cb.migrate()
        for m in range(6):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("sw", 1)
        th = threading.Thread(target=lambda: plugin.increment_counter("sw", 1))
        th.start()
        th.join()
        await plugin.flush(ca)
        await rename(dsn, pb, away=True)
        clock.t = T0 + 5 + 360
        await plugin.increment_counter("sw", 1)
        with pytest.raises(Exception):
            await plugin.flush(cb)
        for m in range(7, 21):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("sw", 1)
        await rename(dsn, pb, away=False)
        await plugin.flush(cb)
        want = {T0 + 60 * m: (2 if m == 5 else 1) for m in range(21)}
        assert stored(dsn, pb, "sw", "1min", T0, T0 + 7200) == want, plugin.drops()
        await plugin.flush(ca)
        # Back at A: what is still in memory is sent again (A's saves were
        # forgotten); minutes that left the ring while B saved them are
        # B's only. Nothing doubled, A's own and the ring's all there.
        back = stored(dsn, pa, "sw", "1min", T0, T0 + 7200)
        assert all(v == want[s] for s, v in back.items()), back
        assert all(T0 + 60 * m in back for m in [*range(6), *range(15, 21)]), sorted(back)
        assert plugin.drops()["unsaved"] == NO_DROPS


async def test_switching_target_while_the_ring_still_holds_everything(dsn, prefix, monkeypatch):
    """Saved at A; the plugin flushes to B at once (nothing left the ring):
    B gets every minute; then records continue at B with evictions, then
    back to A: A ends with every minute too, and nothing doubled."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 6 for r in RES})
    pa, pb = f"{prefix}a_", f"{prefix}b_"
    async with app(dsn, pa, plugin) as ca, app(dsn, pb, Metrics()) as cb:
        await ca.migrate()
        await cb.migrate()
        for m in range(5):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("st", 1)
            await plugin.record_gauge("stg", m)
        await plugin.flush(ca)
        await plugin.flush(cb)
        for m in range(5, 8):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("st", 1)
            await plugin.record_gauge("stg", m)
        await plugin.flush(cb)
        await plugin.flush(ca)
        want = {T0 + 60 * m: 1 for m in range(8)}
        assert stored(dsn, pb, "st", "1min", T0, T0 + 7200) == want
        assert stored(dsn, pa, "st", "1min", T0, T0 + 7200) == want
        assert stored(dsn, pa, "st", "5min", T0, T0 + 7200) == {T0: 5, T0 + 300: 3}
        assert stored(dsn, pb, "st", "5min", T0, T0 + 7200) == {T0: 5, T0 + 300: 3}


# -- 4. conflicts end to end --------------------------------------------------


async def insert_definition(dsn, prefix, key, kind, unit):
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f'INSERT INTO "{prefix}metric_definitions" (key, metric_type, unit) VALUES (%s, %s, %s)', [key, kind, unit]
        )


async def delete_definition(dsn, prefix, key):
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'DELETE FROM "{prefix}metric_definitions" WHERE key = %s', [key])


async def test_a_conflict_that_ends_saves_what_the_ring_held_at_the_conflict(dsn, prefix, monkeypatch):
    """"k" recorded in minutes 0..2, its stored definition conflicts at the
    flush (held back, warned). The definition is deleted; minutes 3..12 are
    recorded (the 6-deep ring pushes 0..6 out) and flushed. Had the ring
    been deeper, minutes 0..2 would be sent again and saved ("what the
    rings hold is sent again"); the ring depth must not decide it: either
    saved, or counted as dropped."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 6 for r in RES})
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await insert_definition(dsn, prefix, "k", "gauge", "number")
        for m in range(3):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("k", 1)
        await plugin.flush(chancy)
        assert stored(dsn, prefix, "k", "1min", T0, T0 + 7200) == {}
        await delete_definition(dsn, prefix, "k")
        for m in range(3, 13):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("k", 1)
        await plugin.flush(chancy)
    got = stored(dsn, prefix, "k", "1min", T0, T0 + 7200)
    assert sum(got.values()) + lost(plugin, "1min") == 13, (sorted(got), plugin.drops())


async def test_a_conflict_during_an_outage_then_ended_saves_the_rest(dsn, prefix, monkeypatch):
    """"bad" stored as a gauge; during an outage "bad" and "good" are
    recorded as counters (buckets wait in the buffer). The first flush after
    the outage finds the conflict: "bad"'s buffered buckets go, "good"'s are
    saved. The definition is then deleted: what "bad" records afterwards is
    saved, and nothing of "bad" is stored twice."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 6 for r in RES}, max_buffered_points=60)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await insert_definition(dsn, prefix, "bad", "gauge", "number")
        await rename(dsn, prefix, away=True)
        for m in range(20):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("bad", 1)
            await plugin.increment_counter("good", 1)
            with pytest.raises(Exception):
                await plugin.flush(chancy)
        await rename(dsn, prefix, away=False)
        await plugin.flush(chancy)
        assert stored(dsn, prefix, "bad", "1min", T0, T0 + 7200) == {}
        assert plugin.aggregators()[0].unsaved_len() == 0
        await delete_definition(dsn, prefix, "bad")
        for m in range(20, 30):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("bad", 1)
            await plugin.increment_counter("good", 1)
        await plugin.flush(chancy)
        lost = plugin.drops()["unsaved"]["1min"]
    good = stored(dsn, prefix, "good", "1min", T0, T0 + 7200)
    assert good == {T0 + 60 * m: 1 for m in range(30)}
    bad = stored(dsn, prefix, "bad", "1min", T0, T0 + 7200)
    assert all(v == 1 for v in bad.values()) and all(T0 + 60 * m in bad for m in range(20, 30)), sorted(bad)
    # What "bad" buffered while the conflict lasted was let go and counted;
    # what its rings still held when the conflict ended is saved.
    assert lost + sum(1 for t in bad if t < T0 + 60 * 20) == 20, (lost, sorted(bad))


async def test_a_conflict_of_a_worker_key_through_hub_events(dsn, prefix, monkeypatch):
    """The same through a running worker's hub events and its final flush:
    a conflicting key must not keep anything in the buffer once the worker
    stopped, and the other key is complete."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 3 for r in RES}, max_buffered_points=20)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await insert_definition(dsn, prefix, "wbad", "histogram", "seconds")
        w = worker(chancy, "cw")
        await w.start()
        try:
            for m in range(15):
                clock.t = T0 + 5 + 60 * m
                await w.increment_counter("wbad", 1)
                await w.increment_counter("wgood", 1)
                if m % 5 == 4:
                    await plugin.flush(chancy)
        finally:
            await w.stop()
        assert all(a.unsaved_len() == 0 for a in plugin.aggregators())
    assert stored(dsn, prefix, "wgood", "1min", T0, T0 + 7200) == {T0 + 60 * m: 1 for m in range(15)}
    assert stored(dsn, prefix, "wbad", "1min", T0, T0 + 7200) == {}


# -- 6. absurd sizes ----------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, -(10**30)])
def test_a_non_positive_max_buffered_points_is_refused_or_safe(n):
    """Chancy's own constructor decides; ours must not crash or build an
    aggregator that never saves."""
    try:
        ChancyMetrics(max_buffered_points=n)
    except (ValueError, TypeError) as e:
        with pytest.raises(type(e)):
            Metrics(max_buffered_points=n)
        return
    plugin = Metrics(max_buffered_points=n)
    plugin.increment_counter("x", 1)
    assert len(plugin.aggregators()[0]) == 1


@pytest.mark.parametrize("bad", [1.5, "10", None, 10**30, -(2**63), True, False])
def test_native_unsaved_buckets_rejects_odd_types(bad):
    with pytest.raises((TypeError, ValueError, OverflowError)):
        Aggregator(4, unsaved_buckets=bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Aggregator(True),
        lambda: Aggregator(4, key_bytes=True),
        lambda: Aggregator(4, max_future_seconds=True),
        lambda: Aggregator(4, buckets={"1min": True}),
        lambda: Syncer("host=127.0.0.1", retention_seconds=(True, 60, 60, 60)),
        lambda: Syncer("host=127.0.0.1", schema_v1_max_points=(60, 60, False, 60)),
        lambda: Aggregator(4).start_syncer("host=127.0.0.1", retention_seconds=(60, True, 60, 60)),
        lambda: cleanup("host=127.0.0.1", retention_seconds=(60, 60, 60, True)),
    ],
)
def test_native_counts_refuse_bools_as_the_plugin_does(make):
    # bool is an int in Python; a count given as True is a mistake, not 1
    with pytest.raises(TypeError, match="not bool"):
        make()


def test_native_unsaved_buckets_at_its_cap_stays_cheap_and_works():
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets={r: 1 for r in RES}, clock=clock, unsaved_buckets=1 << 26)
    agg.start_saving()
    for m in range(200):
        agg.increment_counter("c", 1)
        clock.advance(60)
    # minute 199 pending, 198 in the slot: 0..197, 5min 0..38, 1hour 0..2 left
    assert agg.unsaved_len() == 198 + 39 + 3 and agg.drops()["unsaved"] == NO_DROPS, (agg.unsaved_len(), agg.drops())


def test_native_a_one_place_buffer_counts_each_lost_observation_once():
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets={r: 1 for r in RES}, clock=clock, unsaved_buckets=1)
    agg.start_saving()
    for m in range(10):
        agg.increment_counter("c", 1)
        agg.increment_counter("c", 1)
        clock.advance(60)
    # 9 minutes left the 1min ring (minute 9 pending... folded only by a
    # later record): one kept, the rest counted; 5min: minute 0..4's bucket
    # left when 5..9 arrived: the place is taken, counted.
    d = agg.drops()["unsaved"]
    assert agg.unsaved_len() == 1
    assert d["1min"] == 2 * 7 and d["5min"] == 10, d


async def test_control_a_conflict_that_ends_with_a_deep_ring_saves_everything(dsn, prefix, monkeypatch):
    """The control of the test above: the same records with a 24-deep ring
    (nothing leaves it): all 13 minutes are saved once the conflict ended."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets={r: 24 for r in RES})
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        await insert_definition(dsn, prefix, "k", "gauge", "number")
        for m in range(3):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("k", 1)
        await plugin.flush(chancy)
        await delete_definition(dsn, prefix, "k")
        for m in range(3, 13):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("k", 1)
        await plugin.flush(chancy)
    assert stored(dsn, prefix, "k", "1min", T0, T0 + 7200) == {T0 + 60 * m: 1.0 for m in range(13)}
