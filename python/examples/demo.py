"""The ringmetrics demo: a real Chancy worker processes real jobs against
PostgreSQL with ringmetrics' plugin, then the metrics are read back through
Chancy's own API (get_metrics, as its dashboard does) — next to the same run
with Chancy's built-in plugin, and the time each spent recording.

usage: demo.py DSN
"""

import asyncio
import logging
import sys
import time
import uuid

import psycopg
from chancy import Chancy, Queue, Worker
from chancy.plugins.metrics import Metrics as ChancyMetrics

import demo_jobs
from ringmetrics.chancy import Metrics as RingMetrics

JOBS = 300
CUSTOM = 20_000


def timed(plugin_class):
    """The plugin, with the time spent in its recording hooks measured."""

    class Timed(plugin_class):
        recording = 0.0

        async def on_job_updated(self, *, worker, job):
            t = time.perf_counter()
            await super().on_job_updated(worker=worker, job=job)
            self.recording += time.perf_counter() - t

    return Timed(sync_interval=3600)


async def run(dsn: str, name: str, plugin_class) -> dict:
    plugin = timed(plugin_class)
    prefix = f"demo_{uuid.uuid4().hex[:8]}_"
    quiet = logging.getLogger("demo.chancy")
    quiet.setLevel(logging.WARNING)
    async with Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False, log=quiet) as chancy:
        await chancy.migrate()
        await chancy.declare(
            Queue("demo", concurrency=20, executor="chancy.executors.asyncex.AsyncExecutor", polling_interval=1)
        )
        worker = Worker(chancy, worker_id=f"demo-{name}", register_signal_handlers=False, queue_change_poll_interval=1)
        await worker.start()
        jobs = [demo_jobs.send_email.job.with_queue("demo").with_kwargs(to=f"user{i}@example.com") for i in range(JOBS)]
        jobs += [demo_jobs.resize_image.job.with_queue("demo").with_kwargs(size=i).with_max_attempts(1) for i in range(JOBS)]
        started = time.perf_counter()
        refs = [ref async for batch in chancy.push_many(jobs) for ref in batch]
        await chancy.wait_for_jobs(refs, interval=0.2)
        jobs_seconds = time.perf_counter() - started
        # Custom metrics recorded by application code, through the worker.
        t = time.perf_counter()
        for i in range(CUSTOM):
            await worker.record_histogram_value("app:checkout:latency", 0.01 * (i % 50), unit="seconds")
        custom_seconds = time.perf_counter() - t
        await worker.stop()  # graceful: the final flush saves everything
        result = await plugin.get_metrics(chancy, resolution="1min", range_seconds=3600)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (table,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname='public' AND starts_with(tablename, %s)", [prefix]
        ).fetchall():
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    return {
        "jobs_seconds": jobs_seconds,
        "job_recording_us": plugin.recording / max(1, 2 * JOBS) * 1e6,
        "custom_us": custom_seconds / CUSTOM * 1e6,
        "summaries": {k: m.summary for k, m in sorted(result["series"].items())},
        "units": {k: m.unit for k, m in result["series"].items()},
    }


def show(value):
    if isinstance(value, dict):
        return f"count {value['count']}, avg {value['avg']:.4f}, min {value['min']:.4f}, max {value['max']:.4f}"
    return f"{value:g}"


async def main(dsn: str) -> None:
    ours = await run(dsn, "ringmetrics", RingMetrics)
    theirs = await run(dsn, "chancy", ChancyMetrics)
    print(f"Processed {2 * JOBS} real jobs and recorded {CUSTOM:,} custom histogram values per run.\n")
    print("Metrics read back through Chancy's get_metrics (1min resolution, last hour):\n")
    width = max(len(k) for k in ours["summaries"])
    for key, value in ours["summaries"].items():
        same = "same as Chancy's plugin" if theirs["summaries"].get(key) == value else f"Chancy's plugin: {show(theirs['summaries'].get(key))}"
        print(f"  {key:<{width}}  {show(value)} {ours['units'][key]}   ({same})")
    print("\nTime spent recording (same work, same machine):\n")
    print(f"  {'':28} {'ringmetrics':>12} {'Chancy 0.26':>12}")
    print(f"  {'per job update (6 values)':28} {ours['job_recording_us']:>10.2f}µs {theirs['job_recording_us']:>10.2f}µs")
    print(f"  {'per worker.record_histogram':28} {ours['custom_us']:>10.2f}µs {theirs['custom_us']:>10.2f}µs")
    def counts(summaries):
        return {k: v["count"] if isinstance(v, dict) else v for k, v in summaries.items()}

    agree = counts(ours["summaries"]) == counts(theirs["summaries"])
    print(f"\nSame keys, counters and histogram counts from both plugins: {'yes' if agree else 'NO'}")
    print("(execution times differ between the runs: the jobs sleep a random time)")
    if not agree:
        raise SystemExit(1)


if __name__ == "__main__":
    logging.getLogger("chancy").setLevel(logging.WARNING)
    asyncio.run(main(sys.argv[1]))
