"""Side by side on Chancy 0.25.1: recording and flushing through 0.25's own
metrics plugin and through ringmetrics' 0.25 drop-in.

    .venv-025/bin/python python/benches/bench_025.py [DSN]

Prints a Markdown table (medians of repeats; record costs in thread CPU
time per call, flushes in wall time). The DSN (a server; each plugin gets
its own fresh database, dropped afterwards) defaults to $RINGMETRICS_DSN,
else host=127.0.0.1 user=postgres dbname=test.

- record: ``await plugin.increment_counter(key, 1)`` and
  ``record_histogram_value`` over 100 keys, as written.
- flush: 1,000 keys changed, each at 4 resolutions; the first save (rows
  inserted) and a steady-state save (every key changed once more). 0.25's
  is ``_push_metrics_to_db`` (its write half of a sync); ours is ``flush``
  (the syncer thread, awaited without blocking the loop).
- sync: the whole periodic step with the merged pull of every row
  (0.25's ``_sync_metrics``; ours ``_sync_metrics``: flush + cache refresh).
"""

import asyncio
import os
import statistics
import sys
import time
import uuid

import psycopg
from chancy import Chancy
from chancy.plugins.metrics import Metrics as Chancy025Metrics

from ringmetrics.chancy import Metrics

KEYS = [f"bench:key{i}:count" for i in range(100)]
FLUSH_KEYS = [f"bench:flush{i}:count" for i in range(1000)]
REPEATS = 5


def server_dsn() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    return os.environ.get("RINGMETRICS_DSN", "host=127.0.0.1 user=postgres dbname=test")


class Database:
    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"rm025_bench_{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> str:
        with psycopg.connect(psycopg.conninfo.make_conninfo(self.server, dbname="postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        return psycopg.conninfo.make_conninfo(self.server, dbname=self.name)

    def __exit__(self, *exc) -> None:
        with psycopg.connect(psycopg.conninfo.make_conninfo(self.server, dbname="postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def record_cost(plugin, method: str, n: int = 20000) -> float:
    """Median thread-CPU nanoseconds per awaited call."""
    f = getattr(plugin, method)
    keys = [f"{k}:{method}" for k in KEYS] * (n // len(KEYS))
    samples = []
    for _ in range(REPEATS):
        t = time.thread_time_ns()
        for key in keys:
            await f(key, 1)
        samples.append((time.thread_time_ns() - t) / n)
    return statistics.median(samples)


async def flush_costs(plugin, chancy, push) -> tuple[float, float, float]:
    """(first save, steady save, whole sync) in milliseconds, medians."""
    firsts, steadies, syncs = [], [], []
    for r in range(REPEATS):
        keys = [f"{k}:{r}" for k in FLUSH_KEYS]
        for k in keys:
            await plugin.increment_counter(k, 1)
        t = time.perf_counter()
        await push(keys)
        firsts.append(time.perf_counter() - t)
        for k in keys:
            await plugin.increment_counter(k, 1)
        t = time.perf_counter()
        await push(keys)
        steadies.append(time.perf_counter() - t)
        for k in keys:
            await plugin.increment_counter(k, 1)
        t = time.perf_counter()
        await plugin._sync_metrics(chancy)
        syncs.append(time.perf_counter() - t)
    return tuple(statistics.median(x) * 1000 for x in (firsts, steadies, syncs))


async def main() -> None:
    server = server_dsn()
    results = {}
    with Database(server) as dsn:
        theirs = Chancy025Metrics()
        async with Chancy(dsn, plugins=[theirs], notifications=False) as chancy:
            await chancy.migrate()
            theirs.worker_id = "bench"
            results["theirs"] = (
                await record_cost(theirs, "increment_counter"),
                await record_cost(theirs, "record_histogram_value"),
                *await flush_costs(
                    theirs, chancy, lambda keys: theirs._push_metrics_to_db(chancy, metric_keys=set(keys))
                ),
            )
    with Database(server) as dsn:
        ours = Metrics()
        async with Chancy(dsn, plugins=[ours], notifications=False) as chancy:
            await chancy.migrate()
            ours.worker_id = "bench"
            results["ours"] = (
                await record_cost(ours, "increment_counter"),
                await record_cost(ours, "record_histogram_value"),
                *await flush_costs(ours, chancy, lambda keys: ours.flush(chancy)),
            )
            await ours._flush_and_stop(chancy)
    rows = [
        ("record: `await increment_counter(key, 1)`", "ns/call", 0),
        ("record: `await record_histogram_value(key, 1)`", "ns/call", 1),
        ("flush: 1,000 new keys x 4 resolutions", "ms", 2),
        ("flush: the same 1,000 keys changed again", "ms", 3),
        ("sync: flush + merged pull of every row", "ms", 4),
    ]
    print("| Chancy 0.25.1 | unit | 0.25's own plugin | ringmetrics | ratio |")
    print("|---|---|---:|---:|---:|")
    for name, unit, i in rows:
        a, b = results["theirs"][i], results["ours"][i]
        print(f"| {name} | {unit} | {a:,.0f} | {b:,.0f} | {a / b:.1f}x |")


if __name__ == "__main__":
    asyncio.run(main())
