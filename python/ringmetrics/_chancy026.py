"""``ringmetrics.chancy.Metrics`` for Chancy 0.26: Chancy's metrics plugin on
the Rust core (``ringmetrics.chancy`` re-exports this module's names when
Chancy 0.26 is installed).

Swap one import::

    from ringmetrics.chancy import Metrics   # was: from chancy.plugins.metrics import Metrics

    async with Chancy(dsn, plugins=[Metrics()]) as chancy:
        ...

It subclasses Chancy's own plugin, so its identity (``chancy.metrics``),
constructor checks, migrations, ``window``, ``retention``, ``get_metrics``,
``list_metrics``, ``cleanup``, table-size collection and HTTP API are
Chancy's code, and so is ``run``: every ``sync_interval`` it awaits
``self.flush(chancy)``. Recording goes to Rust aggregators (one per worker
registration and one per worker id of direct calls, each with its own
session id for life), and one Rust syncer thread per plugin writes them
all: the asyncio loop never waits on PostgreSQL for metrics writes.

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
import math
import os
import uuid
import weakref
from typing import Any

from chancy.plugins.metrics import metrics as _chancy_metrics
from chancy.plugins.metrics.metrics import RESOLUTIONS
from chancy.plugins.metrics.metrics import Metrics as _ChancyMetrics

from ringmetrics._native import Aggregator, ManualClock, Recorder, Syncer
from ringmetrics._pending import wait as _wait

__all__ = ["Metrics"]

log = logging.getLogger("ringmetrics.chancy")

_ORIGINAL_UTCNOW = _chancy_metrics.utcnow

#: The shallowest ring per resolution: two chunks (12 days at 1day).
RING_MINIMUM = {"1min": 24, "5min": 24, "1hour": 24, "1day": 12}

#: How long one flush may take, in seconds.
FLUSH_TIMEOUT = 60.0

#: The most series one session's aggregator holds (a ``max_buffered_points``
#: above four times this still works: full aggregators are renewed).
MAX_SERIES = 1 << 16

#: The most unsaved buckets one session's aggregator keeps once they left
#: its rings (the core's ``MAX_SPILL``).
MAX_UNSAVED = 1 << 26

#: The record methods bound natively on each instance.
_RECORD_METHODS = ("increment_counter", "record_gauge", "record_histogram_value")


def ring_depths(max_points: dict[str, int], sync_interval: float, ring: dict[str, int] | None = None) -> dict[str, int]:
    """The ring depth per resolution: ``ring[name]`` when given, else deep
    enough to hold two sync intervals of unsaved buckets (at least
    ``RING_MINIMUM``), and never deeper than Chancy's retention
    (``max_points``), past which Chancy's reads show nothing anyway."""
    out = {}
    for name, seconds in RESOLUTIONS.items():
        if ring and name in ring:
            depth = ring[name]
            if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
                raise ValueError(f"ring_buckets[{name!r}] must be a positive int, got {depth!r}")
        else:
            need = 2 * math.ceil(min(sync_interval, 10**9) / seconds) + 2
            depth = min(max(RING_MINIMUM[name], need), max(max_points[name], RING_MINIMUM[name]))
        out[name] = depth
    if ring and set(ring) - set(RESOLUTIONS):
        raise ValueError(f"ring_buckets has unknown resolutions: {sorted(set(ring) - set(RESOLUTIONS))}")
    return out


class _Session:
    """One aggregator and the session its data is saved under: a worker
    registration or a worker id of direct calls (or the fresh one that
    replaced a full one)."""

    __slots__ = ("aggregator", "attached", "created", "recorder", "refused", "session_id", "worker_id")

    def __init__(self, aggregator: Aggregator, session_id: str, worker_id: str) -> None:
        self.aggregator = aggregator
        self.session_id = session_id
        self.worker_id = worker_id
        self.recorder: Recorder
        #: Written by the plugin's current syncer.
        self.attached = False
        #: When it was created (the plugin's clock), unix seconds.
        self.created = 0.0
        #: New keys refused for capacity when it was created (none).
        self.refused = 0


#: Every plugin of the process, for the fork handler.
_PLUGINS: weakref.WeakSet[Metrics] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for plugin in list(_PLUGINS):
        plugin._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _add_drops(total: dict[str, Any], drops: dict[str, Any]) -> None:
    """Add one aggregator's drop counters into ``total``."""
    for name, value in drops.items():
        if isinstance(value, dict):
            inner = total.setdefault(name, {})
            for r, n in value.items():
                inner[r] = inner.get(r, 0) + n
        else:
            total[name] = total.get(name, 0) + value


class Metrics(_ChancyMetrics):
    """Chancy's ``Metrics`` plugin, recording into ringmetrics.

    Takes Chancy's keywords, plus:

    - ``clock``: a :class:`ringmetrics.ManualClock` for tests.
    - ``ring_buckets``: ring depth per resolution (dict like
      ``max_points_per_resolution``). By default deep enough for two
      sync intervals of unsaved buckets (at least 24/24/24/12) and at
      most Chancy's retention. A memory choice, not a retention cap: a
      bucket that leaves its ring unsaved (a database outage longer than
      the ring) waits for the next successful flush, at most
      ``max_buffered_points`` of them per session (past that they are
      dropped, counted in ``drops()["unsaved"]`` and warned about); saved
      buckets are never lost, whatever the depth.
    - ``low_priority_syncer``: run the syncer thread at Linux's lowest
      priority (``SCHED_IDLE``), so the event loop always gets a core
      first. Off by default: on a machine whose cores are saturated
      (CPU-bound jobs) an idle-priority syncer gets almost no CPU, and its
      flushes, the final one at shutdown included, could time out.
    - ``hold_connection``: keep the syncer's PostgreSQL connection open
      between flushes. Off by default: the syncer connects for each flush
      and closes after it, so between flushes it holds no connection, but
      each connection's start is one more committed transaction in
      ``pg_stat_database`` per flush (see BENCHMARKS.md). On, the worker
      commits exactly as many metric transactions as with Chancy's plugin
      and holds one more connection.

    ``max_buffered_points`` bounds memory as in Chancy: each session's
    aggregator holds ``max_buffered_points // 4`` series (a series holds a
    bucket at each of four resolutions); new keys past that are dropped
    with a warning until the next successful flush, after which a full
    aggregator is replaced by a fresh one under a new session id (the full
    one is freed once saved). It bounds what is held unsaved, not how many
    keys a worker records in its life.
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
        hold_connection: bool = False,
        ring_buckets: dict[str, int] | None = None,
    ) -> None:
        self._worker_id = ""
        super().__init__(
            sync_interval=sync_interval,
            max_points_per_resolution=max_points_per_resolution,
            maximum_metric_age=maximum_metric_age,
            collection_interval=collection_interval,
            max_buffered_points=max_buffered_points,
        )
        self._clock = clock
        self._low_priority_syncer = bool(low_priority_syncer)
        self._hold_connection = bool(hold_connection)
        # A limit, not a reservation: one aggregator never reserves more
        # than MAX_SERIES series (renewal frees full ones once saved).
        self._capacity = max(1, min(max_buffered_points // 4, MAX_SERIES))
        self._unsaved = max(1, min(max_buffered_points, MAX_UNSAVED))
        #: Unsaved drops already warned about.
        self._unsaved_warned = 0
        self._ring_override = ring_buckets
        self._ring = ring_depths(self.max_points, sync_interval, ring_buckets)
        #: The recorder the instance's record methods are bound to.
        self._front: Recorder | None = None
        self._syncer: Syncer | None = None
        self._syncer_target: tuple[str, str] | None = None
        #: Direct calls, by the worker id they carry.
        self._direct: dict[str, _Session] = {}
        #: Started workers' sessions.
        self._sessions: dict[Any, _Session] = {}
        #: Workers whose ``run`` loop is running.
        self._running: set[Any] = set()
        #: Sessions that take no more records (stopped workers, full
        #: aggregators), kept until they have been saved.
        self._retired: list[_Session] = []
        #: Drop counters of sessions already freed.
        self._released_drops: dict[str, Any] = {}
        self._bind_direct()
        _PLUGINS.add(self)

    # -- sessions ----------------------------------------------------------

    @property
    def worker_id(self) -> str:
        """The worker id direct calls (``await metrics.increment_counter(...)``)
        are saved with, read at each call as Chancy does. Assign it to
        change it."""
        return self._worker_id

    @worker_id.setter
    def worker_id(self, value: str) -> None:
        self._worker_id = value
        if "_direct" in self.__dict__:
            self._bind_direct()

    def _bind_direct(self) -> None:
        """Point the instance's native record methods at the direct session
        of the current worker id (a subclass that overrides one keeps its
        own). They are bound once, to one front recorder that is retargeted,
        so a method taken earlier (``inc = metrics.increment_counter``)
        follows ``worker_id`` and renewals as Chancy's does."""
        session = self._direct_session(self._worker_id)
        if self._front is None:
            self._front = self._recorder(session.aggregator)
            for name in _RECORD_METHODS:
                if getattr(type(self), name) is getattr(Metrics, name):
                    setattr(self, name, getattr(self._front, name))
        else:
            self._front.retarget(session.aggregator)

    @property
    def sync_interval(self) -> int:
        """Chancy's ``sync_interval``, read afresh by ``run`` each round.
        Changing it resizes the rings (new sessions for every owner; the
        old ones are saved, then freed), so a longer interval loses no
        unsaved bucket."""
        return self._sync_interval

    @sync_interval.setter
    def sync_interval(self, value: int) -> None:
        self._sync_interval = value
        if "_direct" in self.__dict__:
            ring = ring_depths(self.max_points, value, self._ring_override)
            if ring != self._ring:
                self._ring = ring
                self._renew(lambda session: True)

    def _direct_session(self, worker_id: str) -> _Session:
        session = self._direct.get(worker_id)
        if session is None:
            # The plugin's session id goes to its first direct session.
            first = not self._direct and not any(s.worker_id == worker_id for s in self._retired)
            sid = str(self.session_id) if first else str(uuid.uuid4())
            session = self._direct[worker_id] = self._new_session(sid, worker_id)
        return session

    def _new_session(self, session_id: str, worker_id: str) -> _Session:
        aggregator = Aggregator(self._capacity, buckets=self._ring, clock=self._clock, unsaved_buckets=self._unsaved)
        # Saved by the next flush: a bucket that leaves a ring before then
        # waits for it.
        aggregator.start_saving()
        session = _Session(aggregator, session_id, worker_id)
        session.created = self._now()
        session.recorder = self._recorder(aggregator)
        return session

    def _recorder(self, aggregator: Aggregator) -> Recorder:
        """A native recorder into ``aggregator`` with the plugin's warning
        and clock hook: follow a monkeypatched ``chancy...metrics.utcnow``
        unless a ManualClock drives time. The warning holds the plugin
        weakly (no reference cycle through the native recorder)."""
        hook = None if self._clock is not None else (vars(_chancy_metrics), "utcnow", _ORIGINAL_UTCNOW)
        plugin = weakref.ref(self)

        def dropped(message: str) -> None:
            p = plugin()
            if p is not None:
                p._warn(message)

        return Recorder(aggregator, dropped, hook)

    def _now(self) -> float:
        """The plugin's time: its ManualClock, else Chancy's (patchable)
        ``utcnow``."""
        if self._clock is not None:
            return self._clock.now()
        return _chancy_metrics.utcnow().timestamp()

    def _renew_full(self) -> None:
        """After a successful flush, give every full session's owner a
        fresh aggregator under a new session id and retire the full one
        (detached, and freed, once saved): so ``max_buffered_points`` bounds
        what is held unsaved, not how many keys a worker records in its
        life. A full aggregator is renewed at once if it refused a new key,
        else once it is an hour old by its clock (each renewal starts new
        rows for the open chunks)."""
        def full(session: _Session) -> bool:
            aggregator = session.aggregator
            if len(aggregator) < self._capacity:
                return False
            refused = aggregator.drops()["capacity_exhausted"]
            return refused != session.refused or self._now() - session.created >= 3600

        self._renew(full)

    def _renew(self, which) -> None:
        """Give each owner whose session ``which`` picks a fresh aggregator
        under a new session id; the old one is retired (saved, then
        freed)."""
        renewed = False
        for table in (self._direct, self._sessions):
            for owner, session in list(table.items()):
                if which(session):
                    table[owner] = self._new_session(str(uuid.uuid4()), session.worker_id)
                    self._retired.append(session)
                    renewed = True
        if renewed:
            self._bind_direct()

    def _retire_idle_direct(self) -> None:
        """After a successful flush, retire the direct sessions of worker ids
        other than the current one (saved, then freed): a worker id used
        once does not hold an aggregator for the plugin's life. A later
        call carrying that id starts a new session."""
        for worker_id, session in list(self._direct.items()):
            if worker_id != self._worker_id:
                del self._direct[worker_id]
                self._retired.append(session)

    def _after_fork_in_child(self) -> None:
        """In a forked child: the syncer thread is the parent's, and so is
        the data recorded before the fork (the parent saves it). Start
        afresh: no syncer, new aggregators under new session ids."""
        self._syncer = None
        self._syncer_target = None
        self._running = set()
        self._retired = []
        self._direct = {}
        self._front = None
        self.session_id = uuid.uuid4()
        self._sessions = {w: self._new_session(str(uuid.uuid4()), w.worker_id) for w in self._sessions}
        self._bind_direct()

    def _all_sessions(self) -> list[_Session]:
        return [*self._direct.values(), *self._sessions.values(), *self._retired]

    # -- recording ---------------------------------------------------------

    def _record(self, key, value, kind, unit, *, worker=None):
        # Chancy's hub events, job updates and table sizes. A worker that
        # has stopped records as a direct call carrying its worker id.
        if worker is None:
            session = self._direct_session(self._worker_id)
        else:
            session = self._sessions.get(worker) or self._direct_session(worker.worker_id)
        session.recorder.record(kind, key, value, unit or ("count" if kind == "counter" else "number"))

    # Instances use their session's native methods directly (bound by
    # _bind_direct); these are what the class, and subclasses calling
    # super(), see.

    async def increment_counter(self, metric_key: str, value: float, *, unit: str = "count"):
        """Increment a counter metric (Chancy's signature and default unit)."""
        await self._direct_session(self._worker_id).recorder.increment_counter(metric_key, value, unit=unit)

    async def record_gauge(self, metric_key: str, value: float, *, unit: str = "number"):
        """Record a gauge metric (the latest value per bucket wins)."""
        await self._direct_session(self._worker_id).recorder.record_gauge(metric_key, value, unit=unit)

    async def record_histogram_value(self, metric_key: str, value: float, *, unit: str = "number"):
        """Record a histogram observation (count, sum, min, max per bucket)."""
        await self._direct_session(self._worker_id).recorder.record_histogram_value(metric_key, value, unit=unit)

    # -- worker lifecycle --------------------------------------------------

    async def on_worker_started(self, *, worker):
        if worker in self._workers:
            return
        await super().on_worker_started(worker=worker)
        session_id, _ = self._workers[worker]
        self._sessions[worker] = self._new_session(str(session_id), worker.worker_id)

    async def on_worker_stopped(self, *, worker):
        # Chancy's order: a final flush first (raising keeps the data, the
        # session and the subscriptions for a retry), then unsubscribe.
        await self.flush(worker.chancy)
        registration = self._workers.pop(worker, None)
        if registration:
            _, handler = registration
            for kind in ("counter", "gauge", "histogram"):
                worker.hub.remove(f"metrics.{kind}", handler)
        async with self._flush_lock:
            session = self._sessions.pop(worker, None)
            if session is not None:
                # Saved by the flush above; later records of this worker go
                # to the direct session of its worker id.
                self._retired.append(session)
                await self._release_saved()
            if not self._running:
                await self._stop_syncer()

    async def run(self, worker, chancy):
        """Chancy's own loop (every ``sync_interval`` it awaits
        ``self.flush(chancy)``, backing off on failure); the syncer thread
        lives while some worker's loop runs."""
        self._running.add(worker)
        try:
            await super().run(worker, chancy)
        finally:
            self._running.discard(worker)

    # -- saving ------------------------------------------------------------

    async def _syncer_for(self, chancy: Any) -> Syncer:
        target = (chancy.dsn, chancy.prefix)
        if self._syncer is not None and self._syncer_target != target:
            # Another app: the old syncer's final flush is its own affair
            # (it never fails this flush, nor blocks the loop); what it
            # cannot save goes where the next syncer writes.
            await self._stop_syncer()
        if self._syncer is None:
            self._syncer = Syncer(
                chancy.dsn,
                prefix=chancy.prefix,
                interval=None,
                max_backoff=300.0,
                low_priority=self._low_priority_syncer,
                hold_connection=self._hold_connection,
                retention_seconds=[self.retention(name) for name in RESOLUTIONS],
                create_schema=False,
            )
            self._syncer_target = target
            for session in self._all_sessions():
                session.attached = False
        for session in self._all_sessions():
            if not session.attached and len(session.aggregator):
                self._syncer.attach(session.aggregator, session.worker_id, session.session_id)
                session.attached = True
        return self._syncer

    async def _stop_syncer(self) -> None:
        """Stop the syncer thread after its final flush. What that flush
        cannot save stays in the aggregators for the next syncer."""
        syncer, self._syncer = self._syncer, None
        for session in self._all_sessions():
            session.attached = False
        if syncer is not None:
            try:
                await _wait(syncer.stop_in_background(FLUSH_TIMEOUT))
            except Exception:
                log.warning("ringmetrics: the metrics syncer's final flush failed; kept for the next flush", exc_info=True)

    async def _release_saved(self) -> None:
        """Forget retired sessions: each is detached after one more save."""
        syncer = self._syncer
        for session in list(self._retired):
            if syncer is not None and session.attached:
                await _wait(syncer.detach_in_background(session.aggregator, FLUSH_TIMEOUT))
                session.attached = False
            elif len(session.aggregator):
                continue  # not saved by this syncer yet
            self._retired.remove(session)
            _add_drops(self._released_drops, session.aggregator.drops())

    async def flush(self, chancy):
        """Save recorded metrics now, from every session, without blocking the
        event loop. Raises if saving fails; the observations stay pending and
        are retried (a retry never double counts)."""
        async with self._flush_lock:
            try:
                syncer = await self._syncer_for(chancy)
                await _wait(syncer.flush_in_background(FLUSH_TIMEOUT))
                self._renew_full()
                self._retire_idle_direct()
                await self._release_saved()
            finally:
                self._read_cache.clear()
                self._warn_unsaved()
                if not self._running:
                    # No worker runs: nothing is left running after this
                    # call, whether it saved or failed.
                    await self._stop_syncer()

    def _warn_unsaved(self) -> None:
        """Warn (rate-limited, as every drop) when buckets that left their
        rings unsaved were dropped because ``max_buffered_points`` of them
        were already waiting (a long database outage)."""
        lost = sum(self.drops().get("unsaved", {}).values())
        if lost > self._unsaved_warned:
            self._warn(
                f"ringmetrics: {lost - self._unsaved_warned} observations dropped: their buckets left the "
                f"in-memory rings unsaved while max_buffered_points ({self._unsaved}) unsaved buckets were "
                "already waiting for the database"
            )
            self._unsaved_warned = lost

    def aggregators(self) -> list[Aggregator]:
        """The aggregators behind this plugin (for snapshots and drop
        counters): direct calls', running workers', then retired ones."""
        return [s.aggregator for s in self._all_sessions()]

    def drops(self) -> dict[str, Any]:
        """Drop counters summed over every session, freed ones included."""
        total: dict[str, Any] = {}
        _add_drops(total, self._released_drops)
        for agg in self.aggregators():
            _add_drops(total, agg.drops())
        return total

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


logging.getLogger("ringmetrics.chancy").addHandler(logging.NullHandler())
