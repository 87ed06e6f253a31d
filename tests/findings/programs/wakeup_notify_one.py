"""Lost wakeup: ``announcer`` calls ``notify()`` (not ``notify_all()``) on
a Condition three ``listener`` coroutines wait on, so two run into their
timeout; ``ticker`` waits on an Event with a periodic timeout, and
``setter`` sets it once (innocent: set() wakes every waiter)."""

import asyncio
import contextlib


async def listener(cond: asyncio.Condition) -> None:
    async with cond:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cond.wait(), 0.4)  # mark: wait


async def announcer(cond: asyncio.Condition) -> None:
    await asyncio.sleep(0.05)
    async with cond:
        cond.notify()  # mark: notify


async def ticker(ev: asyncio.Event) -> None:
    for _ in range(5):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), 0.08)  # mark: tick


async def setter(ev: asyncio.Event) -> None:
    await asyncio.sleep(0.2)
    ev.set()


async def main() -> None:
    cond, ev = asyncio.Condition(), asyncio.Event()
    await asyncio.gather(
        *(listener(cond) for _ in range(3)), announcer(cond), ticker(ev), setter(ev)
    )


asyncio.run(main())
