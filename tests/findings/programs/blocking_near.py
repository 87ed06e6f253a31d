"""A blocking call just under the stall threshold (90 ms against 0.1 s):
a stall on a loaded machine, a long step on an idle one; named either way.
The innocent awaits as long."""

import asyncio
import time


async def render(n: int) -> None:
    await asyncio.sleep(0.005)
    time.sleep(0.09)  # mark: culprit
    await asyncio.sleep(0.005)


async def idle(n: int) -> None:
    await asyncio.sleep(0.09)


async def main() -> None:
    for i in range(2):
        await asyncio.gather(render(i), idle(i))


asyncio.run(main())
