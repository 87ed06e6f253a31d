"""The built-in program that ``aiotrace demo`` traces."""

from __future__ import annotations

import asyncio
import threading
import time

from ._annotate import log, logf


def _grind(order: int) -> None:
    time.sleep(0.002)
    logf("grinder", "order %d: beans ground in thread %s", order, threading.get_ident())


async def _barista(order: int, queue: asyncio.Queue[int]) -> None:
    log("barista", f"order {order}: start")
    await asyncio.to_thread(_grind, order)
    await asyncio.sleep(0.001 * order)
    await queue.put(order)
    log("barista", f"order {order}: served")


async def main(orders: int = 4) -> None:
    """Serves ``orders`` coffees concurrently, logging each step."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    async with asyncio.TaskGroup() as tg:
        for order in range(1, orders + 1):
            tg.create_task(_barista(order, queue))
    served = [queue.get_nowait() for _ in range(orders)]
    logf("cafe", "served %d orders: %s", len(served), served)
