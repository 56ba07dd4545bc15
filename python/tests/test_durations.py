"""Every float that becomes a duration is validated: a timeout that is NaN,
infinite, negative or over the documented maximum (1e9 s) raises ValueError,
never PanicException; an interval that is NaN or under a nanosecond
(zero, negative) raises ValueError, and one over the maximum (infinity included: Chancy accepts any
positive ``sync_interval``) means "no periodic sync" and is clamped."""

import math
import time

import pytest
from chancy import Chancy, Queue, Worker

from ringmetrics import Aggregator, StorageError
from ringmetrics.chancy import Metrics

pytestmark = pytest.mark.timeout(60)

MAX_SECS = 1e9
# Nothing listens on port 1: a flush fails at once, which is what lets a
# test tell "refused" (ValueError) from "accepted and tried" (StorageError).
NOWHERE = "host=127.0.0.1 port=1 connect_timeout=1"
BAD_TIMEOUTS = [math.nan, math.inf, -math.inf, -1.0, -1e-9, MAX_SECS * 1.0001, 1e20, 1e300]
BAD_INTERVALS = [math.nan, -math.nan, 0.0, -0.0, -1.0, -math.inf, 1e-10, 5e-324]
HUGE_INTERVALS = [MAX_SECS * 2, 1e20, float(10**20), math.inf]


def loaded():
    """An aggregator with something to write (a flush with nothing to
    write does not connect, so it would not fail)."""
    agg = Aggregator(4)
    agg.increment_counter("c", 1)
    return agg


@pytest.fixture
def syncer():
    s = loaded().start_syncer(NOWHERE, interval=3600)
    yield s
    try:
        s.stop(timeout=10)
    except StorageError:
        pass


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS)
@pytest.mark.parametrize("method", ["flush", "flush_in_background", "stop"])
def test_a_bad_timeout_is_a_value_error(syncer, method, timeout):
    with pytest.raises(ValueError, match="timeout") as err:
        getattr(syncer, method)(timeout=timeout)
    assert type(err.value) is ValueError, "not a PanicException"
    assert syncer.status()["running"], "a refused stop leaves the syncer running"


@pytest.mark.parametrize("timeout", [0.0, 1e-9, 2.5, MAX_SECS])
@pytest.mark.parametrize("method", ["flush", "flush_in_background"])
def test_timeouts_up_to_the_maximum_are_accepted(syncer, method, timeout):
    # Accepted: the flush is tried (and fails, nobody listens, or times
    # out first), not refused.
    if method == "flush":
        with pytest.raises((StorageError, TimeoutError)):
            syncer.flush(timeout=timeout)
        return
    pending = syncer.flush_in_background(timeout=timeout)
    deadline = time.monotonic() + 10
    while not pending.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises((StorageError, TimeoutError)):
        pending.result()


def test_stop_accepts_the_maximum_timeout():
    s = loaded().start_syncer(NOWHERE, interval=3600)
    with pytest.raises(StorageError):
        s.stop(timeout=MAX_SECS)
    assert not s.status()["running"]


@pytest.mark.parametrize("interval", BAD_INTERVALS)
@pytest.mark.parametrize("name", ["interval", "max_backoff"])
def test_a_bad_interval_is_a_value_error(name, interval):
    with pytest.raises(ValueError, match=name) as err:
        Aggregator(4).start_syncer(NOWHERE, **{name: interval})
    assert type(err.value) is ValueError


@pytest.mark.parametrize("interval", HUGE_INTERVALS)
@pytest.mark.parametrize("name", ["interval", "max_backoff"])
def test_an_interval_over_the_maximum_is_clamped(name, interval):
    s = loaded().start_syncer(NOWHERE, **{name: interval})
    assert s.status()["running"]
    with pytest.raises(StorageError):
        s.stop(timeout=10)


async def test_a_huge_sync_interval_chancy_accepts_runs_a_worker(dsn, prefix):
    # Chancy's constructor accepts any positive sync_interval; the worker
    # must start, record and save on its final flush.
    plugin = Metrics(sync_interval=10**20)
    async with Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False) as chancy:
        await chancy.migrate()
        await chancy.declare(Queue("work", concurrency=1, executor="chancy.executors.asyncex.AsyncExecutor"))
        worker = Worker(
            chancy,
            worker_id="w-huge-interval",
            register_signal_handlers=False,
            heartbeat_poll_interval=1,
            queue_change_poll_interval=1,
        )
        await worker.start()
        await worker.increment_counter("huge:interval", 2)
        await worker.stop()
        result = await plugin.get_metrics(chancy, "huge:interval", resolution="1min", range_seconds=3600)
        series = result["series"]["huge:interval"]
        assert sum(p.value for p in series.data) == 2
