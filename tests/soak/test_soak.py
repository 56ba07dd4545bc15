"""Bounded soak: a real Chancy worker with ringmetrics' plugin processes jobs
continuously while its PostgreSQL connections are killed and the server is
restarted several times. At the end the counters in PostgreSQL equal the job
updates Chancy reported, resident memory is flat after warm-up, and no
thread or connection leaked.

Length: ``RINGMETRICS_SOAK_SECONDS`` (default 90). Loopback only; stops by
itself. Numbers are printed and appended to ``RINGMETRICS_SOAK_REPORT`` if set.
"""

import asyncio
import logging
import json
import os
import time

import psycopg
import pytest
from chancy import Chancy, Queue, Worker

import jobs
from ringmetrics.chancy import Metrics

# Chancy logs every job at INFO; keep warnings (failed flushes) only.
QUIET = logging.getLogger("soak.chancy")
QUIET.setLevel(logging.WARNING)

SECONDS = float(os.environ.get("RINGMETRICS_SOAK_SECONDS", "90"))


class CountingMetrics(Metrics):
    """ringmetrics' plugin, counting the job updates Chancy hands it: the
    truth the stored counters must equal."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.updates: dict[str, int] = {}

    async def on_job_updated(self, *, worker, job):
        state = job.state.value
        self.updates[state] = self.updates.get(state, 0) + 1
        await super().on_job_updated(worker=worker, job=job)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def syncer_threads() -> int:
    """Threads named by ringmetrics' syncer (the kernel keeps 15 chars)."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                n += f.read().startswith("ringmetrics")
        except FileNotFoundError:
            pass
    return n


async def stored_totals(dsn: str, prefix: str) -> dict[str, float]:
    """Counter totals per key at 1day resolution, summed over every row."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            f"""
            SELECT d.key, sum(t) FROM {prefix}metrics m
            JOIN {prefix}metric_definitions d ON d.id = m.metric_id
            CROSS JOIN LATERAL unnest(m.totals) AS t
            WHERE m.resolution = 86400 AND d.metric_type = 'counter'
            GROUP BY d.key
            """
        )
        return {k: float(v) for k, v in await cur.fetchall()}


async def syncer_connections(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'ringmetrics%'"
        )
        return (await cur.fetchone())[0]


async def kill_connections(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname IS NOT NULL"
        )
        return (await cur.fetchone())[0]


async def soak(cluster) -> dict:
    prefix = "soak_"
    plugin = CountingMetrics(sync_interval=1)
    chancy = Chancy(cluster.dsn, prefix=prefix, plugins=[plugin], notifications=False, log=QUIET)
    pushed = 0
    faults = []
    samples = []
    async with chancy:
        await chancy.migrate()
        await chancy.declare(
            Queue(
                "soak",
                concurrency=20,
                executor="chancy.executors.asyncex.AsyncExecutor",
                polling_interval=1,
            )
        )
        worker = Worker(
            chancy,
            worker_id="soak-worker",
            register_signal_handlers=False,
            heartbeat_poll_interval=1,
            queue_change_poll_interval=1,
            backoff_initial=0.2,
            backoff_max=2.0,
        )
        await worker.start()
        start = time.monotonic()
        # The syncer thread starts at the first flush: the most seen while running.
        threads_running = syncer_threads()
        schedule = {0.2: "kill", 0.35: "restart", 0.5: "kill", 0.65: "restart", 0.8: "kill"}
        rss_warm = None
        while (elapsed := time.monotonic() - start) < SECONDS:
            threads_running = max(threads_running, syncer_threads())
            for at, fault in list(schedule.items()):
                if elapsed >= at * SECONDS:
                    del schedule[at]
                    if fault == "kill":
                        n = await kill_connections(cluster.dsn)
                        faults.append(f"t={elapsed:.0f}s: terminated {n} connections")
                    else:
                        await asyncio.to_thread(cluster.restart)
                        faults.append(f"t={elapsed:.0f}s: restarted the server")
            try:
                async for _ in chancy.push_many([jobs.tick.job.with_queue("soak").with_kwargs(n=i) for i in range(10)]):
                    pass
                pushed += 10
            except Exception:
                await asyncio.sleep(0.2)  # the server is restarting
            await asyncio.sleep(0.25)
            if rss_warm is None and elapsed > 0.15 * SECONDS:
                rss_warm = rss_kib()
            samples.append(rss_kib())
        # Let the queue drain, then stop gracefully (final flush).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with await psycopg.AsyncConnection.connect(cluster.dsn) as conn:
                cur = await conn.execute(
                    f"SELECT count(*) FROM {prefix}jobs WHERE state NOT IN ('succeeded', 'failed')"
                )
                if (await cur.fetchone())[0] == 0:
                    break
            await asyncio.sleep(0.5)
        await worker.stop()
        rss_end = rss_kib()
        assert await syncer_connections(cluster.dsn) == 0, "a syncer connection outlived its worker"
        threads_after = syncer_threads()
        totals = await stored_totals(cluster.dsn, prefix)
        async with await psycopg.AsyncConnection.connect(cluster.dsn) as conn:
            cur = await conn.execute(f"SELECT count(*) FROM {prefix}jobs WHERE state = 'succeeded'")
            succeeded_rows = (await cur.fetchone())[0]
    return {
        "seconds": SECONDS,
        "jobs_pushed": pushed,
        "job_updates_recorded": plugin.updates,
        "jobs_succeeded_in_table": succeeded_rows,
        "stored_totals": {k: v for k, v in totals.items() if k.startswith("global:status:")},
        "observations_per_second": sum(plugin.updates.values()) * 4 / SECONDS,
        "faults": faults,
        "rss_kib": {"warm": rss_warm, "end": rss_end, "max": max(samples)},
        "syncer_threads": {"running": threads_running, "after_stop": threads_after},
    }


@pytest.mark.timeout(SECONDS + 240)
def test_soak_with_connection_kills_and_restarts(cluster):
    result = asyncio.run(soak(cluster))
    print(json.dumps(result, indent=2))
    if path := os.environ.get("RINGMETRICS_SOAK_REPORT"):
        with open(path, "a") as f:
            f.write(json.dumps({"soak": result}) + "\n")
    assert len(result["faults"]) == 5
    succeeded = result["job_updates_recorded"].get("succeeded", 0)
    assert succeeded > 100, "the worker processed too few jobs to mean anything"
    # Nothing lost, nothing doubled: every update Chancy reported is stored once.
    for state, n in result["job_updates_recorded"].items():
        assert result["stored_totals"].get(f"global:status:{state}") == n, (state, result)
    # Memory flat after warm-up (allow 16 MiB of allocator noise).
    assert result["rss_kib"]["end"] - result["rss_kib"]["warm"] < 16 * 1024, result["rss_kib"]
    # The worker's syncer thread ran, and is gone once the worker stopped.
    assert result["syncer_threads"]["running"] >= 1, result["syncer_threads"]
    assert result["syncer_threads"]["after_stop"] == 0, result["syncer_threads"]
