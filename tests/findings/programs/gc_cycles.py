"""GC pressure: one coroutine makes heaps of cyclic garbage.

Culprit: ``ingest`` (the cycles are made in ``make_graph``); every
collection it triggers pauses the loop. Innocent: ``heartbeat``, which
allocates little and makes no cycles.
"""

from __future__ import annotations

import asyncio


class Vertex:
    def __init__(self, up: Vertex | None) -> None:
        self.up = up
        self.down: list[Vertex] = []
        self.tags = {"seen": [up is None]}


def make_graph(count: int) -> Vertex:
    root = Vertex(None)
    last = root
    for i in range(count):
        v = Vertex(last if i % 5 else root)  # fault: child <-> parent, a cycle
        v.up.down.append(v)  # type: ignore[union-attr]
        last = v
    return root


async def ingest(done: asyncio.Event) -> int:
    kept: list[Vertex] = []
    for _ in range(16):
        kept.append(make_graph(20_000))
        if len(kept) > 8:
            kept.pop(0)  # cyclic garbage: only the collector frees it
        await asyncio.sleep(0)
    done.set()
    return len(kept)


async def heartbeat(done: asyncio.Event) -> int:
    beats = 0
    while not done.is_set():
        beats += 1
        await asyncio.sleep(0.003)
    return beats


async def main() -> None:
    done = asyncio.Event()
    await asyncio.gather(ingest(done), heartbeat(done))


if __name__ == "__main__":
    asyncio.run(main())
