"""Job functions the 0.25 suite's workers run."""

import asyncio

from chancy import job


@job()
async def quick(n: int = 0) -> int:
    await asyncio.sleep(0.01)
    return n


@job()
async def boom() -> None:
    raise RuntimeError("expected failure")
