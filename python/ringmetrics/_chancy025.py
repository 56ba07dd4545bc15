"""``ringmetrics.chancy.Metrics`` for Chancy 0.25 (metrics schema version 1).

Swap one import in a Chancy 0.25 project::

    from ringmetrics.chancy import Metrics   # was: from chancy.plugins.metrics import Metrics

It subclasses Chancy 0.25's plugin, so its identity (``chancy.metrics``),
migrations (``metrics`` v1), ``get_tables()``, ``cleanup``, table-size
collection, ``on_job_updated`` and HTTP API (Chancy's own
``chancy.plugins.metrics.api.MetricsApiPlugin``) are Chancy's code.
Recording goes to one Rust aggregator; a Rust syncer thread writes it into
0.25's ``{prefix}metrics`` table, one row per (key, resolution, worker id)
with newest-first arrays of at most ``max_points`` buckets, as 0.25 does.

Differences from Chancy 0.25's plugin, all deliberate:

- Invalid input to ``increment_counter``/``record_gauge``/
  ``record_histogram_value`` (a non-number, NaN, a bad key) is warned about
  (rate limited) and dropped, never raised into the job.
- A saved bucket is never lost: the syncer sends only changed buckets and
  the database merges them into the stored arrays by timestamp (0.25
  replaces the arrays with its memory), so a restart under the same worker
  id keeps its history.
- On stop (``run`` cancelled, even repeatedly) a final flush is made,
  shielded from the cancellation (0.25 loses up to one interval).
- ``get_metrics()`` without a worker id answers from a merged cache that
  ``run`` refreshes every ``sync_interval`` (as 0.25 does); gauges merge by
  the most recently written worker row for each bucket (0.25 takes the
  alphabetically first worker's value, against its own documentation);
  timestamps are aware UTC datetimes on every path (0.25 returns ISO
  strings on two of them).
- A restart under the same worker id keeps the stored history (0.25
  replaces it with the new process's memory). Known limit: a bucket that
  both the old and the new process recorded (say today's 1day bucket of a
  key both record) holds the new process's value; buckets the new process
  does not touch are kept as they were.
- The own-worker view of ``get_metrics`` is the live ring: with the
  default ``ring_buckets`` it spans ``max_points`` buckets of time, so a
  sparse series shows fewer old buckets there than 0.25's last
  ``max_points`` non-empty ones (all of them are in the database and in the
  merged view).
- 0.25 has no sessions: a worker id's rows belong to that worker alone.
  Give every worker its own id (Chancy's default is a fresh uuid4); two
  workers running under one id would overwrite each other's buckets.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
import weakref
from collections import defaultdict
from typing import Any

from chancy.plugins.metrics.metrics import Metric
from chancy.plugins.metrics.metrics import Metrics as _ChancyMetrics
from psycopg import sql
from psycopg.rows import dict_row

from ringmetrics._native import Aggregator, ManualClock, Recorder, Syncer
from ringmetrics._pending import wait as _wait

__all__ = ["Metric", "Metrics"]

log = logging.getLogger("ringmetrics.chancy")

#: Resolution names, finest first, and their widths in seconds.
RESOLUTIONS = {"1min": 60, "5min": 300, "1hour": 3600, "1day": 86400}

#: How long one periodic flush may take, in seconds.
FLUSH_TIMEOUT = 60.0

#: How long the final flush at stop may take: inside the worker's default
#: ``shutdown_timeout`` (30 s).
FINAL_FLUSH_TIMEOUT = 20.0

#: At most one warning about dropped records per this many seconds.
WARN_EVERY = 60.0

_RECORD_METHODS = ("increment_counter", "record_gauge", "record_histogram_value")

UTC = datetime.timezone.utc


def _number(v: float) -> int | float:
    """A value as 0.25 holds it: integral values as ints (0.25 keeps the
    Python ints it was given), others as floats."""
    if math.isfinite(v) and v == int(v) and abs(v) < 2**53:
        return int(v)
    return v


def _value(kind: str, b: tuple) -> Any:
    """One snapshot bucket ``(start, count, sum, min, max, last, sampled)``
    as 0.25's value."""
    _, count, total, lo, hi, last, _ = b
    if kind == "counter":
        return _number(total)
    if kind == "gauge":
        return _number(last)
    return {"count": count, "sum": _number(total), "avg": total / count, "min": _number(lo), "max": _number(hi)}


def _merge(kind: str, values: list[Any]) -> Any:
    """0.25's merge of one bucket across workers; gauges: ``values`` come
    latest-written first, and the first wins."""
    if kind == "counter":
        return sum(values)
    if kind == "gauge":
        return values[0]
    count = sum(v.get("count", 0) for v in values)
    total = sum(v.get("sum", 0) for v in values)
    mins = [v["min"] for v in values if "min" in v]
    maxs = [v["max"] for v in values if "max" in v]
    return {
        "count": count,
        "sum": total,
        "avg": total / count if count > 0 else 0,
        "min": min(mins) if mins else 0,
        "max": max(maxs) if maxs else 0,
    }


def _utc(t: datetime.datetime) -> datetime.datetime:
    return t.astimezone(UTC)


class Metrics(_ChancyMetrics):
    """Chancy 0.25's ``Metrics`` plugin, recording into ringmetrics.

    Takes 0.25's keywords (``sync_interval``, ``max_points_per_resolution``,
    ``maximum_metric_age``, ``collection_interval``), plus:

    - ``max_series``: how many distinct keys the worker's aggregator holds
      (default 4096; past it new keys are warned about and dropped).
    - ``ring_buckets``: buckets held in memory per resolution (default:
      ``max_points``, so the own-worker view of ``get_metrics`` shows as
      much as 0.25's). Saved buckets stay in the database whatever the
      depth; a bucket that leaves a shallower ring unsaved (an outage)
      waits in memory for the next successful flush (at most 10,000 of
      them; past that they are dropped and counted in ``drops()``).
    - ``clock``: a :class:`ringmetrics.ManualClock` for tests.
    - ``low_priority_syncer``: run the syncer thread at ``SCHED_IDLE``.
    - ``hold_connection``: keep the syncer's PostgreSQL connection open
      between flushes. Off by default: the syncer connects for each flush
      and closes after it, so between flushes it holds no connection, but
      each connection's start is one more committed transaction in
      ``pg_stat_database`` per flush (see BENCHMARKS.md). On, the worker
      commits exactly as many metric transactions as with Chancy's plugin
      and holds one more connection.
    """

    def __init__(
        self,
        *,
        sync_interval: int = 60,
        max_points_per_resolution: dict[str, int] | None = None,
        maximum_metric_age: int = 60 * 60 * 24 * 90,
        collection_interval: int = 30,
        max_series: int = 4096,
        ring_buckets: dict[str, int] | None = None,
        clock: ManualClock | None = None,
        low_priority_syncer: bool = False,
        hold_connection: bool = False,
    ) -> None:
        super().__init__(
            sync_interval=sync_interval,
            max_points_per_resolution=max_points_per_resolution,
            maximum_metric_age=maximum_metric_age,
            collection_interval=collection_interval,
        )
        for name, n in self.max_points.items():
            if name not in RESOLUTIONS:
                raise ValueError(f"max_points_per_resolution: unknown resolution {name!r}")
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise ValueError(f"max_points_per_resolution[{name!r}] must be a positive int, got {n!r}")
        ring = dict(self.max_points)
        for name, n in (ring_buckets or {}).items():
            if name not in RESOLUTIONS:
                raise ValueError(f"ring_buckets: unknown resolution {name!r}")
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise ValueError(f"ring_buckets[{name!r}] must be a positive int, got {n!r}")
            ring[name] = n
        self._clock = clock
        self._low_priority_syncer = bool(low_priority_syncer)
        self._hold_connection = bool(hold_connection)
        self._aggregator = Aggregator(max_series, buckets=ring, clock=clock)
        self._aggregator.start_saving()
        # The warning holds the plugin weakly (no cycle through the native
        # recorder).
        plugin = weakref.ref(self)

        def dropped(message: str) -> None:
            p = plugin()
            if p is not None:
                p._dropped(message)

        self._recorder = Recorder(self._aggregator, dropped, None)
        self._syncer: Syncer | None = None
        self._syncer_target: tuple[str, str] | None = None
        self._attached_as: str | None = None
        self._flush_lock = asyncio.Lock()
        self._last_warning = 0.0
        self._dropped_since_warning = 0
        #: The merged view of every worker's rows, refreshed by ``run``.
        self.aggregated_metrics_cache: dict[str, Metric] = {}
        # 0.25's per-key structures are not used: the aggregator holds the
        # local data.
        self.local_metrics_cache: dict[str, Metric] = {}
        for name in _RECORD_METHODS:
            if getattr(type(self), name) is getattr(Metrics, name):
                setattr(self, name, getattr(self._recorder, name))

    # -- recording ---------------------------------------------------------

    def _dropped(self, message: str) -> None:
        now = time.monotonic()
        self._dropped_since_warning += 1
        if now - self._last_warning >= WARN_EVERY or self._last_warning == 0.0:
            n, self._dropped_since_warning = self._dropped_since_warning, 0
            self._last_warning = now
            more = f" ({n - 1} more dropped since the last warning)" if n > 1 else ""
            log.warning("ringmetrics: dropped a metric record: %s%s", message, more)

    # Instances use the recorder's native methods (bound in __init__);
    # these are what the class, and subclasses calling super(), see.

    async def increment_counter(self, metric_key: str, value: float) -> None:  # type: ignore[override]
        """Increment a counter (0.25's signature). Invalid input is warned
        about and dropped."""
        await self._recorder.increment_counter(metric_key, value)

    async def record_gauge(self, metric_key: str, value: float) -> None:  # type: ignore[override]
        """Record a gauge (the latest value per bucket wins)."""
        await self._recorder.record_gauge(metric_key, value)

    async def record_histogram_value(self, metric_key: str, value: float) -> None:  # type: ignore[override]
        """Record a histogram observation ({count, sum, avg, min, max})."""
        await self._recorder.record_histogram_value(metric_key, value)

    def aggregator(self) -> Aggregator:
        """The aggregator behind this plugin (snapshots, drop counters)."""
        return self._aggregator

    def drops(self) -> dict[str, Any]:
        """The aggregator's drop counters."""
        return self._aggregator.drops()

    # -- lifecycle ---------------------------------------------------------

    async def run(self, worker: Any, chancy: Any) -> None:
        """Every ``sync_interval``: save what changed, then refresh the
        merged cache. When cancelled (the worker stopping; 0.25 cancels
        repeatedly), a final flush is made first, shielded."""
        self.worker_id = worker.worker_id
        try:
            try:
                await self._refresh(chancy)
            except Exception:
                log.warning("ringmetrics: cannot read the metrics table", exc_info=True)
            worker.manager.add(
                f"metrics_table_sizes_{self.worker_id}",
                self._collect_table_sizes(worker, chancy),
            )
            while await self.sleep(self.sync_interval):
                await self._sync_metrics(chancy)
        finally:
            await self._final_flush(chancy)

    async def _sync_metrics(self, chancy: Any) -> None:
        """One sync: flush, then refresh the merged cache. Failures are
        logged; the data stays pending and is retried next time."""
        try:
            await self.flush(chancy)
        except Exception as e:
            log.warning("ringmetrics: metrics flush failed, will retry: %s", e)
        try:
            await self._refresh(chancy)
        except Exception as e:
            log.warning("ringmetrics: reading the metrics table failed: %s", e)

    async def _final_flush(self, chancy: Any) -> None:
        """Flush and stop the syncer, waiting through repeated cancellation
        (bounded by ``FINAL_FLUSH_TIMEOUT``)."""
        task = asyncio.ensure_future(self._flush_and_stop(chancy))
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = True
            except Exception:
                break
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("ringmetrics: the final metrics flush failed: %s", task.exception())
        if cancelled:
            raise asyncio.CancelledError

    async def _flush_and_stop(self, chancy: Any) -> None:
        async with self._flush_lock:
            syncer = self._syncer
            if syncer is None and len(self._aggregator) and self.worker_id is not None:
                syncer = self._syncer_for(chancy)
            self._syncer = None
            self._attached_as = None
            if syncer is not None:
                await _wait(syncer.stop_in_background(FINAL_FLUSH_TIMEOUT))

    def _syncer_for(self, chancy: Any) -> Syncer:
        target = (chancy.dsn, chancy.prefix)
        if self._syncer is not None and (self._syncer_target != target or self._attached_as != self.worker_id):
            self._syncer.stop(FLUSH_TIMEOUT)
            self._syncer = None
        if self._syncer is None:
            self._syncer = Syncer(
                chancy.dsn,
                prefix=chancy.prefix,
                interval=None,
                max_backoff=300.0,
                low_priority=self._low_priority_syncer,
                hold_connection=self._hold_connection,
                schema_v1_max_points=[self.max_points[name] for name in RESOLUTIONS],
            )
            self._syncer_target = target
            self._attached_as = None
        if self._attached_as is None:
            self._syncer.attach(self._aggregator, self.worker_id or "")
            self._attached_as = self.worker_id
        return self._syncer

    async def flush(self, chancy: Any) -> dict[str, int]:
        """Save what changed since the last save now (under the worker id
        of ``run``), without blocking the event loop. Raises if saving
        fails; the data stays pending (a retry never double counts)."""
        if self.worker_id is None:
            raise RuntimeError("ringmetrics: no worker id yet: the plugin saves once a worker runs it")
        async with self._flush_lock:
            return await _wait(self._syncer_for(chancy).flush_in_background(FLUSH_TIMEOUT))

    # -- reading -----------------------------------------------------------

    async def _rows(self, chancy: Any, worker_id: str | None, metric_prefix: str | None) -> list[dict[str, Any]]:
        async with chancy.pool.connection() as conn:
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(
                    sql.SQL(
                        """
                        SELECT metric_key, resolution, worker_id, metric_type, updated_at, timestamps, values
                        FROM {metrics_table}
                        WHERE (%(worker_id)s::text IS NULL OR worker_id = %(worker_id)s)
                          AND (%(metric_prefix)s::text IS NULL OR metric_key LIKE %(metric_prefix)s)
                        ORDER BY metric_key, resolution, updated_at DESC, worker_id
                        """
                    ).format(metrics_table=sql.Identifier(f"{chancy.prefix}metrics")),
                    {
                        "worker_id": worker_id,
                        "metric_prefix": (
                            metric_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                            if metric_prefix
                            else None
                        ),
                    },
                )
                return await cursor.fetchall()

    def _merged(self, rows: list[dict[str, Any]], metric_prefix: str | None) -> dict[str, Metric]:
        """0.25's merge of rows (latest-written first per key and
        resolution) into Metrics, newest first, ``max_points`` long."""
        results: dict[str, Metric] = {}
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            key = row["metric_key"]
            if metric_prefix and not self.matches_prefix(metric_prefix, key):
                continue
            groups[(key, row["resolution"])].append(row)
        for (key, resolution), group in groups.items():
            if resolution not in RESOLUTIONS:
                continue
            metric = results.setdefault(key, Metric(metric_type=group[0]["metric_type"]))
            points: dict[datetime.datetime, list[Any]] = defaultdict(list)
            for row in group:
                for t, v in zip(row["timestamps"], row["values"]):
                    points[_utc(t)].append(v)
            merged = sorted(
                ((t, _merge(metric.metric_type, vs)) for t, vs in points.items()),
                key=lambda p: p[0],
                reverse=True,
            )
            setattr(metric, f"values_{resolution}", merged[: self.max_points[resolution]])
        return results

    async def _refresh(self, chancy: Any) -> None:
        """Replace the merged cache with every worker's rows."""
        self.aggregated_metrics_cache = self._merged(await self._rows(chancy, None, None), None)

    def _local(self, metric_prefix: str | None) -> dict[str, Metric]:
        """The live local data, unsaved included."""
        out: dict[str, Metric] = {}
        for key, kind, _unit in self._aggregator.series():
            if metric_prefix and not self.matches_prefix(metric_prefix, key):
                continue
            metric = Metric(metric_type=kind)  # type: ignore[arg-type]
            for name in RESOLUTIONS:
                buckets = self._aggregator.snapshot(key, name)
                points = [
                    (datetime.datetime.fromtimestamp(b[0], UTC), _value(kind, b)) for b in reversed(buckets)
                ]
                setattr(metric, f"values_{name}", points[: self.max_points[name]])
            out[key] = metric
        return out

    async def get_metrics(
        self,
        chancy: Any,
        metric_prefix: str | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Metric]:
        """0.25's three paths: this worker's id gives the live local data
        (unsaved included); another worker id that worker's rows from the
        database; none the merged view of every worker (from the cache
        ``run`` refreshes every ``sync_interval``: no query per call)."""
        if worker_id and worker_id == self.worker_id:
            return self._local(metric_prefix)
        if worker_id:
            return self._merged(await self._rows(chancy, worker_id, metric_prefix), metric_prefix)
        return {
            key: metric
            for key, metric in self.aggregated_metrics_cache.items()
            if not metric_prefix or self.matches_prefix(metric_prefix, key)
        }


logging.getLogger("ringmetrics.chancy").addHandler(logging.NullHandler())
