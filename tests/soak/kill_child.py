"""A Chancy worker with ringmetrics' plugin that records ``kill:test`` as
fast as a steady loop allows and publishes how many it recorded through a
shared 8-byte file, so the parent knows the truth when it kills us.

usage: kill_child.py DSN PREFIX COUNTER_FILE
"""

import asyncio
import logging
import mmap
import signal
import struct
import sys

from chancy import Chancy, Worker

from ringmetrics.chancy import Metrics

# Chancy logs every job at INFO; keep warnings (failed flushes) only.
QUIET = logging.getLogger("soak.chancy")
QUIET.setLevel(logging.WARNING)


async def main(dsn: str, prefix: str, counter_file: str) -> None:
    with open(counter_file, "r+b") as f:
        shared = mmap.mmap(f.fileno(), 8)
    plugin = Metrics(sync_interval=1)
    async with Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False, log=QUIET) as chancy:
        await chancy.migrate()
        worker = Worker(chancy, worker_id="kill-child", register_signal_handlers=False)
        await worker.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        n = 0
        while not stop.is_set():
            await worker.increment_counter("kill:test", 1)
            n += 1
            shared[:8] = struct.pack("<q", n)
            if n % 50 == 0:
                await asyncio.sleep(0.01)
        # Clean stop: the worker's final flush saves everything.
        await worker.stop()
        print(f"stopped after {n}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
