"""Real traced programs for the export tests, and what their traces hold."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import aiotrace
from aiotrace import reader
from aiotrace.reader import NO_COROUTINE, CoroState, Event, EventKind, ResourceKind

STALL_SECONDS = 0.25


def _grind(n: int) -> int:
    with aiotrace.region("grind"):
        time.sleep(0.002)
        aiotrace.log("grinder", f"ground {n}")
    return n


async def _worker(n: int, queue: asyncio.Queue[int], lock: asyncio.Lock) -> None:
    async with aiotrace.new_task("job"):
        aiotrace.log("worker", f"start {n}")
        async with lock, aiotrace.region("locked"):
            await asyncio.sleep(0.001)
        await asyncio.to_thread(_grind, n)
        await queue.put(n)


async def _chain(depth: int) -> int:
    if depth == 0:
        return 0
    return 1 + await asyncio.create_task(_chain(depth - 1))


async def _main(stall: bool) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    lock = asyncio.Lock()
    async with asyncio.TaskGroup() as tg:
        for n in range(4):
            tg.create_task(_worker(n, queue, lock))
        tg.create_task(_chain(4))
    for _ in range(4):
        await queue.get()
    if stall:
        async with aiotrace.new_task("stall"):
            time.sleep(STALL_SECONDS)  # blocks the loop: a stall with samples
    await asyncio.sleep(0)


def run_rich_program(path: Path) -> None:
    """Traces two loops in two threads with queues, locks, executor work,
    create_task chains, user tasks, regions, logs, metrics and one stall."""
    with aiotrace.tracing(path):
        second = threading.Thread(
            target=lambda: asyncio.run(_main(stall=False)), name="second-loop"
        )
        second.start()
        asyncio.run(_main(stall=True))
        second.join()


def counts(path: Path) -> Counter[str]:
    """Counts what an export should show, straight from the reader's events."""
    c: Counter[str] = Counter()
    events: list[Event] = reader.read_events(path)
    alive: set[int] = set()
    for ev in events:
        kind = ev.kind
        if kind is EventKind.STATE_TRANSITION:
            st = ev.state_transition
            if st.resource.kind is ResourceKind.COROUTINE:
                cid = st.resource.id
                c["coroutine transitions"] += 1
                if st.old in (CoroState.NOT_EXIST, CoroState.UNDETERMINED):
                    c["coroutines"] += 1
                if (
                    st.old is CoroState.NOT_EXIST
                    and ev.coroutine != NO_COROUTINE
                    and ev.coroutine in alive
                ):
                    c["create flows"] += 1
                if (
                    st.old is CoroState.WAITING
                    and st.reason == "coroutine"
                    and ev.coroutine in alive
                    and ev.coroutine != cid
                ):
                    c["wake flows"] += 1
                if st.new is CoroState.NOT_EXIST:
                    alive.discard(cid)
                else:
                    alive.add(cid)
            elif st.resource.kind is ResourceKind.LOOP:
                c["loops seen"] += 0
        elif kind is EventKind.TASK_BEGIN:
            c["tasks"] += 1
        elif kind is EventKind.REGION_BEGIN:
            c["regions"] += 1
        elif kind is EventKind.LOG:
            c["logs"] += 1
        elif kind is EventKind.METRIC:
            c["metrics"] += 1
        elif kind is EventKind.STACK_SAMPLE:
            c["samples"] += 1
        elif kind is EventKind.RANGE_BEGIN:
            c[f"range {ev.range.name}"] += 1
    c["loops"] = len(
        {
            ev.state_transition.resource.id
            for ev in events
            if ev.kind is EventKind.STATE_TRANSITION
            and ev.state_transition.resource.kind is ResourceKind.LOOP
        }
    )
    c["task types"] = len(
        {ev.task.type for ev in events if ev.kind is EventKind.TASK_BEGIN}
    )
    return c


def payload_byte_near(data: bytearray, at: int) -> int:
    """The offset of a payload byte of the frame holding byte ``at`` (a
    flipped payload byte is a CRC mismatch; a flipped frame head is not)."""
    # docs/format.md: a 10-byte header, then frames of
    # kind:u8 length:u32le crc32:u32le payload[length].
    pos = 10
    while True:
        length = int.from_bytes(data[pos + 1 : pos + 5], "little")
        end = pos + 9 + length
        if end > at and length:
            return pos + 9 + length // 2
        pos = end
