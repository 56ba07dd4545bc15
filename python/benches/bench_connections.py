"""PostgreSQL connections and transactions of one Chancy worker, with
Chancy 0.26's own metrics plugin and with ringmetrics', side by side.

    .venv/bin/python python/benches/bench_connections.py [DSN] [SECONDS]

Three plugins: Chancy's, ringmetrics' as by default (a connection per
flush, closed after it) and ringmetrics' with ``hold_connection=True``.
Each plugin gets a fresh database and a worker at ``sync_interval=10``
running a steady load (a job every 0.2 s, each recording a counter, a gauge
and a histogram from the job, plus the plugin's own job metrics) for
SECONDS (default 60) after a warm-up, in alternating rounds
(``RINGMETRICS_BENCH_ROUNDS``, default 3) whose medians are printed. Sampled every 0.25 s: the client
backends of that database (mean and peak). Counted: the database's
committed transactions (``pg_stat_database.xact_commit``) per worker-minute,
everything the app does included, so the difference between the two rows is
the plugins'. Prints a Markdown table.
"""

import asyncio
import logging
import os
import statistics
import sys
import time
import uuid

import psycopg
from chancy import Chancy, Job, Queue, Worker
from chancy.plugins.metrics import Metrics as ChancyMetrics
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ringmetrics.chancy import Metrics

EXECUTOR = "chancy.executors.asyncex.AsyncExecutor"
ROUNDS = int(os.environ.get("RINGMETRICS_BENCH_ROUNDS", "3"))


async def measure(admin_dsn: str, name: str, make_plugin, seconds: float) -> dict:
    db = f"bench_conn_{name}_{uuid.uuid4().hex[:6]}"
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{db}"')
    dsn = make_conninfo(**{**conninfo_to_dict(admin_dsn), "dbname": db})
    try:
        plugin = make_plugin()
        async with Chancy(dsn, plugins=[plugin], notifications=False) as chancy:
            await chancy.migrate()
            await chancy.declare(Queue("bench", concurrency=4, executor=EXECUTOR, polling_interval=1))
            async with Worker(chancy, worker_id=f"bench-{name}", register_signal_handlers=False) as worker:

                async def load():
                    n = 0
                    while True:
                        await chancy.push(Job.from_func(work).with_queue("bench").with_kwargs(n=n))
                        await worker.increment_counter("bench:pushed", 1)
                        await worker.record_gauge("bench:depth", n % 17)
                        await worker.record_histogram_value("bench:size", n % 100)
                        n += 1
                        await asyncio.sleep(0.2)

                pusher = asyncio.create_task(load())
                await asyncio.sleep(12)  # warm-up: pools filled, first flushes done
                async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as admin:

                    async def commits():
                        cur = await admin.execute(
                            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = %s", [db]
                        )
                        return await cur.fetchone()

                    async def backends():
                        cur = await admin.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
                            [db],
                        )
                        return (await cur.fetchone())[0]

                    # pg_stat_database is updated when backends report.
                    await admin.execute("SELECT pg_stat_clear_snapshot()")
                    before = await commits()
                    samples = []
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        samples.append(await backends())
                        await asyncio.sleep(0.25)
                    await asyncio.sleep(1.0)  # let backends report their counters
                    await admin.execute("SELECT pg_stat_clear_snapshot()")
                    after = await commits()
                pusher.cancel()
                await asyncio.gather(pusher, return_exceptions=True)
        # The sampler runs in the admin DSN's database: none of its
        # transactions or sessions are counted here.
        return {
            "name": name,
            "mean": statistics.mean(samples),
            "peak": max(samples),
            "xact_per_min": (after[0] - before[0]) * 60 / seconds,
            "sessions_per_min": (after[1] - before[1]) * 60 / seconds,
        }
    finally:
        async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def work(n: int) -> int:
    return n


async def main() -> None:
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RINGMETRICS_DSN", "host=127.0.0.1 user=postgres dbname=test")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    logging.getLogger("chancy").setLevel(logging.WARNING)
    # Alternating runs, medians: the load of the machine moves both alike.
    plugins = (
        ("chancy", lambda: ChancyMetrics(sync_interval=10)),
        ("ringmetrics", lambda: Metrics(sync_interval=10)),
        ("ringmetrics, hold_connection=True", lambda: Metrics(sync_interval=10, hold_connection=True)),
    )
    runs: dict[str, list[dict]] = {name: [] for name, _ in plugins}
    for _ in range(ROUNDS):
        for i, (name, make) in enumerate(plugins):
            runs[name].append(await measure(dsn, f"p{i}", make, seconds))
    rows = [
        {"name": name, **{k: statistics.median(r[k] for r in rs) for k in ("mean", "peak", "xact_per_min", "sessions_per_min")}}
        for name, rs in runs.items()
    ]
    print(
        f"one worker, sync_interval=10, a job every 0.2 s, {seconds:.0f} s measured after a 12 s warm-up; "
        f"medians of {ROUNDS} alternating runs per plugin"
    )
    print()
    print("| plugin | connections (mean) | connections (peak) | transactions per worker-minute | new connections per minute |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['mean']:.2f} | {r['peak']:.0f} | {r['xact_per_min']:.1f} | {r['sessions_per_min']:.1f} |"
        )
    c = rows[0]
    print()
    for o in rows[1:]:
        print(
            f"{o['name']} / chancy: connections {o['mean'] / c['mean']:.2f}x (mean), "
            f"transactions {o['xact_per_min'] / c['xact_per_min']:.2f}x, "
            f"{o['xact_per_min'] - c['xact_per_min']:+.1f} transactions per worker-minute  "
        )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    asyncio.run(main())
