"""After the C++ worker synced schema 1: a worker with Chancy 0.25's own
plugin records the same keys into the same table, then 0.25's own reads
(another worker's rows, and the merged pull its sync makes) must give the
exact values. Run with Chancy 0.25.1 (.venv-025).

usage: check_chancy025.py DSN PREFIX
"""

import asyncio
import sys

from chancy import Chancy
from chancy.plugins.metrics import Metrics


async def main(dsn: str, prefix: str) -> None:
    plugin = Metrics()
    async with Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False) as chancy:
        plugin.worker_id = "py-worker"
        await plugin.increment_counter("job:resize:succeeded", 5)
        await plugin.record_histogram_value("job:resize:execution_time", 2.0)
        await plugin._push_metrics_to_db(chancy, metric_keys=set(plugin.local_metrics_cache))
        # Another worker's rows: the C++ worker's, as 0.25 reads them.
        cxx = await plugin.get_metrics(chancy, "job:resize", worker_id="cxx-025")
        assert [v for _, v in cxx["job:resize:succeeded"].values_1hour] == [1000], cxx
        assert [v for _, v in cxx["job:resize:failed"].values_1day] == [3], cxx
        hist = cxx["job:resize:execution_time"].values_5min[0][1]
        assert hist == {"count": 1000, "sum": 625.0, "avg": 0.625, "min": 0.25, "max": 1.0}, hist
        # The merged pull of every worker (what 0.25's sync caches).
        merged = await plugin._get_raw_metrics(chancy)
        assert [v for _, v in merged["job:resize:succeeded"].values_1day] == [1005], merged
        assert merged["job:resize:execution_time"].values_1day[0][1] == {
            "count": 1001,
            "sum": 627.0,
            "avg": 627.0 / 1001,
            "min": 0.25,
            "max": 2.0,
        }
        assert [v for _, v in merged["queue:images:depth"].values_1day] == [42]
        assert merged["queue:images:depth"].metric_type == "gauge"
        assert [v for _, v in merged["queue:images:throughput"].values_1hour] == [1000]
        print("c: Chancy 0.25's get_metrics read the C++ worker's schema-1 rows merged with Python's: 1005")


asyncio.run(main(*sys.argv[1:3]))
