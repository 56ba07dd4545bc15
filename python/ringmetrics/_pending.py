"""Waiting on a ``PendingFlush`` from an event loop, for both plugins."""

from __future__ import annotations

import asyncio
from typing import Any


async def wait(pending: Any) -> dict[str, int]:
    """Wait for a PendingFlush without blocking the event loop: the work
    runs on a Rust helper thread that signals a socket the loop watches.
    (``asyncio.to_thread`` would block the loop while it starts its first
    worker thread, and the worker would need the GIL back to report.)"""
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
