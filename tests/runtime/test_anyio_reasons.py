"""anyio programs read the same on asyncio as on trio: a task waiting on an
anyio Lock, Semaphore, Condition or CapacityLimiter is waiting on a "lock",
on an Event an "event", on a memory stream a "queue", in a task group
"gather"; and each task is labelled after the function it runs, not after
anyio's wrapper coroutine."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio  # imported before tracing starts, so that trio runs are traced
from programs import Trace, read_trace

import aiotrace

uvloop = pytest.importorskip("uvloop")

EXPECTED = {
    "lock_waiter": "lock",
    "semaphore_waiter": "lock",
    "condition_waiter": "lock",
    "limiter_waiter": "lock",
    "event_waiter": "event",
    "stream_receiver": "queue",
    "sleeper": "sleep",
}
"""What each task of the program blocks on, once."""

GIVEN_NAMES = {"sleeper": "named sleeper"}
"""The names the program gives its tasks."""


async def lock_waiter(lock: anyio.Lock) -> None:
    async with lock:
        pass


async def semaphore_waiter(sem: anyio.Semaphore) -> None:
    async with sem:
        pass


async def condition_waiter(cond: anyio.Condition) -> None:
    async with cond:
        await cond.wait()


async def limiter_waiter(limiter: anyio.CapacityLimiter) -> None:
    async with limiter:
        pass


async def event_waiter(event: anyio.Event) -> None:
    await event.wait()


async def stream_receiver(receive: Any) -> None:
    assert await receive.receive() == "item"


async def sleeper() -> None:
    await anyio.sleep(0.001)


async def program() -> None:
    """Holds each primitive, starts one waiter per primitive, waits until
    all of them are blocked, then lets each go."""
    lock, sem = anyio.Lock(), anyio.Semaphore(1)
    cond, limiter = anyio.Condition(), anyio.CapacityLimiter(1)
    event = anyio.Event()
    send, receive = anyio.create_memory_object_stream[str](1)
    async with send, receive, anyio.create_task_group() as tg:
        await lock.acquire()
        await sem.acquire()
        await limiter.acquire()
        tg.start_soon(lock_waiter, lock)
        tg.start_soon(semaphore_waiter, sem)
        tg.start_soon(condition_waiter, cond)
        tg.start_soon(limiter_waiter, limiter)
        tg.start_soon(event_waiter, event)
        tg.start_soon(stream_receiver, receive)
        tg.start_soon(sleeper, name="named sleeper")
        await anyio.wait_all_tasks_blocked()
        lock.release()
        sem.release()
        limiter.release()
        event.set()
        async with cond:
            cond.notify_all()
        await send.send("item")


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(
        ("asyncio", {"loop_factory": _eager_loop}),
        id="asyncio+eager",
        marks=pytest.mark.skipif(
            sys.version_info < (3, 12), reason="eager tasks are new in 3.12"
        ),
    ),
    pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


def _traced(tmp_path: Path, backend: tuple[str, dict[str, Any]]) -> Trace:
    name, options = backend
    path = tmp_path / "anyio.trace"
    with aiotrace.tracing(path):
        anyio.run(program, backend=name, backend_options=options)
    trace = read_trace(path)
    trace.check()
    return trace


def _task(trace: Trace, function: str) -> int:
    """The coroutine running ``function``: labelled with its qualified name
    (then its name, if given) on asyncio, with the task's name on trio
    (anyio's default is ``module.function``)."""
    names = (function, f"{__name__}.{function}")
    found = [
        cid
        for cid, label in trace.labels.items()
        if label.split(" ")[0] in names or label == GIVEN_NAMES.get(function)
    ]
    assert len(found) == 1, (function, sorted(trace.labels.values()))
    return found[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_waits_are_classified(
    tmp_path: Path, backend: tuple[str, dict[str, Any]]
) -> None:
    """Each waiter blocks once, for the reason its primitive names, on every
    backend; the task group's host waits on "gather"."""
    trace = _traced(tmp_path, backend)
    got = {function: trace.blocks(_task(trace, function)) for function in EXPECTED}
    assert got == {function: [reason] for function, reason in EXPECTED.items()}
    assert "gather" in trace.blocks(_task(trace, "program"))


@pytest.mark.parametrize(
    "backend",
    [b for b in BACKENDS if b.id != "trio"],  # type: ignore[attr-defined]
)
def test_anyio_tasks_labelled_by_their_function(
    tmp_path: Path, backend: tuple[str, dict[str, Any]]
) -> None:
    """On asyncio, an anyio task is labelled with the qualified name of the
    function it runs (not "TaskHandle._run_coro"), followed by its name only
    when the program gave one."""
    trace = _traced(tmp_path, backend)
    labels = set(trace.labels.values())
    assert {*EXPECTED.keys() - {"sleeper"}, "sleeper named sleeper"} <= labels
    assert not [label for label in labels if "_run_coro" in label], labels
    assert trio.__name__ == "trio"
