"""Lock contention: a coroutine holds a lock while it awaits something slow.

Fault: ``refresh_orders`` takes ``orders_lock`` and, while holding it,
awaits a slow fetch (100 ms). The ``read_orders`` coroutines, which only
need the lock for a moment, queue behind it each time.

Culprit: ``refresh_orders`` (the ``await fetch_remote()`` inside
``async with orders_lock``).
Innocents: ``bump_stats``, two coroutines that share another lock,
``stats_lock``, for a short critical section each (a little contention,
no time lost).

Run it: ``aiotrace run examples/faults/lock.py`` then
``aiotrace stats lock.trace``.
"""

from __future__ import annotations

import asyncio

orders: dict[int, str] = {}
stats = {"hits": 0}


async def fetch_remote(n: int) -> str:
    await asyncio.sleep(0.1)  # a slow network call
    return f"order-{n}"


async def refresh_orders(orders_lock: asyncio.Lock) -> None:
    for n in range(6):
        async with orders_lock:
            orders[n] = await fetch_remote(n)  # fault: awaits while holding the lock
        await asyncio.sleep(0.005)


async def read_orders(orders_lock: asyncio.Lock) -> int:
    seen = 0
    for _ in range(12):
        async with orders_lock:
            seen += len(orders)
        await asyncio.sleep(0.01)
    return seen


async def bump_stats(stats_lock: asyncio.Lock) -> None:
    for _ in range(80):
        async with stats_lock:
            stats["hits"] += 1
            await asyncio.sleep(0)  # a short critical section
        await asyncio.sleep(0.005)


async def main() -> None:
    orders_lock = asyncio.Lock()
    stats_lock = asyncio.Lock()
    await asyncio.gather(
        refresh_orders(orders_lock),
        *(read_orders(orders_lock) for _ in range(4)),
        bump_stats(stats_lock),
        bump_stats(stats_lock),
    )


if __name__ == "__main__":
    asyncio.run(main())
