"""Queue backpressure: a slow consumer holds up every producer.

Fault: ``slow_consumer`` takes 20 ms per item from a bounded queue
(``maxsize=4``). The ``produce_jobs`` coroutines are fast, so the queue
fills and they spend most of their time blocked in ``Queue.put``.

Culprit: ``slow_consumer``.
Innocents: ``idle_consumer``, which waits in ``Queue.get`` on another,
nearly empty queue for the whole run (idle, not slow), and
``log_events``, which feeds that queue once at the end.

Run it: ``aiotrace run examples/faults/backpressure.py`` then
``aiotrace stats backpressure.trace``.
"""

from __future__ import annotations

import asyncio


async def produce_jobs(jobs: asyncio.Queue[int | None], base: int) -> None:
    for i in range(20):
        await jobs.put(base + i)  # blocks while the queue is full


async def slow_consumer(jobs: asyncio.Queue[int | None]) -> int:
    done = 0
    while (item := await jobs.get()) is not None:
        await asyncio.sleep(0.02)  # fault: 20 ms per item, too slow
        done += item
    return done


async def idle_consumer(alerts: asyncio.Queue[str | None]) -> list[str]:
    got: list[str] = []
    while (alert := await alerts.get()) is not None:
        got.append(alert)
    return got


async def log_events(alerts: asyncio.Queue[str | None]) -> None:
    await alerts.put("run finished")
    await alerts.put(None)


async def main() -> None:
    jobs: asyncio.Queue[int | None] = asyncio.Queue(maxsize=4)
    alerts: asyncio.Queue[str | None] = asyncio.Queue()
    consumer = asyncio.create_task(slow_consumer(jobs))
    idle = asyncio.create_task(idle_consumer(alerts))
    await asyncio.gather(*(produce_jobs(jobs, 100 * p) for p in range(3)))
    await jobs.put(None)
    await consumer
    await log_events(alerts)
    await idle


if __name__ == "__main__":
    asyncio.run(main())
