"""Job functions for the soak and kill tests (imported by Chancy's executor)."""

from chancy import job


@job()
async def tick(n: int = 0) -> int:
    return n
