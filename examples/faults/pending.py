"""Tasks left pending: started, never awaited, waiting on what never comes.

Fault: ``main`` starts ``wait_for_ready`` (waits on an ``asyncio.Event``
nobody sets) and ``await_reply`` (awaits a future nobody resolves), keeps
the tasks, and never awaits them. They are still waiting when ``main``
returns, and ``asyncio.run`` cancels them at shutdown: their work never
happened.

Culprits: ``wait_for_ready`` and ``await_reply``.
Innocents: ``load_settings`` and ``send_ping``, tasks that finish, and
``heartbeat``, a background task that ``main`` itself cancels and
awaits before it returns (a clean stop).

Run it: ``aiotrace run examples/faults/pending.py`` then
``aiotrace stats pending.trace``.
"""

from __future__ import annotations

import asyncio
import contextlib

background: set[asyncio.Task[object]] = set()


async def wait_for_ready(ready: asyncio.Event) -> str:
    await ready.wait()  # fault: nobody ever sets ``ready``
    return "ready"


async def await_reply(reply: asyncio.Future[str]) -> str:
    return await reply  # fault: nobody ever resolves ``reply``


async def load_settings() -> dict[str, int]:
    await asyncio.sleep(0.05)
    return {"workers": 4}


async def send_ping(n: int) -> int:
    for _ in range(10):
        await asyncio.sleep(0.03)
    return n


async def heartbeat() -> None:
    while True:
        await asyncio.sleep(0.05)


async def main() -> None:
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    reply: asyncio.Future[str] = loop.create_future()
    background.add(asyncio.create_task(wait_for_ready(ready)))
    background.add(asyncio.create_task(await_reply(reply)))
    beat = asyncio.create_task(heartbeat())
    settings = await load_settings()
    await asyncio.gather(*(send_ping(i) for i in range(settings["workers"])))
    await asyncio.sleep(0.5)
    beat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beat


if __name__ == "__main__":
    asyncio.run(main())
