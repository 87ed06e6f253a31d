"""Pending work: ``orphan`` waits on an Event nobody sets and ``lingering``
sleeps far past the end; asyncio.run cancels both at shutdown. ``finisher``
tasks end on their own (innocent)."""

import asyncio


async def orphan(ev: asyncio.Event) -> None:
    await ev.wait()  # mark: orphan


async def lingering() -> None:
    await asyncio.sleep(100)  # mark: lingering


async def finisher() -> None:
    await asyncio.sleep(0.05)


async def main() -> None:
    ev = asyncio.Event()
    keep = [asyncio.create_task(orphan(ev)), asyncio.create_task(lingering())]
    await asyncio.gather(finisher(), finisher())
    await asyncio.sleep(0.3)
    del keep


asyncio.run(main())
