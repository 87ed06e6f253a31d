"""Executor starvation: slow reports hold a 2-thread pool; quick rate
lookups queue behind them.

Culprit: ``build_report`` holds both workers of ``reports``;
``fetch_rate`` (quick) waits in its queue. Innocent: ``make_thumb`` keeps
the 4-thread ``thumbs`` pool busy, never full.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor


def build_report(n: int) -> int:
    time.sleep(0.15)  # fault: slow blocking work in a 2-thread pool
    return n


def fetch_rate(n: int) -> float:
    time.sleep(0.001)
    return n * 1.5


def make_thumb(n: int) -> int:
    time.sleep(0.04)
    return n


async def rates(pool: ThreadPoolExecutor) -> list[float]:
    await asyncio.sleep(0.03)  # once the reports hold the pool
    loop = asyncio.get_running_loop()
    # Gathered futures: no coroutine waits for each call on its own.
    return await asyncio.gather(
        *(loop.run_in_executor(pool, fetch_rate, i) for i in range(3))
    )


async def rate(pool: ThreadPoolExecutor, n: int) -> float:
    await asyncio.sleep(0.03)
    return await asyncio.get_running_loop().run_in_executor(pool, fetch_rate, n)


async def report(pool: ThreadPoolExecutor, n: int) -> int:
    return await asyncio.get_running_loop().run_in_executor(pool, build_report, n)


async def thumbs(pool: ThreadPoolExecutor, base: int) -> list[int]:
    loop = asyncio.get_running_loop()
    return [await loop.run_in_executor(pool, make_thumb, base + i) for i in range(10)]


async def main() -> None:
    with (
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="reports") as reports,
        ThreadPoolExecutor(max_workers=4, thread_name_prefix="thumbs") as pics,
    ):
        await asyncio.gather(
            *(report(reports, i) for i in range(6)),
            rates(reports),
            *(rate(reports, i) for i in range(3)),
            thumbs(pics, 0),
            thumbs(pics, 100),
        )


if __name__ == "__main__":
    asyncio.run(main())
