"""A lost wakeup: notify() wakes one waiter where several should wake.

Fault: ``publish_batch`` adds three items and calls ``cond.notify()``,
which wakes only one of the three ``take_item`` waiters; it should call
``notify_all()`` (or ``notify(3)``). The other two sleep on with items
ready, until their ``asyncio.wait_for`` timeout (0.8 s) gives up, and
then find the items at once.

Culprit: ``publish_batch`` (the ``notify()`` line).
Innocents: ``watch_shutdown``, which waits on an ``asyncio.Event`` with a
periodic 0.1 s timeout (a timeout that is part of its design) until
``main`` sets the event.

Run it: ``aiotrace run examples/faults/lost_wakeup.py`` then
``aiotrace stats lost_wakeup.trace``.
"""

from __future__ import annotations

import asyncio
import contextlib

items: list[int] = []


async def take_item(cond: asyncio.Condition) -> int:
    async with cond:
        # Gives up after 0.8 s; the item may have been there all along.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cond.wait_for(lambda: bool(items)), 0.8)
        return items.pop() if items else -1


async def publish_batch(cond: asyncio.Condition) -> None:
    await asyncio.sleep(0.1)
    async with cond:
        items.extend([1, 2, 3])
        cond.notify()  # fault: wakes one waiter of three


async def watch_shutdown(stop: asyncio.Event) -> int:
    ticks = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            ticks += 1  # a periodic check, by design
    return ticks


async def main() -> None:
    cond = asyncio.Condition()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_shutdown(stop))
    await asyncio.gather(*(take_item(cond) for _ in range(3)), publish_batch(cond))
    stop.set()
    await watcher


if __name__ == "__main__":
    asyncio.run(main())
