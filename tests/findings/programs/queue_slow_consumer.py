"""Queue backpressure: two ``producer`` coroutines fill a bounded queue
that ``slow_consumer`` drains slowly; ``idle_consumer`` waits in ``get`` on
an empty queue all along (innocent)."""

import asyncio


async def producer(q: asyncio.Queue[int]) -> None:
    for i in range(15):
        await q.put(i)  # mark: put


async def slow_consumer(q: asyncio.Queue[int]) -> None:
    while True:
        await q.get()  # mark: get
        await asyncio.sleep(0.02)  # mark: work
        q.task_done()


async def idle_consumer(q: asyncio.Queue[int]) -> None:
    while True:
        await q.get()
        q.task_done()


async def main() -> None:
    q: asyncio.Queue[int] = asyncio.Queue(2)
    empty: asyncio.Queue[int] = asyncio.Queue()
    idle = asyncio.create_task(idle_consumer(empty))
    slow = asyncio.create_task(slow_consumer(q))
    await asyncio.gather(producer(q), producer(q))
    await q.join()
    idle.cancel()
    slow.cancel()
    await asyncio.gather(idle, slow, return_exceptions=True)


asyncio.run(main())
