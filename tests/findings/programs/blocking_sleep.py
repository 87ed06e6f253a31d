"""A handler that calls time.sleep (50 ms, under the stall threshold) ten
times; an innocent look-alike awaits asyncio.sleep for as long."""

import asyncio
import time


def load_config() -> None:
    time.sleep(0.05)  # mark: culprit


async def handler(n: int) -> None:
    await asyncio.sleep(0.01)  # mark: began
    load_config()  # mark: caller
    await asyncio.sleep(0)  # mark: ended


async def patient(n: int) -> None:
    await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # innocent: awaits, never blocks
    await asyncio.sleep(0)


async def main() -> None:
    for i in range(10):
        await asyncio.gather(handler(i), patient(i))


asyncio.run(main())
