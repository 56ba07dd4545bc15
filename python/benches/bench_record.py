"""Side-by-side Python benchmarks, one run: recording through the plugin
(ours vs Chancy 0.26's), the native calls vs prometheus_client, and the
longest event-loop stall while 10,000 changed series flush.

    .venv/bin/python python/benches/bench_record.py [DSN]

Prints a Markdown table (medians of repeats, ratios). The DSN defaults to
$RINGMETRICS_DSN, else host=127.0.0.1 user=postgres dbname=test.
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


def median_ns(stmt, setup_globals, number):
    times = timeit.repeat(stmt, globals=setup_globals, number=number, repeat=REPEATS)
    return statistics.median(times) / number * 1e9


async def await_loop(fn, key, n):
    """ns per `await fn(key, 1)`, median of REPEATS runs of n calls."""
    runs = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        for _ in range(n):
            await fn(key, 1)
        runs.append((time.perf_counter() - t) / n * 1e9)
    return statistics.median(runs)


async def plugin_record(results):
    ours, theirs = Metrics(), ChancyMetrics()

    async def empty(key, value):
        return None

    results["empty `await f(key, 1)` (floor)"] = (await await_loop(empty, "k", 200_000), None)
    for name, ours_fn, theirs_fn, n_theirs in (
        ("increment_counter", ours.increment_counter, theirs.increment_counter, 20_000),
        ("record_gauge", ours.record_gauge, theirs.record_gauge, 20_000),
        ("record_histogram_value", ours.record_histogram_value, theirs.record_histogram_value, 20_000),
    ):
        a = await await_loop(ours_fn, f"bench:{name}", 200_000)
        b = await await_loop(theirs_fn, f"bench:{name}", n_theirs)
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


async def flush_stall(dsn, results, series=10_000):
    """Longest gap of a 1 ms ticker while `series` changed series flush."""
    out = {}
    for name, plugin in (("ours", Metrics(max_buffered_points=4 * series + 8)), ("chancy", ChancyMetrics(max_buffered_points=4 * series + 8))):
        prefix = f"bench_{uuid.uuid4().hex[:8]}_"
        async with Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False) as chancy:
            await chancy.migrate()
            await plugin.flush(chancy)  # warm: connections, schema
            for i in range(series):
                await plugin.increment_counter(f"stall:{i}", 1)
            gaps = []
            done = asyncio.Event()

            async def ticker():
                last = time.perf_counter()
                while not done.is_set():
                    await asyncio.sleep(0.001)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            task = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)
            t = time.perf_counter()
            await plugin.flush(chancy)
            elapsed = time.perf_counter() - t
            done.set()
            await task
            out[name] = (max(gaps) * 1e3, elapsed * 1e3)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for (table,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' AND starts_with(tablename, %s)", [prefix]
            ).fetchall():
                conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    results[f"longest loop stall while {series:,} series flush (ms)"] = (out["ours"][0], out["chancy"][0])
    results[f"flush of {series:,} changed series, wall time (ms)"] = (out["ours"][1], out["chancy"][1])


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
