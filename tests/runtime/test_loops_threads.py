"""Event loops and threads: loop states, several loops at once, tracing that
starts while loops and tasks already run, and wakeups across threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
import weakref
from pathlib import Path

import pytest
from programs import Trace, Wait, read_trace, run, trace_program

import aiotrace
from aiotrace import reader
from aiotrace.reader import NO_COROUTINE, NO_LOOP, CoroState, LoopState

NO = NO_COROUTINE


def _states(trace: Trace, lid: int) -> list[tuple[LoopState, LoopState]]:
    return [
        (ev.state_transition.old, ev.state_transition.new)  # type: ignore[misc]
        for ev in trace.loop_transitions(lid)
    ]


def test_a_loop_runs_goes_idle_while_waiting_and_is_destroyed(
    trace_path: Path, flavour: str
) -> None:
    """``asyncio.run``'s loop is first seen UNDETERMINED->RUNNING with a label
    naming its class and thread, goes RUNNING->IDLE and back around the
    selector wait while its only coroutine sleeps, and ends NOT_EXIST when
    closed. Every coroutine event after the loop is first seen carries its
    id in ev.loop."""

    async def main() -> str:
        await asyncio.sleep(0.01)
        return "done"

    result, trace = trace_program(trace_path, main, flavour)
    assert result == "done"
    loops = trace.loops()
    assert list(loops.values()) == [threading.get_native_id()]
    (lid,) = loops
    name = threading.current_thread().name
    assert trace.loop_label(lid) == f"_UnixSelectorEventLoop in {name}"
    states = _states(trace, lid)
    assert states[0] == (LoopState.UNDETERMINED, LoopState.RUNNING)
    assert states[-1][1] is LoopState.NOT_EXIST
    assert (LoopState.RUNNING, LoopState.IDLE) in states
    assert (LoopState.IDLE, LoopState.RUNNING) in states

    # While main sleeps, the loop idles in its selector.
    main_id = trace.one(main.__qualname__)
    block = next(
        ev
        for ev in trace.coro_transitions(main_id)
        if ev.state_transition.new is CoroState.WAITING
    )
    wake = next(
        ev
        for ev in trace.coro_transitions(main_id)
        if ev.state_transition.old is CoroState.WAITING
    )
    idle = [
        ev.time
        for ev in trace.loop_transitions(lid)
        if ev.state_transition.new is LoopState.IDLE
    ]
    assert any(block.time <= t <= wake.time for t in idle)

    first = trace.loop_transitions(lid)[0].time
    for ev in trace.coro_transitions():
        if ev.time > first:
            assert ev.loop == lid, ev


def test_a_loop_run_twice_keeps_its_id_and_runs_again(trace_path: Path) -> None:
    """A loop run by two ``run_until_complete`` calls is one loop: one id,
    UNDETERMINED->RUNNING the first time, RUNNING->IDLE when each run
    returns, IDLE->RUNNING the second time, NOT_EXIST at close."""

    async def step(tag: str) -> str:
        await asyncio.sleep(0.001)
        return tag

    loop = asyncio.new_event_loop()
    try:
        with aiotrace.tracing(trace_path):
            got = [loop.run_until_complete(step(t)) for t in ("one", "two")]
            loop.close()
    finally:
        loop.close()
    assert got == ["one", "two"]
    trace = read_trace(trace_path)
    trace.check()
    (lid,) = trace.loops()
    states = _states(trace, lid)
    assert states[0] == (LoopState.UNDETERMINED, LoopState.RUNNING)
    assert states[-1] == (LoopState.IDLE, LoopState.NOT_EXIST)
    assert [s for s in states if s[0] is LoopState.UNDETERMINED] == [states[0]]
    assert states.count((LoopState.IDLE, LoopState.RUNNING)) >= 2
    assert len(trace.coros(step.__qualname__)) == 2


def test_several_loops_in_several_threads_at_once(
    trace_path: Path, flavour: str
) -> None:
    """Three threads each run ``asyncio.run`` at the same time: each loop gets
    its own id and a label naming its thread; every event on a loop's thread
    that has a loop carries that thread's loop id; each coroutine lives on
    one thread; every loop ends NOT_EXIST; the whole trace validates."""
    n = 3
    together = threading.Barrier(n)
    native: dict[str, int] = {}
    results: dict[str, int] = {}

    async def main(tag: str) -> int:
        native[tag] = threading.get_native_id()
        await asyncio.to_thread(together.wait, 20)  # every loop is running
        q: asyncio.Queue[int] = asyncio.Queue()

        async def producer() -> None:
            for k in range(5):
                await q.put(k)
                await asyncio.sleep(0.001)

        async def consumer() -> int:
            return sum([await q.get() for _ in range(5)])

        _, total = await asyncio.gather(producer(), consumer())
        return total

    def thread_main(tag: str) -> None:
        results[tag] = run(lambda: main(tag), flavour)

    tags = [f"loop-{i}" for i in range(n)]
    threads = [threading.Thread(target=thread_main, args=(t,), name=t) for t in tags]
    with aiotrace.tracing(trace_path):
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert results == dict.fromkeys(tags, 10)
    trace = read_trace(trace_path)
    trace.check()

    loops = trace.loops()
    assert len(loops) == n
    lid_of = {thread: lid for lid, thread in loops.items()}
    assert set(lid_of) == set(native.values())
    for tag in tags:
        lid = lid_of[native[tag]]
        assert trace.loop_label(lid) == f"_UnixSelectorEventLoop in {tag}"
        assert _states(trace, lid)[-1][1] is LoopState.NOT_EXIST

    for ev in trace.events:
        if ev.thread in lid_of and ev.loop != NO_LOOP:
            assert ev.loop == lid_of[ev.thread], ev
    mains = set(trace.coros(main.__qualname__))
    assert len(mains) == n
    threads_of: dict[int, set[int]] = {}
    for ev in trace.coro_transitions():
        cid = ev.state_transition.resource.id
        threads_of.setdefault(cid, set()).add(ev.thread)
        if cid in mains and ev.state_transition.old is CoroState.NOT_EXIST:
            continue  # created by asyncio.run before its loop runs
        assert ev.loop == lid_of[ev.thread], ev
    assert all(len(ts) == 1 for ts in threads_of.values()), threads_of

    # The loops really ran at the same time.
    firsts = [trace.loop_transitions(lid)[0].time for lid in loops]
    lasts = [trace.loop_transitions(lid)[-1].time for lid in loops]
    assert max(firsts) < min(lasts)


def test_loops_already_running_in_threads_are_discovered(trace_path: Path) -> None:
    """Tracing started (and stopped) while two loops run in other threads:
    each loop is seen UNDETERMINED->RUNNING on its own thread with its label,
    and its tasks, created before tracing, appear with UNDETERMINED
    transitions (no creation) and their names; the trace validates."""
    ready = threading.Barrier(3)
    go = threading.Event()
    release = threading.Event()
    traced = threading.Barrier(3)
    native: dict[str, int] = {}

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.002)

    async def main(tag: str) -> str:
        native[tag] = threading.get_native_id()
        stop = asyncio.Event()
        t = asyncio.create_task(ticker(stop), name=f"ticker {tag}")
        await asyncio.to_thread(ready.wait, 20)
        await asyncio.to_thread(go.wait, 20)
        await asyncio.sleep(0.01)
        stop.set()
        await t
        await asyncio.to_thread(traced.wait, 20)
        await asyncio.to_thread(release.wait, 20)  # tracing stops meanwhile
        return tag

    results: list[str] = []
    tags = ["pre-0", "pre-1"]
    threads = [
        threading.Thread(
            target=lambda tag=tag: results.append(asyncio.run(main(tag))), name=tag
        )
        for tag in tags
    ]
    for t in threads:
        t.start()
    try:
        ready.wait(20)
        with aiotrace.tracing(trace_path):
            go.set()
            traced.wait(20)
    finally:
        release.set()
        for t in threads:
            t.join(60)
    assert sorted(results) == tags
    trace = read_trace(trace_path)
    # Executor ranges may be open: tracing stops while a worker waits.
    assert not reader.validate(trace.events)
    trace.check_reasons()

    loops = trace.loops()
    assert sorted(loops.values()) == sorted(native.values())
    for lid, thread in loops.items():
        (tag,) = (t for t in tags if native[t] == thread)
        assert trace.loop_label(lid) == f"_UnixSelectorEventLoop in {tag}"
    for tag in tags:
        cid = trace.one(f"{ticker.__qualname__} ticker {tag}")
        first = trace.coro_transitions(cid)[0]
        assert first.state_transition.old is CoroState.UNDETERMINED
        assert first.state_transition.new in (CoroState.RUNNABLE, CoroState.WAITING)
        assert first.thread == native[tag]
        assert trace.end(cid) == "returned"
        # main() was alive before tracing too: no creation, an UNDETERMINED start.
        (main_id,) = (
            cid
            for cid, label in trace.labels.items()
            if label.split(" ")[0] == main.__qualname__
            and trace.coro_transitions(cid)[0].thread == native[tag]
        )
        assert trace.coro_transitions(main_id)[0].state_transition.old is (
            CoroState.UNDETERMINED
        )


def test_a_loop_seen_mid_run_that_runs_again_validates(trace_path: Path) -> None:
    """Tracing started inside ``asyncio.run``'s main and stopped after
    ``asyncio.run`` returned: the loop, first seen running, stops when main
    returns and runs again for asyncio.run's shutdown steps; the trace
    validates."""

    async def main() -> str:
        aiotrace.start(trace_path)
        await asyncio.sleep(0.001)
        return "ok"

    try:
        assert asyncio.run(main()) == "ok"
    finally:
        aiotrace.stop()
    read_trace(trace_path).check()


async def _pre_existing_program(path: Path) -> list[str]:
    """Starts tasks, then tracing: the tasks were alive before the trace."""
    ev = asyncio.Event()
    stop = asyncio.Event()

    async def sleeper() -> str:
        await ev.wait()
        await asyncio.sleep(0.002)
        return "slept"

    async def spinner() -> str:
        while not stop.is_set():
            await asyncio.sleep(0)
        return "spun"

    a = asyncio.create_task(sleeper(), name="pre-sleeper")
    b = asyncio.create_task(spinner(), name="pre-spinner")
    await asyncio.sleep(0.005)  # a waits for ev, b keeps yielding
    async with aiotrace.tracing(path):
        ev.set()
        await asyncio.sleep(0.01)
        stop.set()
        got = list(await asyncio.gather(a, b))
        await asyncio.create_task(asyncio.sleep(0.001))
    return got


def test_tasks_alive_before_tracing_appear_with_undetermined_states(
    trace_path: Path,
) -> None:
    """Tracing started with ``async with aiotrace.tracing(path)`` inside a
    running program: the running loop is seen UNDETERMINED->RUNNING; a task
    that was waiting appears UNDETERMINED->WAITING, one that was runnable
    UNDETERMINED->RUNNABLE, each labelled "function name" and without a
    creation; the main task too appears UNDETERMINED; a task created while
    tracing has its creation; the trace validates."""
    assert asyncio.run(_pre_existing_program(trace_path)) == ["slept", "spun"]
    trace = read_trace(trace_path)
    assert not reader.validate(trace.events)

    (lid,) = trace.loops()
    first_loop = trace.loop_transitions(lid)[0]
    assert first_loop.state_transition.old is LoopState.UNDETERMINED
    assert first_loop.state_transition.new is LoopState.RUNNING

    def first(label: str) -> tuple[CoroState, CoroState]:
        cid = trace.one(label)
        ev = trace.coro_transitions(cid)[0]
        return ev.state_transition.old, ev.state_transition.new  # type: ignore[return-value]

    prefix = _pre_existing_program.__qualname__ + ".<locals>."
    assert first(prefix + "sleeper pre-sleeper") == (
        CoroState.UNDETERMINED,
        CoroState.WAITING,
    )
    assert first(prefix + "spinner pre-spinner") == (
        CoroState.UNDETERMINED,
        CoroState.RUNNABLE,
    )
    (main_label,) = (
        label
        for label in trace.labels.values()
        if label.split(" ")[0] == _pre_existing_program.__qualname__
    )
    assert first(main_label)[0] is CoroState.UNDETERMINED
    assert trace.end(trace.one(prefix + "sleeper pre-sleeper")) == "returned"
    assert trace.end(trace.one(prefix + "spinner pre-spinner")) == "returned"
    # The one task created while tracing has a creation, by the main task.
    created = [
        ev
        for ev in trace.coro_transitions()
        if ev.state_transition.old is CoroState.NOT_EXIST
    ]
    assert len(created) == 1
    assert trace.labels[created[0].state_transition.resource.id] == "sleep"
    assert created[0].coroutine == trace.one(main_label)


def test_wakeups_by_the_task_that_started_tracing_name_a_documented_waker(
    trace_path: Path,
) -> None:
    """A task woken by the coroutine that started tracing (which was running
    before the trace began) is woken by a documented waker: "coroutine"."""
    asyncio.run(_pre_existing_program(trace_path))
    trace = read_trace(trace_path)
    trace.check_reasons()
    prefix = _pre_existing_program.__qualname__ + ".<locals>."
    (main_cid,) = (
        cid
        for cid, label in trace.labels.items()
        if label.split(" ")[0] == _pre_existing_program.__qualname__
    )
    sleeper = trace.one(prefix + "sleeper pre-sleeper")
    # The sleeper was waiting on the event before the trace began, so its
    # first wakeup has no traced block; `ev.set()` in the main task woke it.
    wakeups = [
        ev
        for ev in trace.coro_transitions(sleeper)
        if ev.state_transition.old is CoroState.WAITING
    ]
    assert wakeups, "the sleeper's wakeup by ev.set() is missing"
    assert wakeups[0].state_transition.reason == "coroutine"
    assert wakeups[0].coroutine == main_cid


def test_a_thread_completing_a_wrapped_future_is_the_waker_thread(
    trace_path: Path, flavour: str
) -> None:
    """A coroutine awaiting ``asyncio.wrap_future`` of a concurrent future that
    another thread completes waits with reason "future" and is woken by
    "thread"."""

    async def main() -> str:
        cf: concurrent.futures.Future[str] = concurrent.futures.Future()
        timer = threading.Timer(0.005, cf.set_result, args=("from the thread",))
        timer.start()
        try:
            return await asyncio.wrap_future(cf)
        finally:
            timer.join()

    result, trace = trace_program(trace_path, main, flavour)
    assert result == "from the thread"
    assert trace.waits(trace.one(main.__qualname__)) == [Wait("future", "thread", NO)]


def test_a_thread_waking_a_coroutine_with_call_soon_threadsafe_is_the_waker_thread(
    trace_path: Path,
) -> None:
    """docs/format.md: the waker "thread" is another thread, through
    ``call_soon_threadsafe``. A thread that completes a loop future with
    ``loop.call_soon_threadsafe(fut.set_result, value)`` wakes the awaiting
    coroutine with waker "thread"."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        worker = threading.Thread(
            target=loop.call_soon_threadsafe, args=(fut.set_result, "handed over")
        )
        worker.start()
        try:
            return await fut
        finally:
            worker.join()

    result, trace = trace_program(trace_path, main)
    assert result == "handed over"
    assert trace.waits(trace.one(main.__qualname__)) == [Wait("future", "thread", NO)]


@pytest.mark.skipif(
    sys.version_info >= (3, 13),
    reason="CPython 3.13's run_forever resets the running loop when it refuses "
    "to run, so the program itself cannot go on",
)
def test_run_forever_refusing_a_running_loop_leaves_its_state_alone(
    trace_path: Path,
) -> None:
    """A coroutine that calls ``loop.run_forever()`` on its own, running loop
    gets RuntimeError and goes on; the trace must not change the loop's
    state for a run that never happened, and validates."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_forever()
        await asyncio.sleep(0.005)
        return "still running"

    result, _ = trace_program(trace_path, main)
    assert result == "still running"


def test_run_forever_refusing_a_closed_loop_records_no_loop(trace_path: Path) -> None:
    """``run_forever`` on a closed loop raises RuntimeError without running; the
    trace has no loop for it: only asyncio.run's own loop appears."""

    async def main() -> str:
        closed = asyncio.new_event_loop()
        closed.close()
        with pytest.raises(RuntimeError, match="closed"):
            closed.run_forever()
        return "ok"

    result, trace = trace_program(trace_path, main)
    assert result == "ok"
    assert len(trace.loops()) == 1


def test_loops_closed_while_tracing_are_freed_before_it_stops(
    trace_path: Path,
) -> None:
    """A program that runs ``asyncio.run`` once per job does not pile up event
    loops while traced: a loop that was run and closed can be freed before
    tracing stops."""
    refs: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def job() -> None:
        refs.append(weakref.ref(asyncio.get_running_loop()))
        await asyncio.sleep(0.001)

    with aiotrace.tracing(trace_path):
        for _ in range(3):
            asyncio.run(job())
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
    assert len(refs) == 3
    assert alive == 0
