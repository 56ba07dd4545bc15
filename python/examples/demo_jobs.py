"""Job functions for the demo (imported by Chancy's executor)."""

import asyncio
import random

from chancy import job


@job()
async def send_email(to: str) -> None:
    await asyncio.sleep(random.uniform(0.001, 0.02))


@job()
async def resize_image(size: int) -> None:
    await asyncio.sleep(random.uniform(0.005, 0.04))
    if size % 17 == 0:
        raise ValueError("corrupt image")
