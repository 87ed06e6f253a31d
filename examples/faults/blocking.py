"""A blocking call hidden in a coroutine: each call is short, together they add up.

Fault: ``export_report`` calls ``time.sleep(0.05)`` ten times (a blocking
call such as a synchronous database driver or ``requests.get``). Each
call holds the event loop for 50 ms, under the 0.1 s stall threshold, so
no single step is a stall; together they hold it for half a second, and
every other coroutine waits.

Culprit: ``export_report`` (the ``time.sleep`` line).
Innocents: ``poll_status`` and ``refresh_quotes``, which await short
sleeps and do a little work in each step.

Run it: ``aiotrace run examples/faults/blocking.py`` then
``aiotrace stats blocking.trace``.
"""

from __future__ import annotations

import asyncio
import time


async def export_report() -> int:
    rows = 0
    for _ in range(10):
        time.sleep(0.05)  # fault: blocks the loop (a sync driver call)
        rows += 100
        await asyncio.sleep(0.01)
    return rows


async def poll_status(n: int) -> int:
    seen = 0
    for i in range(60):
        seen += sum(range(200)) + i
        await asyncio.sleep(0.01)
    return seen + n


async def refresh_quotes() -> list[float]:
    quotes: list[float] = []
    for i in range(40):
        quotes.append(i * 1.5)
        await asyncio.sleep(0.015)
    return quotes


async def main() -> None:
    await asyncio.gather(
        export_report(), poll_status(1), poll_status(2), refresh_quotes()
    )


if __name__ == "__main__":
    asyncio.run(main())
