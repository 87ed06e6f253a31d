"""Executor starvation: slow work fills a thread pool, quick work queues behind.

Fault: ``render_pdf`` (200 ms of blocking work) runs in ``render_pool``,
a ``ThreadPoolExecutor(max_workers=2)``. Six renders take both threads
for 0.6 s, and ``lookup_price``, a function that takes no time at all,
waits in the same pool's queue behind them.

Culprit: ``render_pdf`` (in ``render_pool``, 2 workers).
Innocents: ``hash_chunk``, run by ``checksum_worker`` in ``hash_pool``
(4 workers, busy but never all taken).

Run it: ``aiotrace run examples/faults/executor.py`` then
``aiotrace stats executor.trace``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor


def render_pdf(n: int) -> bytes:
    time.sleep(0.2)  # fault: slow blocking work in a 2-thread pool
    return b"%PDF" + bytes([n])


def lookup_price(n: int) -> float:
    return n * 1.25


def hash_chunk(n: int) -> str:
    data = bytes([n % 256]) * 200_000
    time.sleep(0.01)
    return hashlib.sha256(data).hexdigest()


async def handle_render(pool: ThreadPoolExecutor, n: int) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(pool, render_pdf, n)


async def handle_price(pool: ThreadPoolExecutor, n: int) -> float:
    await asyncio.sleep(0.05)  # arrives once the renders hold the pool
    return await asyncio.get_running_loop().run_in_executor(pool, lookup_price, n)


async def checksum_worker(pool: ThreadPoolExecutor, base: int) -> list[str]:
    loop = asyncio.get_running_loop()
    return [await loop.run_in_executor(pool, hash_chunk, base + i) for i in range(30)]


async def main() -> None:
    with (
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="render") as render_pool,
        ThreadPoolExecutor(max_workers=4, thread_name_prefix="hash") as hash_pool,
    ):
        await asyncio.gather(
            *(handle_render(render_pool, i) for i in range(6)),
            *(handle_price(render_pool, i) for i in range(4)),
            checksum_worker(hash_pool, 0),
            checksum_worker(hash_pool, 100),
        )


if __name__ == "__main__":
    asyncio.run(main())
