"""After the C++ worker synced: a Python worker with Chancy's own plugin
records the same keys into the same tables, then Chancy's get_metrics must
read back the exact merged values.

usage: check_chancy.py DSN PREFIX
"""

import asyncio
import sys

from chancy import Chancy
from chancy.plugins.metrics import Metrics


async def main(dsn: str, prefix: str) -> None:
    plugin = Metrics()
    async with Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False) as chancy:
        await chancy.migrate()  # the C++ worker's syncer created version 2 already
        await plugin.increment_counter("job:resize:succeeded", 5)
        await plugin.record_histogram_value("job:resize:execution_time", 2.0, unit="seconds")
        await plugin.flush(chancy)
        result = await plugin.get_metrics(chancy, "job:resize", resolution="1hour", range_seconds=86400)
        got = {key: metric.summary for key, metric in result["series"].items()}
        want = {
            "job:resize:succeeded": 1005.0,
            "job:resize:failed": 3.0,
            "job:resize:execution_time": {"count": 1001, "sum": 627.0, "avg": 627.0 / 1001, "min": 0.25, "max": 2.0},
        }
        assert got == want, f"merged values differ:\n got {got}\nwant {want}"
        other = await plugin.get_metrics(chancy, "queue:images", resolution="5min")
        assert other["series"]["queue:images:depth"].summary == 42.0
        assert other["series"]["queue:images:depth"].unit == "items"
        assert other["series"]["queue:images:throughput"].summary == 1000.0
        workers = await plugin.get_metrics(chancy, "job:resize", "cxx-worker-1", resolution="1hour")
        assert workers["series"]["job:resize:succeeded"].summary == 1000.0
        print("c: Chancy's get_metrics read the C++ worker's data merged with Python's:", got["job:resize:succeeded"])


asyncio.run(main(*sys.argv[1:3]))
