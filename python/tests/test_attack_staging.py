"""Large flushes (more than 5,000 chunk rows: the syncer's staging table)
through the plugin, read back with Chancy's own get_metrics and compared
with what Chancy's own plugin saves for the same records."""

import psycopg
import pytest
from chancy import Chancy
from chancy.plugins.metrics import Metrics as ChancyMetrics
from test_persistence import T0, Clock

from ringmetrics.chancy import Metrics

pytestmark = pytest.mark.timeout(600)

GROUPS = 14  # x 100 keys x 4 resolutions: 5,600 chunk rows per flush
#: Large, negative, signed zero and fractions, all sums exact (any order
#: of addition gives the same double: Chancy and the core add differently).
EDGES = [2.0**40, -(2.0**40), -0.0, 0.5, 123456789.25, -42.5, 0.125, 3 * 2.0**38]


def app(dsn, prefix, plugin):
    return Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False)


async def record(plugin, round_):
    for g in range(GROUPS):
        for i in range(100):
            key = f"grp{g}:k{i}"
            v = EDGES[(g * 100 + i + round_) % len(EDGES)]
            if g < 6:
                await plugin.increment_counter(key, v)
            elif g < 10:
                await plugin.record_gauge(key, v)
            else:
                await plugin.record_histogram_value(key, v, unit="seconds")
                await plugin.record_histogram_value(key, -v / 4, unit="seconds")


async def read(plugin, chancy, resolution):
    out = {}
    for g in range(GROUPS):
        result = await plugin.get_metrics(chancy, f"grp{g}", resolution=resolution, limit=60)
        for key, metric in result["series"].items():
            out[key] = (
                metric.type,
                metric.unit,
                [(p.timestamp.timestamp(), p.value, p.sampled_at.timestamp()) for p in metric.data],
            )
    return out


async def test_a_large_flush_reads_back_like_chancys_own(dsn, prefix, monkeypatch):
    clock = Clock(monkeypatch, T0 + 5)
    theirs = ChancyMetrics(max_buffered_points=40000)
    ours = Metrics(max_buffered_points=40000)
    async with app(dsn, f"{prefix}c_", theirs) as a, app(dsn, f"{prefix}r_", ours) as b:
        await a.migrate()
        await b.migrate()
        # Minutes 0, 1, then 13 and 14 (another 1min chunk).
        for round_, minute in enumerate([0, 1, 13, 14]):
            clock.t = T0 + minute * 60 + 5 + round_
            await record(theirs, round_)
            await record(ours, round_)
            await theirs.flush(a)
            await ours.flush(b)
            for resolution in ("1min", "5min", "1hour"):
                want = await read(theirs, a, resolution)
                got = await read(ours, b, resolution)
                assert len(want) == GROUPS * 100
                assert got == want, (round_, resolution)
            theirs._read_cache.clear()
            ours._read_cache.clear()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cur = await conn.execute(f'SELECT count(*) FROM "{prefix}r_metrics"')
            (rows,) = await cur.fetchone()
            assert rows > 5000
