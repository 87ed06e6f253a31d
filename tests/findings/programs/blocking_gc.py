"""Innocent look-alike: steps that are slow because the garbage collector
runs in them (full collections of a big heap of cycles), not because of a
blocking call; the GC rule reports them."""

import asyncio
import gc


class Node:
    def __init__(self) -> None:
        self.me = self


heap = [Node() for _ in range(600_000)]


async def tick() -> None:
    for _ in range(5):
        await asyncio.sleep(0.005)
        gc.collect()  # mark: collect


asyncio.run(tick())
