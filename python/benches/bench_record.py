"""Side-by-side Python benchmarks, one run: recording through the plugin
(ours vs Chancy 0.26's), the native calls vs prometheus_client, and the
longest event-loop stall while 10,000 changed series flush.

    .venv/bin/python python/benches/bench_record.py [DSN]

Prints a Markdown table (medians of repeats, ratios; call costs in thread
CPU time, flushes in wall time). The DSN defaults to $RINGMETRICS_DSN, else
host=127.0.0.1 user=postgres dbname=test.

The plugin rows time `await metrics.<method>(key, 1)` as written, attribute
lookup included; the floor row is the bare `await f(key, 1)` of an
`async def`. A loop stall is how late a ticker sleeping 1 ms at a time wakes
(its longest gap minus the 1 ms it slept); the control row measures it with
no flush running, for as long as the flush took.
"""

import asyncio
import os
import statistics
import sys
import time
import timeit
import uuid

import psycopg
from chancy import Chancy
from chancy.plugins.metrics import Metrics as ChancyMetrics
from prometheus_client import CollectorRegistry, Counter

from ringmetrics import Aggregator
from ringmetrics.chancy import Metrics

REPEATS = 7

#: Call costs are timed in this thread's CPU time: on a shared machine,
#: wall time also counts the slices the OS gives other processes. (The
#: loops do no I/O, so on an idle machine the two agree.) The flush rows
#: use wall time: there, waiting is what is measured.
CLOCK = time.thread_time


def median_ns(stmt, setup_globals, number):
    times = timeit.repeat(stmt, globals=setup_globals, number=number, repeat=REPEATS, timer=CLOCK)
    return statistics.median(times) / number * 1e9


async def await_loop(fn, key, n):
    """ns per `await fn(key, 1)`, median of REPEATS runs of n calls."""
    runs = []
    for _ in range(REPEATS):
        t = CLOCK()
        for _ in range(n):
            await fn(key, 1)
        runs.append((CLOCK() - t) / n * 1e9)
    return statistics.median(runs)


def method_loop(name):
    """ns per `await metrics.<name>(key, 1)`, written out as users write it
    (the attribute lookup included), median of REPEATS runs of n calls."""
    namespace = {}
    exec(
        f"async def calls(metrics, key, n):\n"
        f"    for _ in range(n):\n"
        f"        await metrics.{name}(key, 1)\n",
        namespace,
    )
    calls = namespace["calls"]

    async def run(metrics, key, n):
        runs = []
        for _ in range(REPEATS):
            t = CLOCK()
            await calls(metrics, key, n)
            runs.append((CLOCK() - t) / n * 1e9)
        return statistics.median(runs)

    return run


async def plugin_record(results):
    ours, theirs = Metrics(), ChancyMetrics()

    async def empty(key, value):
        return None

    results["empty `await f(key, 1)` (floor)"] = (await await_loop(empty, "k", 200_000), None)
    for name in ("increment_counter", "record_gauge", "record_histogram_value"):
        run = method_loop(name)
        a = await run(ours, f"bench:{name}", 200_000)
        b = await run(theirs, f"bench:{name}", 20_000)
        results[f"plugin `await metrics.{name}(key, 1)`"] = (a, b)


def native_record(results):
    agg = Aggregator()
    handle = agg.handle("counter", "bench:handle")
    registry = CollectorRegistry()
    prom = Counter("bench_total", "bench", ["key"], registry=registry)
    child = prom.labels("bench:key")
    g = {"agg": agg, "handle": handle, "prom": prom, "child": child, "rec": handle.record}
    n = 1_000_000
    loop = median_ns("pass", g, n)
    results["empty loop iteration (subtracted below)"] = (loop, None)
    key = median_ns("agg.increment_counter('bench:key', 1)", g, n) - loop
    hnd = median_ns("rec(1)", g, n) - loop
    plab = median_ns("prom.labels('bench:key').inc()", g, n // 4) - loop
    pchild = median_ns("child.inc()", g, n) - loop
    results["native by key vs prometheus_client `labels(k).inc()`"] = (key, plab)
    results["native by handle vs prometheus_client child `.inc()`"] = (hnd, pchild)


FLUSH_RUNS = 3


TICK = 0.001


async def longest_gap(until):
    """The loop's longest stall in ms until `until` is set: how late a
    ticker sleeping TICK seconds at a time woke, at worst (its longest gap
    minus the TICK it asked to sleep)."""
    gaps = []
    last = time.perf_counter()
    while not until.is_set():
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    return (max(gaps) - TICK) * 1e3


async def one_flush_stall(dsn, plugin, series):
    """(longest stall, wall time, longest stall with no flush for as long:
    the control) in ms while `series` changed series flush, in
    a fresh Chancy app and tables."""
    prefix = f"bench_{uuid.uuid4().hex[:8]}_"
    async with Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False) as chancy:
        await chancy.migrate()
        await plugin.flush(chancy)  # warm: connections, schema
        for i in range(series):
            await plugin.increment_counter(f"stall:{i}", 1)
        done = asyncio.Event()
        task = asyncio.create_task(longest_gap(done))
        await asyncio.sleep(0.01)
        t = time.perf_counter()
        await plugin.flush(chancy)
        elapsed = time.perf_counter() - t
        done.set()
        stall = await task
        # The control: the same ticker, as long, with nothing else running
        # in this process (what the machine itself costs the loop).
        idle = asyncio.Event()
        task = asyncio.create_task(longest_gap(idle))
        await asyncio.sleep(elapsed + 0.01)
        idle.set()
        control = await task
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (table,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname='public' AND starts_with(tablename, %s)", [prefix]
        ).fetchall():
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    return stall, elapsed * 1e3, control


async def flush_stall(dsn, results, series=10_000):
    """FLUSH_RUNS flushes per plugin, alternating, each with a new plugin
    (as a new worker process would have): median and worst stall, median
    wall time."""
    runs = {"ours": [], "ours, low priority": [], "chancy": []}

    def low_priority(**kw):
        return Metrics(low_priority_syncer=True, **kw)

    for _ in range(FLUSH_RUNS):
        for name, make in (("ours", Metrics), ("ours, low priority", low_priority), ("chancy", ChancyMetrics)):
            runs[name].append(await one_flush_stall(dsn, make(max_buffered_points=4 * series + 8), series))

    def med(name, i):
        return statistics.median(r[i] for r in runs[name])

    def worst(name):
        return max(r[0] for r in runs[name])

    results[f"longest loop stall while {series:,} series flush (ms), median of {FLUSH_RUNS}"] = (
        med("ours", 0),
        med("chancy", 0),
    )
    results[f"longest loop stall while {series:,} series flush (ms), worst of {FLUSH_RUNS}"] = (
        worst("ours"),
        worst("chancy"),
    )
    results[f"... with `Metrics(low_priority_syncer=True)` (SCHED_IDLE syncer) (ms), median of {FLUSH_RUNS}"] = (
        med("ours, low priority", 0),
        None,
    )
    results[f"... with `Metrics(low_priority_syncer=True)` (ms), worst of {FLUSH_RUNS}"] = (
        worst("ours, low priority"),
        None,
    )
    results[f"flush of {series:,} changed series, wall time (ms), median of {FLUSH_RUNS}"] = (
        med("ours", 1),
        med("chancy", 1),
    )
    results[f"control: longest loop stall with no flush, as long (ms), median of {FLUSH_RUNS}"] = (
        med("ours", 2),
        med("chancy", 2),
    )


def main():
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RINGMETRICS_DSN", "host=127.0.0.1 user=postgres dbname=test")
    results = {}
    asyncio.run(plugin_record(results))
    native_record(results)
    asyncio.run(flush_stall(dsn, results))
    print("| measurement | ringmetrics | peer | peer / ours |")
    print("|---|---:|---:|---:|")
    for name, (ours, peer) in results.items():
        unit = "" if "(ms)" in name else " ns"
        ratio = f"{peer / ours:.1f}x" if peer and ours > 0 else ""
        peer_s = f"{peer:,.1f}{unit}" if peer is not None else ""
        print(f"| {name} | {ours:,.1f}{unit} | {peer_s} | {ratio} |")


if __name__ == "__main__":
    main()
