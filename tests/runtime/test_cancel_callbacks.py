"""A waiting task cancelled by a plain loop callback: ``task.cancel`` run by
``call_later``, a signal handler or ``call_soon_threadsafe`` is not a step of
the task; the task goes WAITING -> RUNNABLE when its future is cancelled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
from programs import FLAVOURS, Trace, read_trace, trace_program

import aiotrace
from aiotrace.reader import CoroState


async def _sleeper(started: asyncio.Event) -> None:
    started.set()
    await asyncio.Event().wait()  # never set: only a cancel ends this wait


def _check_cancelled_wait(trace: Trace) -> None:
    """The sleeper blocked on its event, was woken by the cancel, ran once
    more (raising CancelledError inside) and ended cancelled."""
    cid = trace.one("_sleeper")
    waits = trace.waits(cid)
    assert [(w.reason, w.waker) for w in waits] == [("event", "cancel")]
    assert trace.end(cid) == "cancelled"
    transitions = [
        (ev.state_transition.old, ev.state_transition.new)
        for ev in trace.coro_transitions(cid)
    ]
    assert transitions == [
        (CoroState.NOT_EXIST, CoroState.RUNNABLE),
        (CoroState.RUNNABLE, CoroState.RUNNING),
        (CoroState.RUNNING, CoroState.WAITING),
        (CoroState.WAITING, CoroState.RUNNABLE),
        (CoroState.RUNNABLE, CoroState.RUNNING),
        (CoroState.RUNNING, CoroState.NOT_EXIST),
    ]


async def _yielder() -> None:
    await asyncio.sleep(0)


async def _run_until_cancelled(task: asyncio.Task[None]) -> None:
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cancel_from_call_later(trace_path: Path, flavour: str) -> None:
    """``loop.call_later(t, task.cancel)`` cancels a waiting task: the trace
    validates and shows the wait woken by "cancel", not a step of the task."""

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(_sleeper(started))
        await started.wait()
        asyncio.get_running_loop().call_later(0.001, task.cancel)
        await _run_until_cancelled(task)

    _, trace = trace_program(trace_path, main, flavour)
    _check_cancelled_wait(trace)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cancel_from_call_soon(trace_path: Path, flavour: str) -> None:
    """``loop.call_soon(task.cancel)`` from the loop's own thread: the same."""

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(_sleeper(started))
        await started.wait()
        asyncio.get_running_loop().call_soon(task.cancel)
        await _run_until_cancelled(task)

    _, trace = trace_program(trace_path, main, flavour)
    _check_cancelled_wait(trace)


@pytest.mark.skipif(sys.platform == "win32", reason="add_signal_handler is Unix-only")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cancel_from_signal_handler(trace_path: Path, flavour: str) -> None:
    """``loop.add_signal_handler(SIGUSR1, task.cancel)``, then the signal:
    the handler runs as a loop callback and the trace validates."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        task = asyncio.create_task(_sleeper(started))
        await started.wait()
        loop.add_signal_handler(signal.SIGUSR1, task.cancel)
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            await _run_until_cancelled(task)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    _, trace = trace_program(trace_path, main, flavour)
    _check_cancelled_wait(trace)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cancel_from_another_thread(trace_path: Path, flavour: str) -> None:
    """``loop.call_soon_threadsafe(task.cancel)`` from another thread, once
    the task waits: the trace validates and the wait ends by "cancel"."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        task = asyncio.create_task(_sleeper(started))
        await started.wait()
        thread = threading.Thread(target=loop.call_soon_threadsafe, args=(task.cancel,))
        thread.start()
        try:
            await _run_until_cancelled(task)
        finally:
            thread.join()

    _, trace = trace_program(trace_path, main, flavour)
    _check_cancelled_wait(trace)


def test_cancel_of_runnable_task_from_callback(trace_path: Path) -> None:
    """A task cancelled by a callback while it is RUNNABLE (scheduled, not
    waiting) records no wakeup: it runs once and ends cancelled."""

    async def main() -> None:
        task = asyncio.create_task(_yielder())
        asyncio.get_running_loop().call_soon(task.cancel)
        await _run_until_cancelled(task)

    _, trace = trace_program(trace_path, main)
    cid = trace.one("_yielder")
    assert trace.waits(cid) == []
    assert trace.end(cid) == "cancelled"


def test_cancel_from_call_later_python_tasks(trace_path: Path) -> None:
    """The same with asyncio's pure-Python tasks, whose step and wakeup are
    bound methods (the C task's are not): ``task.cancel`` is still a plain
    callback."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(
            lambda loop, coro, **kw: asyncio.tasks._PyTask(coro, loop=loop, **kw)  # type: ignore[attr-defined]
        )
        started = asyncio.Event()
        task = asyncio.create_task(_sleeper(started))
        assert type(task) is asyncio.tasks._PyTask  # type: ignore[attr-defined]
        await started.wait()
        loop.call_later(0.001, task.cancel)
        await _run_until_cancelled(task)

    _, trace = trace_program(trace_path, main)
    _check_cancelled_wait(trace)


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is Unix-only")
def test_cancel_from_callbacks_on_uvloop(trace_path: Path) -> None:
    """On uvloop, a waiting task cancelled by call_later, by another thread
    and by a signal handler: each wait ends by "cancel" and validates."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for how in ("call_later", "thread", "signal"):
            started = asyncio.Event()
            task = asyncio.create_task(_sleeper(started))
            await started.wait()
            if how == "call_later":
                loop.call_later(0.001, task.cancel)
            elif how == "thread":
                thread = threading.Thread(
                    target=loop.call_soon_threadsafe, args=(task.cancel,)
                )
                thread.start()
                thread.join()
            else:
                loop.add_signal_handler(signal.SIGUSR1, task.cancel)
                os.kill(os.getpid(), signal.SIGUSR1)
            try:
                await _run_until_cancelled(task)
            finally:
                loop.remove_signal_handler(signal.SIGUSR1)

    with aiotrace.tracing(trace_path):
        uvloop.run(main())
    trace = read_trace(trace_path)
    trace.check()
    cids = trace.coros("_sleeper")
    assert len(cids) == 3
    for cid in cids:
        assert [(w.reason, w.waker) for w in trace.waits(cid)] == [("event", "cancel")]
        assert trace.end(cid) == "cancelled"
