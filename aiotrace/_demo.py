"""The built-in program that ``aiotrace demo`` traces: a small coffee bar.

Each order is a user task (``aiotrace.new_task("order")``). Its barista
grinds the beans in a worker thread (``asyncio.to_thread``; the task and
its ``grindBeans`` region follow into the thread), then pulls the shot and
steams the milk in two child coroutines at once: the order's task follows
them too. There is one espresso machine, an ``asyncio.Lock``, so baristas
queue for it (coroutines blocked with reason ``lock``). Finished drinks go
on the counter, an ``asyncio.Queue`` the waiter takes them from (the waiter
blocks with reason ``queue``). For the last drink the waiter prints a
receipt on a printer that blocks the event loop for 150 ms: the one loop
stall of the trace, sampled in ``_blocking_receipt_printer``.

It runs in a quarter of a second, and with tracing off it is an ordinary
asyncio program.
"""

from __future__ import annotations

import asyncio
import threading
import time

from ._annotate import log, logf
from ._region import region
from ._task import new_task

RECEIPT_PRINTER_SECONDS = 0.15
"""How long the receipt printer blocks the loop: over the 0.1 s stall threshold."""


def _grind(order: int) -> None:
    """Grinds one order's beans; runs in a worker thread."""
    with region("grindBeans"):
        time.sleep(0.005)
        logf("grinder", "order %d: beans ground", order)


async def _pull_shot(machine: asyncio.Lock) -> None:
    # One espresso machine: the other baristas wait for it (reason 'lock').
    async with machine, region("pullShot"):
        await asyncio.sleep(0.01)


async def _steam_milk(order: int) -> None:
    async with region("steamMilk"):
        await asyncio.sleep(0.004 * order)


async def _barista(
    order: int, machine: asyncio.Lock, counter: asyncio.Queue[int]
) -> None:
    async with new_task("order"):
        log("barista", f"order {order}: start")
        await asyncio.to_thread(_grind, order)
        async with asyncio.TaskGroup() as tg:  # shot and milk at once
            tg.create_task(_pull_shot(machine))
            tg.create_task(_steam_milk(order))
        await counter.put(order)
        log("barista", f"order {order}: on the counter")


PRINTER_JAMS = 20
"""Most times the printer blocks again while the stall has too few samples."""

SAMPLES_TO_SHOW = 3
"""Stack samples of the stall the demo waits for (the watchdog takes one
every 2 ms once a step is a stall: some 25 in the printer's 50 ms past the
threshold, on a machine that is not overloaded)."""


def _blocking_receipt_printer(order: int) -> None:
    """Prints a receipt, badly: a blocking call on the event loop's thread.

    The demo is there to show a sampled stall: on a machine so busy that the
    watchdog thread took fewer than SAMPLES_TO_SHOW stack samples of it, the
    printer jams and blocks again (up to PRINTER_JAMS times)."""
    for _ in range(PRINTER_JAMS):
        time.sleep(RECEIPT_PRINTER_SECONDS)  # the planted stall: no await, no thread
        if not _stall_unsampled():
            break
    logf("cafe", "order %d: receipt printed", order)


def _stall_unsampled() -> bool:
    """Whether the stall watchdog of the running trace has yet to take
    SAMPLES_TO_SHOW stack samples of this thread's stall (False when nothing
    watches)."""
    from . import _session
    from ._loop._state import NEVER

    session = _session.current()
    runtime = None if session is None else session.runtime
    if runtime is None or runtime._watchdog is None or runtime.hooks.stall_ns == NEVER:
        return False
    watchdog = runtime._watchdog
    # The watchdog counts a sample just before taking it: one counted past
    # the n-th means the n-th is in the trace.
    return int(watchdog._samples.get(threading.get_ident(), 0)) <= SAMPLES_TO_SHOW


async def _waiter(counter: asyncio.Queue[int], orders: int) -> list[int]:
    served = []
    for n in range(orders):
        order = await counter.get()  # waits for the next drink
        async with new_task("serve"):
            if n == orders - 1:
                _blocking_receipt_printer(order)
            await asyncio.sleep(0.001)
            served.append(order)
    return served


async def main(orders: int = 4) -> None:
    """Serves ``orders`` coffees concurrently, as described above."""
    machine = asyncio.Lock()
    counter: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    async with asyncio.TaskGroup() as tg:
        waiter = tg.create_task(_waiter(counter, orders))
        for order in range(1, orders + 1):
            tg.create_task(_barista(order, machine, counter))
    served = waiter.result()
    logf("cafe", "served %d orders: %s", len(served), served)
