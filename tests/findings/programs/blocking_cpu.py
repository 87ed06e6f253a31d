"""A coroutine that parses a big document in pure Python between awaits
(about 40 ms a step, under the stall threshold, 8 times), and an innocent
that does many tiny steps of the same total work."""

import asyncio
import time


def parse(deadline: float) -> int:
    n = 0
    while time.perf_counter() < deadline:
        n += sum(i * i for i in range(200))  # mark: culprit
    return n


async def importer() -> None:
    for _ in range(8):
        await asyncio.sleep(0.005)  # mark: began
        parse(time.perf_counter() + 0.04)  # mark: caller


async def chatty() -> None:
    for _ in range(320):
        parse(time.perf_counter() + 0.001)  # innocent: 1 ms steps
        await asyncio.sleep(0)


async def main() -> None:
    await asyncio.gather(importer(), chatty())


asyncio.run(main())
