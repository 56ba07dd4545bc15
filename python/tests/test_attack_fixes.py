"""Adversarial tests of commit f29ac62 (fixes to the unsaved-bucket buffer)
through the Chancy plugin and the native API: every observation saved
exactly once, nothing dropped silently, nothing reported dropped that was
saved."""

import queue
import threading

import psycopg
import pytest

from ringmetrics import Aggregator, ManualClock, read_metrics
from ringmetrics.chancy import Metrics
from test_persistence import T0, Clock, app

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

SMALL = {"1min": 6, "5min": 6, "1hour": 6, "1day": 6}


def stored(dsn, prefix, key, resolution, end=T0 + 7200):
    rows = read_metrics(dsn, prefix=prefix, metric_prefix=key, resolution=resolution, start=T0, end=end)
    return sorted((b[0], b[2]) for row in rows if row[0] == key for b in row[3])


class Helper:
    """A thread that stays alive (keeping its writer stripe) and runs what
    it is handed, one call at a time."""

    def __init__(self):
        self.jobs = queue.Queue()
        self.done = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while (job := self.jobs.get()) is not None:
            try:
                job()
                self.done.put(None)
            except BaseException as e:  # handed back to the test
                self.done.put(e)

    def __call__(self, job):
        self.jobs.put(job)
        if (e := self.done.get(timeout=30)) is not None:
            raise e

    def close(self):
        self.jobs.put(None)
        self.thread.join(30)


async def test_a_conflict_that_ends_loses_nothing_recorded_after_it(dsn, prefix, monkeypatch):
    """The stored definition of "k" conflicts at the first flush (dropped,
    warned); then it is deleted (an operator, or cleanup of an orphan
    definition). Minutes 1..=10 are recorded after that and 1..=4 leave the
    6-minute ring before the next flush: all ten must be saved."""
    clock = Clock(monkeypatch, T0 + 5)
    plugin = Metrics(sync_interval=3600, ring_buckets=SMALL)
    async with app(dsn, prefix, plugin) as chancy:
        await chancy.migrate()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                f'INSERT INTO "{prefix}metric_definitions" (key, metric_type, unit) VALUES (%s, %s, %s)',
                ["k", "gauge", "number"],
            )
        await plugin.increment_counter("k", 1)
        await plugin.flush(chancy)
        assert stored(dsn, prefix, "k", "1min") == []
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DELETE FROM "{prefix}metric_definitions" WHERE key = %s', ["k"])
        for m in range(1, 11):
            clock.t = T0 + 5 + 60 * m
            await plugin.increment_counter("k", 1)
        await plugin.flush(chancy)
    after = [b for b in stored(dsn, prefix, "k", "1min") if b[0] >= T0 + 60]
    assert after == [(T0 + 60 * m, 1.0) for m in range(1, 11)], f"{len(after)} of 10 minutes saved"


def test_native_a_fold_judged_saved_keeps_what_the_read_showed_displaced(dsn, prefix):
    """A flush reads 1min minute 0 as the bucket main's pending minute 6
    displaces (its slot's own count, 1) while a second thread's pending
    minute 0 adds to it; that thread then folds minute 0 with nothing else
    changed (judged covered by the saved read) and minute 6 pushes minute 0
    (2 observations) out of the ring: both must be saved."""
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock)
    s = agg.start_syncer(dsn, prefix=prefix, interval=None)
    helper = Helper()
    try:
        agg.increment_counter("c", 1)  # main: minute 0
        helper(lambda: agg.increment_counter("c", 1))  # helper: minute 0
        clock.set(T0 + 60)
        agg.increment_counter("c", 1)  # folds main's minute 0
        clock.set(T0 + 360)
        agg.increment_counter("c", 1)  # main pending: minute 6
        s.flush()
        helper(lambda: agg.increment_counter("c", 1))  # folds helper's minute 0
        clock.set(T0 + 420)
        agg.increment_counter("c", 1)
        s.flush()
        s.stop()
    finally:
        helper.close()
    assert stored(dsn, prefix, "c", "1min") == [(T0, 2.0), (T0 + 60, 1.0), (T0 + 360, 2.0), (T0 + 420, 1.0)]


def test_native_an_idle_threads_lone_minute_is_saved_after_an_outage(dsn, prefix):
    """A thread (alive, idle) recorded the only observation of minute 0; the
    database is unreachable for 40 minutes while this thread records every
    minute from minute 1. Minute 0 must be saved at 1min and 5min."""
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock)
    nowhere = agg.start_syncer("host=127.0.0.1 port=1 connect_timeout=1", prefix=prefix, interval=None)
    helper = Helper()
    try:
        helper(lambda: agg.increment_counter("lone", 1))
        for m in range(1, 40):
            clock.set(T0 + 60 * m)
            agg.increment_counter("lone", 1)
        with pytest.raises(Exception):
            nowhere.flush()
        with pytest.raises(Exception):
            nowhere.stop(5)
        s = agg.start_syncer(dsn, prefix=prefix, interval=None)
        s.flush()
        s.stop()
    finally:
        helper.close()
    ones = stored(dsn, prefix, "lone", "1min")
    fives = stored(dsn, prefix, "lone", "5min")
    assert (ones[:1], sum(v for _, v in fives)) == ([(T0, 1.0)], 40.0), agg.drops()


def test_native_a_pending_minute_saved_through_the_buffer_is_not_reported_dropped(dsn, prefix):
    """An idle thread's minute 0 is merged into the bucket evicted to the
    buffer and saved; its later fold finds a newer bucket in the slot.
    Nothing was lost: drops() must say so."""
    clock = ManualClock(T0)
    agg = Aggregator(4, buckets=SMALL, clock=clock)
    s = agg.start_syncer(dsn, prefix=prefix, interval=None)
    helper = Helper()
    try:
        agg.increment_counter("c", 1)
        helper(lambda: agg.increment_counter("c", 1))
        for m in range(1, 20):
            clock.set(T0 + 60 * m)
            agg.increment_counter("c", 1)
        helper(lambda: agg.increment_counter("c", 1))
        s.flush()
        s.stop()
    finally:
        helper.close()
    want = [(T0 + 60 * m, 2.0 if m in (0, 19) else 1.0) for m in range(20)]
    assert stored(dsn, prefix, "c", "1min") == want
    d = agg.drops()
    assert (d["stale"], d["unsaved"]) == ({r: 0 for r in SMALL}, {r: 0 for r in SMALL}), d
