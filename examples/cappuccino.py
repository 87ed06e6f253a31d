"""Go's cappuccino order (runtime/trace's example), as asyncio code.

One user task, ``makeCappuccino``, spans four coroutines and a thread: milk
is steamed and espresso extracted in their own coroutines, the beans are
ground in a worker thread, and a third coroutine mixes the drink and ends
the task, as Go's example ends it from a third goroutine.

Run it with ``python examples/cappuccino.py [TRACE]`` (default
``cappuccino.trace``), then ``aiotrace dump TRACE``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable

import aiotrace


def grind_beans() -> None:
    """Runs in a worker thread; the task follows it through to_thread."""
    with aiotrace.region("grindBeans"):
        time.sleep(0.002)


@aiotrace.region("steamMilk")
async def steam_milk() -> None:
    """Steams the milk."""
    await asyncio.sleep(0.003)


async def extract_coffee() -> None:
    """Grinds (in a thread), then extracts the espresso."""
    await asyncio.to_thread(grind_beans)
    async with aiotrace.region("extractCoffee"):
        await asyncio.sleep(0.002)


async def mix(
    task: aiotrace.Task, milk: asyncio.Event, espresso: asyncio.Event
) -> None:
    """Waits for milk and espresso, mixes them, and ends the order's task."""
    try:
        await espresso.wait()
        await milk.wait()
        async with aiotrace.region("mixMilkCoffee"):
            await asyncio.sleep(0.001)
    finally:
        task.end()  # when the mix is done, the order is complete


async def then_set(step: Awaitable[None], done: asyncio.Event) -> None:
    """Awaits ``step``, then signals ``done`` (Go's channel send)."""
    await step
    done.set()


async def make_cappuccino(order_id: str) -> aiotrace.Task:
    """Makes one cappuccino; returns its task."""
    task = aiotrace.new_task("makeCappuccino")
    aiotrace.log("orderID", order_id)
    milk, espresso = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(then_set(steam_milk(), milk))
        tg.create_task(then_set(extract_coffee(), espresso))
        tg.create_task(mix(task, milk, espresso))
    return task


async def main() -> list[aiotrace.Task]:
    """Serves two orders at once."""
    return list(await asyncio.gather(make_cappuccino("1"), make_cappuccino("2")))


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "cappuccino.trace"
    with aiotrace.tracing(path):
        tasks = asyncio.run(main())
    print(f"traced {len(tasks)} orders (tasks {[t.id for t in tasks]}) into {path}")
    print(f"see it with: aiotrace dump {path}")
