"""Lock contention: ``worker`` holds ``shared`` while it awaits a slow
``fetch``, so the other workers queue behind it; ``tidy`` takes its own
lock for a moment only (innocent)."""

import asyncio


async def fetch() -> None:
    await asyncio.sleep(0.1)  # mark: fetch


async def worker(lock: asyncio.Lock) -> None:
    async with lock:  # mark: acquire
        await fetch()


async def tidy(lock: asyncio.Lock) -> None:
    for _ in range(10):
        async with lock:  # mark: tidy
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)


async def main() -> None:
    shared, own = asyncio.Lock(), asyncio.Lock()
    await asyncio.gather(*(worker(shared) for _ in range(5)), tidy(own), tidy(own))


asyncio.run(main())
