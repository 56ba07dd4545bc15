"""The model-based end-to-end property test: random programs drive the real
plugin in a real Chancy app (direct calls, hub events of workers that start
and stop, run loops that start and stop the syncer thread), with a clock
that moves from milliseconds to days, flushes, flushes that fail (refused
connection, connection cut before COMMIT, connection cut after COMMIT so
its outcome is unknown) and Chancy's cleanup. After every successful flush,
what Chancy's own ``get_metrics`` returns at every resolution, for all
workers and for each worker id, must equal a plain model of Chancy's
semantics and retention.

``RINGMETRICS_MODEL_CASES`` (default 6) sets how many random programs run,
``RINGMETRICS_MODEL_SEED`` the first seed (so a failure replays with
``RINGMETRICS_MODEL_CASES=1 RINGMETRICS_MODEL_SEED=<seed>``); every seed a
failure was found with is kept in ``REGRESSIONS`` and runs every time.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import os
import random

import psycopg
import pytest
from chancy import Chancy, Worker
from chancy.plugins.metrics import metrics as chancy_metrics
from chancy.plugins.metrics.metrics import RESOLUTIONS
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgproxy import Proxy
from ringmetrics.chancy import Metrics

#: Seeds that once found a bug; they run on every test run.
REGRESSIONS: list[int] = []

CASES = int(os.environ.get("RINGMETRICS_MODEL_CASES", "6"))
FIRST_SEED = int(os.environ.get("RINGMETRICS_MODEL_SEED", "1000"))
OPS = int(os.environ.get("RINGMETRICS_MODEL_OPS", "70"))

pytestmark = pytest.mark.timeout(60 + 40 * (CASES + len(REGRESSIONS)) * max(1, OPS // 70))

#: 2026-03-01 00:00:00 UTC.
T0 = 1_772_323_200

KEYS = {"c0": "counter", "c1": "counter", "g0": "gauge", "g1": "gauge", "h0": "histogram", "h1": "histogram"}
WORKER_IDS = ["w1", "w2"]
DIRECT_IDS = ["", "wa"]


class Clock:
    """Chancy's ``utcnow`` (which the plugin follows), moved by the test."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.t, datetime.UTC)


class Model:
    """Chancy's semantics, plainly: every accepted observation, per bucket,
    for all workers (``None``) and per worker id."""

    def __init__(self, plugin: Metrics) -> None:
        self.retention = {name: plugin.retention(name) for name in RESOLUTIONS}
        self.buckets: dict[tuple[str | None, str, int, int], list] = {}

    def record(self, key: str, value: float, t: float, worker_id: str) -> None:
        kind = KEYS[key]
        for seconds in RESOLUTIONS.values():
            start = math.floor(t / seconds) * seconds
            for who in (None, worker_id):
                b = self.buckets.get((who, key, seconds, start))
                if b is None:
                    self.buckets[(who, key, seconds, start)] = [1, value, value, value, t, value]
                else:
                    b[0] += 1
                    b[1] += value
                    b[2] = min(b[2], value)
                    b[3] = max(b[3], value)
                    if t >= b[4]:
                        b[4], b[5] = t, value
        assert kind

    def expected(self, who: str | None, name: str, now: float) -> dict[str, dict[int, object]]:
        seconds = RESOLUTIONS[name]
        current = math.floor(now / seconds) * seconds
        cutoff = current + seconds - self.retention[name]
        out: dict[str, dict[int, object]] = {}
        for (w, key, s, start), (n, total, lo, hi, _, last) in self.buckets.items():
            if w != who or s != seconds or not cutoff <= start <= current:
                continue
            kind = KEYS[key]
            value: object = total if kind == "counter" else last if kind == "gauge" else (n, total, lo, hi)
            out.setdefault(key, {})[start] = value
        return out


def observed(result) -> dict[str, dict[int, object]]:
    out: dict[str, dict[int, object]] = {}
    for key, metric in result["series"].items():
        for p in metric.data:
            v = p.value
            if metric.type == "histogram":
                v = (v["count"], v["sum"], v["min"], v["max"])
            out.setdefault(key, {})[int(p.timestamp.timestamp())] = v
    return out


def same(a: object, b: object) -> bool:
    if isinstance(a, tuple):
        return a[0] == b[0] and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a[1:], b[1:]))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def diff(want: dict, got: dict) -> list[str]:
    problems = []
    for key in sorted(set(want) | set(got)):
        w, g = want.get(key, {}), got.get(key, {})
        for start in sorted(set(w) | set(g)):
            if start not in g:
                problems.append(f"{key} @{start - T0}: missing (want {w[start]})")
            elif start not in w:
                problems.append(f"{key} @{start - T0}: unexpected {g[start]}")
            elif not same(w[start], g[start]):
                problems.append(f"{key} @{start - T0}: want {w[start]}, got {g[start]}")
    return problems


class Program:
    """One random program against one plugin."""

    def __init__(self, seed: int, dsn: str, prefix: str, proxy: Proxy) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.dsn, self.prefix, self.proxy = dsn, prefix, proxy
        self.clock = Clock(T0 + self.rng.randrange(86400))
        self.log: list[str] = []
        #: Per resolution: the oldest bucket recorded since the last
        #: successful flush. Nothing forces a flush before a ring wraps:
        #: buckets that leave a ring unsaved wait for the next flush, as
        #: Chancy's do (its ``max_buffered_points`` is never reached here).
        self.unsaved: dict[int, int] = {}
        #: Ring depths: the plugin's defaults, or rings of a few buckets so
        #: that long stretches without a successful flush outlast them.
        self.ring = self.rng.choice(
            [None, {name: self.rng.choice([2, 3, 6, 13]) for name in ("1min", "5min", "1hour", "1day")}]
        )
        #: Odd seeds keep the syncer's connection between flushes (not drawn
        #: from `rng`, so every seed's program stays what it was).
        self.hold = seed % 2 == 1

    async def run(self, monkeypatch) -> None:
        monkeypatch.setattr(chancy_metrics, "utcnow", self.clock)
        plugin = Metrics(
            sync_interval=3600, collection_interval=10**7, ring_buckets=self.ring, hold_connection=self.hold
        )
        self.log.append(f"rings {plugin._ring}, hold_connection={self.hold}")
        model = Model(plugin)
        async with Chancy(self.dsn, prefix=self.prefix, plugins=[plugin], notifications=False) as chancy:
            await chancy.migrate()
            workers = {wid: Worker(chancy, worker_id=wid, register_signal_handlers=False) for wid in WORKER_IDS}
            started: set[str] = set()
            loops: dict[str, asyncio.Task] = {}
            try:
                for step in range(OPS):
                    op = self.rng.choices(
                        ["record", "advance", "flush", "fault", "start", "stop", "loop", "cleanup", "burst"],
                        # Small rings: long stretches without a save.
                        [40, 18, 14 if self.ring is None else 3, 6, 5, 5, 4, 2, 3 if self.ring is None else 8],
                    )[0]
                    if op == "record":
                        await self.record(plugin, model, workers, started)
                    elif op == "burst":
                        # Busy minutes (or hours) in a row, unsaved: they
                        # outlast a small ring.
                        step = self.rng.choice([60, 300, 3600])
                        n = self.rng.randint(3, 20)
                        self.log.append(f"burst of {n} steps of {step} s")
                        for _ in range(n):
                            self.clock.t += self.rng.uniform(0.8, 1.2) * step
                            await self.record(plugin, model, workers, started)
                    elif op == "advance":
                        self.clock.t += self.rng.choice(
                            [
                                self.rng.uniform(0.001, 5),
                                self.rng.uniform(30, 90),
                                self.rng.uniform(30, 90),
                                self.rng.uniform(300, 1800),
                                self.rng.uniform(3600, 6 * 3600),
                                self.rng.uniform(86400, 3 * 86400),
                            ]
                        )
                        self.log.append(f"advance to +{self.clock.t - T0:.3f}")
                    elif op == "flush":
                        await self.flush(plugin, chancy, model, "flush")
                    elif op == "fault":
                        fault = self.rng.choice(["refuse", "cut_before_commit", "cut_after_commit"])
                        fired = len(self.proxy.fired)
                        self.proxy.arm(fault)
                        self.log.append(f"flush with {fault}")
                        try:
                            await plugin.flush(chancy)
                        except Exception:
                            assert self.proxy.fired[fired:] == [fault] and not self.proxy.armed, self.where()
                        else:
                            if self.proxy.armed:
                                # Nothing to write (no connection was made),
                                # or a held connection (none to refuse).
                                assert self.proxy.armed == [fault], self.where()
                                self.proxy.armed.clear()
                            else:
                                # The cut closed the held connection: the
                                # flush tried again on a fresh one.
                                assert self.hold and self.proxy.fired[fired:] == [fault], self.where()
                            self.saved()
                            await self.check(plugin, chancy, model)
                    elif op == "start":
                        wid = self.rng.choice(WORKER_IDS)
                        if wid not in started:
                            await plugin.on_worker_started(worker=workers[wid])
                            started.add(wid)
                            self.log.append(f"start {wid}")
                    elif op == "stop":
                        wid = self.rng.choice(WORKER_IDS)
                        if wid in started:
                            if wid in loops:
                                await self.stop_loop(loops.pop(wid), workers[wid])
                            self.log.append(f"stop {wid}")
                            await plugin.on_worker_stopped(worker=workers[wid])
                            started.discard(wid)
                            self.saved()
                            await self.check(plugin, chancy, model)
                    elif op == "loop":
                        wid = self.rng.choice(WORKER_IDS)
                        if wid in loops:
                            self.log.append(f"loop of {wid} ends")
                            await self.stop_loop(loops.pop(wid), workers[wid])
                        elif wid in started:
                            self.log.append(f"loop of {wid} runs")
                            loops[wid] = asyncio.create_task(plugin.run(workers[wid], chancy))
                            await asyncio.sleep(0)
                    elif op == "cleanup":
                        self.log.append("cleanup")
                        await plugin.cleanup(chancy)
                        if not self.unsaved:
                            await self.check(plugin, chancy, model)
                await self.flush(plugin, chancy, model, "final")
                drops = plugin.drops()
                assert not any(v for v in drops.values() if isinstance(v, int)), (drops, self.where())
            finally:
                for wid, task in loops.items():
                    await self.stop_loop(task, workers[wid])
                for wid in started:
                    await plugin.on_worker_stopped(worker=workers[wid])

    async def stop_loop(self, task: asyncio.Task, worker: Worker) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.manager.cancel_all()

    async def record(self, plugin, model, workers, started) -> None:
        key = self.rng.choice(list(KEYS))
        value = self.rng.choice([1, 2, 5, self.rng.randint(-50, 1000), round(self.rng.uniform(-10, 10), 3)])
        if KEYS[key] == "counter":
            value = abs(value)
        self.clock.t += self.rng.uniform(0.001, 0.01)  # sample times never tie
        via = self.rng.choice(["direct", "hub"] if started else ["direct"])
        if via == "hub":
            wid = self.rng.choice(sorted(started))
            method = {"counter": "increment_counter", "gauge": "record_gauge", "histogram": "record_histogram_value"}
            await getattr(workers[wid], method[KEYS[key]])(key, value)
        else:
            wid = self.rng.choice(DIRECT_IDS)
            plugin.worker_id = wid
            method = {"counter": "increment_counter", "gauge": "record_gauge", "histogram": "record_histogram_value"}
            await getattr(plugin, method[KEYS[key]])(key, value)
        self.log.append(f"record {key}={value} via {via} as {wid!r} at +{self.clock.t - T0:.3f}")
        model.record(key, value, self.clock.t, wid)
        for seconds in RESOLUTIONS.values():
            self.unsaved.setdefault(seconds, math.floor(self.clock.t / seconds))

    def saved(self) -> None:
        self.unsaved.clear()

    async def flush(self, plugin, chancy, model, why: str) -> None:
        self.log.append(f"flush ({why})")
        await plugin.flush(chancy)
        self.saved()
        await self.check(plugin, chancy, model)

    async def check(self, plugin, chancy, model) -> None:
        for name in RESOLUTIONS:
            for who in (None, *WORKER_IDS, *[d for d in DIRECT_IDS if d]):
                result = await plugin.get_metrics(
                    chancy, worker_id=who, resolution=name, range_seconds=plugin.retention(name)
                )
                problems = diff(model.expected(who, name, self.clock.t), observed(result))
                assert not problems, f"{name} worker={who!r}: {problems[:8]}\n{self.where()}"

    def where(self) -> str:
        tail = "\n  ".join(self.log[-25:])
        return f"seed {self.seed}, last steps:\n  {tail}"


def proxied(dsn: str, port: int) -> tuple[str, str, int]:
    params = conninfo_to_dict(dsn)
    host, real_port = params.get("host", "127.0.0.1"), int(params.get("port", 5432))
    params.update(host="127.0.0.1", port=str(port), sslmode="disable")
    return make_conninfo(**params), host, real_port


@pytest.mark.parametrize("seed", REGRESSIONS + list(range(FIRST_SEED, FIRST_SEED + CASES)))
async def test_random_programs_read_back_as_the_model(dsn, prefix, monkeypatch, seed):
    _, host, port = proxied(dsn, 0)
    proxy = await Proxy(host, port).start()
    try:
        through, _, _ = proxied(dsn, proxy.listen_port)
        await Program(seed, through, prefix, proxy).run(monkeypatch)
    finally:
        await proxy.close()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for t in ("metrics", "metric_definitions", "schema_version"):
                await conn.execute(f'DROP TABLE IF EXISTS "{prefix}{t}" CASCADE')
