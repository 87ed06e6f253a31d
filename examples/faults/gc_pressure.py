"""GC pressure: one coroutine makes heaps of cyclic garbage; the collector pauses all.

Fault: ``index_documents`` builds, for each batch, a tree whose nodes
point at their parent and their children (reference cycles), then drops
it. Only the cyclic garbage collector can free cycles, so it runs often
and long, and every collection pauses the whole program, the other
coroutines included.

Culprit: ``index_documents`` (the cycles are made in ``link_nodes``).
Innocents: ``serve_health`` and ``count_clicks``, which allocate little
and make no cycles.

Run it: ``aiotrace run examples/faults/gc_pressure.py`` then
``aiotrace stats gc_pressure.trace``.
"""

from __future__ import annotations

import asyncio


class Node:
    def __init__(self, parent: Node | None) -> None:
        self.parent = parent
        self.children: list[Node] = []
        self.payload = {"words": [parent is None]}


def link_nodes(count: int) -> Node:
    root = Node(None)
    level = [root]
    made = 1
    while made < count:
        nxt: list[Node] = []
        for parent in level:
            for _ in range(4):
                child = Node(parent)  # fault: child -> parent -> child, a cycle
                parent.children.append(child)
                nxt.append(child)
                made += 1
        level = nxt
    return root


async def index_documents(done: asyncio.Event) -> int:
    total = 0
    for _ in range(16):
        tree = link_nodes(20_000)
        total += len(tree.children)
        del tree  # cyclic garbage: only the collector frees it
        await asyncio.sleep(0)
    done.set()
    return total


async def serve_health(done: asyncio.Event) -> int:
    served = 0
    while not done.is_set():
        served += 1
        await asyncio.sleep(0.005)
    return served


async def count_clicks(done: asyncio.Event) -> int:
    clicks = 0
    while not done.is_set():
        clicks += 1
        await asyncio.sleep(0.004)
    return clicks


async def main() -> None:
    done = asyncio.Event()
    await asyncio.gather(index_documents(done), serve_health(done), count_clicks(done))


if __name__ == "__main__":
    asyncio.run(main())
