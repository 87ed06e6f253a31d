"""A traced program of known structure, for the analysis tests.

Each coroutine function does one kind of thing, so each group's figures
have a known lower bound: ``sleeper`` sleeps 50 ms four times, ``worker``
serves ``JOBS`` user tasks of type "job" (each a region "handle" around a
1 ms sleep) and waits on a queue, ``locker`` coroutines contend for a lock
held ``LOCK_HOLD`` s at a time, ``thinker`` computes for ``THINK`` s in
three steps, ``offload`` waits for ``asyncio.to_thread``, and ``staller``
holds the loop with ``time.sleep(STALL)`` inside ``blocking()``: a stall.
A task of type "orphan" begins and never ends.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import aiotrace

SLEEPS = 4
SLEEP = 0.05
JOBS = 10
LOCKERS = 3
LOCK_HOLD = 0.03
THINK = 0.02
THINK_STEPS = 3
OFFLOAD = 0.05
STALL = 0.3
SAMPLED = 8  # watchdog samples a stall gets before it ends


async def sleeper() -> None:
    for _ in range(SLEEPS):
        await asyncio.sleep(SLEEP)


async def worker(q: asyncio.Queue[int | None]) -> None:
    while True:
        item = await q.get()
        if item is None:
            return
        with aiotrace.new_task("job"), aiotrace.region("handle"):
            await asyncio.sleep(0.001)


async def locker(lock: asyncio.Lock) -> None:
    async with lock:
        await asyncio.sleep(LOCK_HOLD)


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def thinker() -> None:
    for _ in range(THINK_STEPS):
        spin(THINK / THINK_STEPS)
        await asyncio.sleep(0)


async def offload() -> None:
    await asyncio.to_thread(time.sleep, OFFLOAD)


def _samples_taken() -> int:
    """Samples the watchdog has taken of this thread's stalls (internal)."""
    session = aiotrace._session.current()
    runtime = session.runtime if session is not None else None
    watchdog = runtime._watchdog if runtime is not None else None
    if watchdog is None:
        return 0
    return int(watchdog._samples.get(threading.get_ident(), 0))


def blocking() -> None:
    """Holds the thread for STALL, and on until the watchdog has seen the
    stall and sampled it SAMPLED times: a loaded machine can starve the
    watchdog's thread, and no test should depend on it being scheduled in
    time (capped at a minute, for a watchdog that never comes)."""
    before = _samples_taken()  # a count left by an earlier stall, if any
    start = time.monotonic()
    time.sleep(STALL)
    while time.monotonic() - start < 60:
        taken = _samples_taken()
        if taken >= SAMPLED and taken != before:
            break
        time.sleep(0.005)


async def staller() -> None:
    await asyncio.sleep(0.01)
    blocking()


async def main() -> None:
    aiotrace.new_task("orphan")  # never ended
    q: asyncio.Queue[int | None] = asyncio.Queue()
    w = asyncio.create_task(worker(q), name="the-worker")
    lock = asyncio.Lock()
    others = [
        asyncio.create_task(c)
        for c in (
            sleeper(),
            thinker(),
            offload(),
            *(locker(lock) for _ in range(LOCKERS)),
        )
    ]
    for i in range(JOBS):
        await q.put(i)
        await asyncio.sleep(0.002)
    await q.put(None)
    await asyncio.gather(*others)
    await asyncio.create_task(staller())
    await w


def run_asyncio(eager: bool = False) -> dict[str, Any]:
    """Runs main() on asyncio; returns facts the trace must agree with."""

    async def entry() -> None:
        if eager:
            asyncio.get_running_loop().set_task_factory(
                asyncio.eager_task_factory  # type: ignore[attr-defined]
            )
        await main()

    asyncio.run(entry())
    return {"thread": threading.get_native_id()}


def trace(path: str, eager: bool = False) -> dict[str, Any]:
    """Traces the program into ``path``."""
    if eager and sys.version_info < (3, 12):
        raise RuntimeError("eager tasks need Python 3.12")
    # A threshold well under the planted stall and well over what a loaded
    # machine makes of an ordinary step.
    with aiotrace.tracing(path, stall_threshold=STALL / 2):
        return run_asyncio(eager)


# --- the same sleeper and staller on trio and uvloop ------------------------


async def trio_sleeper() -> None:
    import trio

    for _ in range(SLEEPS):
        await trio.sleep(SLEEP)


async def trio_staller() -> None:
    import trio

    await trio.sleep(0.01)
    blocking()


async def trio_main() -> None:
    import trio

    async with trio.open_nursery() as n:
        n.start_soon(trio_sleeper)
        n.start_soon(trio_staller)


async def uvloop_main() -> None:
    await asyncio.gather(asyncio.create_task(sleeper()), asyncio.create_task(staller()))


def trace_flavour(path: str, flavour: str) -> None:
    """Traces a sleeper and a staller on ``flavour`` ("trio" or "uvloop")."""
    if flavour == "trio":
        import trio

        with aiotrace.tracing(path):
            trio.run(trio_main)
    else:
        import uvloop

        with aiotrace.tracing(path):
            uvloop.run(uvloop_main())
