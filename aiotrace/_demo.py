"""The built-in program that ``aiotrace demo`` traces: a small coffee bar."""

from __future__ import annotations

import asyncio
import time

from ._annotate import log, logf
from ._region import region
from ._task import new_task


def _grind(order: int) -> None:
    with region("grindBeans"):
        time.sleep(0.002)
        logf("grinder", "order %d: beans ground", order)


async def _barista(order: int, queue: asyncio.Queue[int]) -> None:
    async with new_task("order"):
        log("barista", f"order {order}: start")
        await asyncio.to_thread(_grind, order)
        async with region("steamMilk"):
            await asyncio.sleep(0.001 * order)
        await queue.put(order)
        log("barista", f"order {order}: served")


async def main(orders: int = 4) -> None:
    """Serves ``orders`` coffees concurrently, each a task with regions."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    async with asyncio.TaskGroup() as tg:
        for order in range(1, orders + 1):
            tg.create_task(_barista(order, queue))
    served = [queue.get_nowait() for _ in range(orders)]
    logf("cafe", "served %d orders: %s", len(served), served)
