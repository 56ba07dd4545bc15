"""``ringmetrics.chancy.Metrics``: Chancy's metrics plugin on the Rust core.

Swap one import::

    from ringmetrics.chancy import Metrics   # was: from chancy.plugins.metrics import Metrics

    async with Chancy(dsn, plugins=[Metrics()]) as chancy:
        ...

It subclasses Chancy's own plugin, so its identity (``chancy.metrics``),
constructor checks, migrations, ``window``, ``retention``, ``get_metrics``,
``list_metrics``, ``cleanup``, table-size collection and HTTP API are
Chancy's code. Recording goes to a Rust aggregator (one per worker
registration, each with its own session id) and a Rust syncer thread per
session writes Chancy's tables every ``sync_interval``: the asyncio loop
never waits on PostgreSQL for metrics writes.

Time in tests: pass ``clock=ringmetrics.ManualClock(start)`` and move it; or
monkeypatch ``chancy.plugins.metrics.metrics.utcnow`` as you would for
Chancy's plugin — while it is patched, records are stamped with the time it
returns.

``metrics.increment_counter``, ``record_gauge`` and ``record_histogram_value``
are native methods (bound per instance, unless a subclass overrides them):
they keep Chancy's signature, record at once and return an awaitable that is
already done, so ``await metrics.increment_counter(key, 1)`` costs well under
a Python coroutine. The awaitable also speaks the coroutine protocol:
``asyncio.gather(...)``, ``asyncio.create_task(...)``, ``asyncio.ensure_future``
and ``asyncio.iscoroutine`` accept it. Differences from an ``async def``:
the record happens at the call, even if the result is never awaited (and no
"never awaited" warning is given), and ``inspect.iscoroutinefunction`` is
false for the instance's methods (it stays true for ``Metrics.increment_counter``
on the class, which records the same way).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from chancy.plugins.metrics import metrics as _chancy_metrics
from chancy.plugins.metrics.metrics import Metrics as _ChancyMetrics

from ringmetrics._native import Aggregator, ManualClock, Recorder, Syncer

__all__ = ["Metrics"]

log = logging.getLogger(__name__)

_ORIGINAL_UTCNOW = _chancy_metrics.utcnow

#: Ring depth per resolution: the syncer persists chunks, so memory only
#: needs to cover a database outage (24 minutes at 1min, 12 days at 1day).
RING_BUCKETS = {"1min": 24, "5min": 24, "1hour": 24, "1day": 12}

#: How long ``flush`` waits for a syncer, in seconds.
FLUSH_TIMEOUT = 60.0


class _Session:
    """One worker registration (or the plugin's own direct calls)."""

    __slots__ = ("aggregator", "recorder", "session_id", "syncer", "worker_id")

    def __init__(self, aggregator: Aggregator, recorder: Recorder, session_id: str, worker_id: str) -> None:
        self.aggregator = aggregator
        self.recorder = recorder
        self.session_id = session_id
        self.worker_id = worker_id
        self.syncer: Syncer | None = None


async def _flushed(syncer: Syncer) -> dict[str, int]:
    """``syncer.flush(FLUSH_TIMEOUT)`` without blocking the event loop: the
    flush runs on a Rust helper thread that signals a socket the loop
    watches. (``asyncio.to_thread`` would block the loop while it starts its
    first worker thread, and the worker would need the GIL back to report.)"""
    pending = syncer.flush_in_background(FLUSH_TIMEOUT)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fd = pending.fileno()
    try:
        loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    except NotImplementedError:  # loops without add_reader (Windows' proactor)
        while not pending.done():
            await asyncio.sleep(0.01)
        return pending.result()
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return pending.result()


class Metrics(_ChancyMetrics):
    """Chancy's ``Metrics`` plugin, recording into ringmetrics.

    Takes Chancy's keywords, plus ``clock`` (a :class:`ringmetrics.ManualClock`
    for tests) and ``low_priority_syncer``: run the syncer threads at Linux's
    lowest priority (``SCHED_IDLE``), so the event loop always gets a core
    first. Off by default: on a machine whose cores are saturated (CPU-bound
    jobs) an idle-priority syncer gets almost no CPU, and its flushes, the
    final one at shutdown included, could time out. ``max_buffered_points`` bounds memory as in Chancy: each
    session's aggregator holds ``max_buffered_points // 4`` series (a series
    holds a bucket at each of four resolutions); new keys past that are
    dropped with a warning.
    """

    def __init__(
        self,
        *,
        sync_interval: int = 60,
        max_points_per_resolution: dict[Any, int] | None = None,
        maximum_metric_age: int = 86400 * 90,
        collection_interval: int = 30,
        max_buffered_points: int = 10000,
        clock: ManualClock | None = None,
        low_priority_syncer: bool = False,
    ) -> None:
        super().__init__(
            sync_interval=sync_interval,
            max_points_per_resolution=max_points_per_resolution,
            maximum_metric_age=maximum_metric_age,
            collection_interval=collection_interval,
            max_buffered_points=max_buffered_points,
        )
        self._clock = clock
        self._low_priority_syncer = bool(low_priority_syncer)
        self._capacity = max(1, max_buffered_points // 4)
        self._default = self._new_session(str(self.session_id), self.worker_id)
        self._sessions: dict[Any, _Session] = {}
        self._failures_seen = 0
        # The record methods, native (see the module docstring); a subclass
        # that overrides one keeps its own.
        for name in ("increment_counter", "record_gauge", "record_histogram_value"):
            if getattr(type(self), name) is getattr(Metrics, name):
                setattr(self, name, getattr(self._default.recorder, name))

    @staticmethod
    def matches_prefix(prefix: str | None, key: str) -> bool:
        """True when ``key``'s ``:``-separated parts start with ``prefix``'s:
        ``queue:default`` matches ``queue:default`` and
        ``queue:default:throughput``, not ``queue:default2``. No prefix
        matches everything. (The rule ``get_metrics`` applies in SQL.)"""
        if not prefix:
            return True
        parts = prefix.split(":")
        return key.split(":")[: len(parts)] == parts

    def _new_session(self, session_id: str, worker_id: str) -> _Session:
        aggregator = Aggregator(self._capacity, buckets=RING_BUCKETS, clock=self._clock)
        # Follow a monkeypatched ``chancy...metrics.utcnow`` unless a
        # ManualClock drives time. The warning holds the plugin weakly (no
        # reference cycle through the native recorder).
        hook = None if self._clock is not None else (vars(_chancy_metrics), "utcnow", _ORIGINAL_UTCNOW)
        warn = weakref.WeakMethod(self._warn)

        def dropped(message: str) -> None:
            method = warn()
            if method is not None:
                method(message)

        return _Session(aggregator, Recorder(aggregator, dropped, hook), session_id, worker_id)

    def _syncer(self, session: _Session, chancy: Any) -> Syncer:
        if session.syncer is None:
            session.syncer = session.aggregator.start_syncer(
                chancy.dsn,
                prefix=chancy.prefix,
                worker_id=session.worker_id,
                session_id=session.session_id,
                interval=float(self.sync_interval),
                max_backoff=300.0,
                low_priority=self._low_priority_syncer,
            )
        return session.syncer

    # -- recording ---------------------------------------------------------

    def _record(self, key, value, kind, unit, *, worker=None):
        # Chancy's hub events, job updates and table sizes.
        session = self._sessions.get(worker, self._default) if worker is not None else self._default
        session.recorder.record(kind, key, value, unit or ("count" if kind == "counter" else "number"))

    # Instances use their recorder's native methods directly (bound in
    # __init__); these are what the class, and subclasses calling super(),
    # see.

    async def increment_counter(self, metric_key: str, value: float, *, unit: str = "count"):
        """Increment a counter metric (Chancy's signature and default unit)."""
        await self._default.recorder.increment_counter(metric_key, value, unit=unit)

    async def record_gauge(self, metric_key: str, value: float, *, unit: str = "number"):
        """Record a gauge metric (the latest value per bucket wins)."""
        await self._default.recorder.record_gauge(metric_key, value, unit=unit)

    async def record_histogram_value(self, metric_key: str, value: float, *, unit: str = "number"):
        """Record a histogram observation (count, sum, min, max per bucket)."""
        await self._default.recorder.record_histogram_value(metric_key, value, unit=unit)

    # -- worker lifecycle --------------------------------------------------

    async def on_worker_started(self, *, worker):
        if worker in self._workers:
            return
        await super().on_worker_started(worker=worker)
        session_id, _ = self._workers[worker]
        session = self._new_session(str(session_id), worker.worker_id)
        self._sessions[worker] = session
        self._syncer(session, worker.chancy)

    async def on_worker_stopped(self, *, worker):
        # Chancy's order: a final flush first (raising keeps the data and the
        # subscriptions for a retry), then unsubscribe.
        await self.flush(worker.chancy)
        registration = self._workers.pop(worker, None)
        if registration:
            _, handler = registration
            for kind in ("counter", "gauge", "histogram"):
                worker.hub.remove(f"metrics.{kind}", handler)
        session = self._sessions.pop(worker, None)
        if session is not None and session.syncer is not None:
            await asyncio.to_thread(session.syncer.stop, FLUSH_TIMEOUT)

    async def run(self, worker, chancy):
        """Start this worker's session; its syncer thread writes every
        ``sync_interval`` (retrying failures with capped backoff) while this
        task keeps the read cache fresh and logs failures."""
        await self.on_worker_started(worker=worker)
        worker.manager.add("metrics_table_sizes", self._collect_table_sizes(worker, chancy))
        while await self.sleep(self.sync_interval):
            self._read_cache.clear()
            failures = sum(
                s.syncer.status()["failures"] for s in self._all_sessions() if s.syncer is not None
            )
            if failures > self._failures_seen:
                chancy.log.warning("Metrics flush failed; buffered observations will be retried")
            self._failures_seen = failures

    def _all_sessions(self) -> list[_Session]:
        return [self._default, *self._sessions.values()]

    async def flush(self, chancy):
        """Save recorded metrics now, from every session, without blocking the
        event loop. Raises if saving fails; the observations stay pending and
        are retried (a retry never double counts)."""
        async with self._flush_lock:
            first_error: BaseException | None = None
            for session in self._all_sessions():
                if session.syncer is None and len(session.aggregator) == 0:
                    continue
                syncer = self._syncer(session, chancy)
                try:
                    await _flushed(syncer)
                except Exception as exc:  # keep flushing the other sessions
                    first_error = first_error or exc
            self._read_cache.clear()
            if first_error is not None:
                raise first_error

    def aggregators(self) -> list[Aggregator]:
        """The aggregators behind this plugin: the plugin's own, then one per
        running worker (for snapshots and drop counters)."""
        return [s.aggregator for s in self._all_sessions()]

    def drops(self) -> dict[str, Any]:
        """Drop counters summed over every session."""
        total: dict[str, Any] = {}
        for agg in self.aggregators():
            for name, value in agg.drops().items():
                if isinstance(value, dict):
                    inner = total.setdefault(name, {})
                    for r, n in value.items():
                        inner[r] = inner.get(r, 0) + n
                else:
                    total[name] = total.get(name, 0) + value
        return total


logging.getLogger(__name__).addHandler(logging.NullHandler())
