"""Job functions the tests' Chancy workers run (importable by the executor)."""

import asyncio

from chancy import job


@job()
async def quick(n: int = 0) -> int:
    await asyncio.sleep(0.01)
    return n


@job()
async def boom() -> None:
    raise RuntimeError("expected failure")
