"""User tasks (no web framework) whose time goes to one region.

Each "checkout" task runs a slow "db query" region (0.1 s, the culprit)
and a fast "render" region; each "ping" task runs a fast "db query" and
nothing else (innocent). 30 of each, 10 at a time.
"""

from __future__ import annotations

import asyncio

import aiotrace


async def checkout() -> None:
    with aiotrace.new_task("checkout"):
        async with aiotrace.region("db query"):
            await asyncio.sleep(0.1)
        async with aiotrace.region("render"):
            await asyncio.sleep(0.002)


async def ping() -> None:
    with aiotrace.new_task("ping"):
        async with aiotrace.region("db query"):
            await asyncio.sleep(0.001)


async def main() -> None:
    for _ in range(3):
        await asyncio.gather(
            *(checkout() for _ in range(10)), *(ping() for _ in range(10))
        )


if __name__ == "__main__":
    asyncio.run(main())
