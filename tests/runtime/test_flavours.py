"""The execution tracer on trio, anyio on trio, and uvloop."""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from helpers import hold_until_sampled

import aiotrace
from aiotrace import reader
from aiotrace.reader import CoroState, EventKind, ResourceKind


def transitions(events: list[reader.Event]) -> list[reader.Event]:
    """The coroutine transitions among ``events``."""
    return [
        ev
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.kind is ResourceKind.COROUTINE
    ]


def labels(events: list[reader.Event]) -> dict[int, str]:
    """Coroutine id -> label."""
    return {
        ev.label.resource.id: ev.label.label
        for ev in events
        if ev.kind is EventKind.LABEL
        and ev.label.resource.kind is ResourceKind.COROUTINE
    }


def by_label(events: list[reader.Event], suffix: str) -> int:
    """The id of the one coroutine whose label ends with ``suffix``."""
    found = [cid for cid, lab in labels(events).items() if lab.endswith(suffix)]
    assert len(found) == 1, (suffix, labels(events))
    return found[0]


def blocks(events: list[reader.Event], cid: int) -> list[str]:
    """The reasons coroutine ``cid`` blocked for, in order."""
    return [
        ev.state_transition.reason
        for ev in transitions(events)
        if ev.state_transition.resource.id == cid
        and ev.state_transition.new is CoroState.WAITING
    ]


def ends(events: list[reader.Event]) -> dict[int, str]:
    """Coroutine id -> how it ended."""
    return {
        ev.state_transition.resource.id: ev.state_transition.reason
        for ev in transitions(events)
        if ev.state_transition.new is CoroState.NOT_EXIST
    }


def read_valid(path: Path) -> list[reader.Event]:
    """Reads the trace at ``path`` and checks that it validates."""
    events = reader.read_events(path)
    assert reader.validate(events) == []
    return events


# trio


async def trio_child(send: Any) -> None:
    await trio.sleep(0.01)
    await send.send("milk")


async def trio_boom() -> None:
    raise ValueError("burnt")


STALL_LINE = 0


async def trio_main() -> None:
    global STALL_LINE
    send, receive = trio.open_memory_channel[str](0)
    lock = trio.Lock()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio_child, send)
        assert await receive.receive() == "milk"
    async with lock:
        await trio.sleep(0)
    with pytest.raises(ExceptionGroup):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio_boom)
    STALL_LINE = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    hold_until_sampled(3)  # blocks the run until the watchdog sampled it


def planted_stall_samples(events: list[reader.Event]) -> list[reader.Event]:
    """The samples of trio_main's planted stall, checked: at least 3, all at
    its line (under hold_until_sampled), all in one "loop stall" range; and
    every sample lies in a stall. (A loaded machine may add stalls of its
    own elsewhere.)"""
    begins: list[reader.Event] = []
    stalls: list[tuple[int, int]] = []
    for ev in events:
        if (
            ev.kind in (EventKind.RANGE_BEGIN, EventKind.RANGE_END)
            and ev.range.name == "loop stall"
        ):
            if ev.kind is EventKind.RANGE_BEGIN:
                begins.append(ev)
            else:
                stalls.append((begins.pop().time, ev.time))
    samples = [ev for ev in events if ev.kind is EventKind.STACK_SAMPLE]
    held = [ev for ev in samples if ev.stack.frames[0].func == "hold_until_sampled"]
    assert len(held) >= 3
    for ev in held:
        at = ev.stack.frames[1]
        assert (at.func, at.file, at.line) == ("trio_main", __file__, STALL_LINE)
    planted = [(t0, t1) for t0, t1 in stalls if t0 <= held[0].time <= t1]
    assert len(planted) == 1
    assert all(planted[0][0] <= ev.time <= planted[0][1] for ev in held)
    assert all(any(t0 <= ev.time <= t1 for t0, t1 in stalls) for ev in samples)
    return held


def test_trio_tasks_are_coroutines(tmp_path: Path) -> None:
    """Under trio, every task is a coroutine: spawned by its parent, blocked
    on the channel, the nursery and sleep with those reasons, woken by the
    timer and by the sending coroutine, ended returned or raised; the run is
    a loop, and a blocking call in a task is a stall sampled at its line."""
    path = tmp_path / "trio.trace"
    with aiotrace.tracing(path):
        trio.run(trio_main)
    events = read_valid(path)

    main = by_label(events, "trio_main")
    child = by_label(events, "trio_child")
    boom = by_label(events, "trio_boom")
    assert blocks(events, main)[:2] == ["queue", "gather"]
    assert blocks(events, child)[0] == "sleep"
    created = next(
        ev
        for ev in transitions(events)
        if ev.state_transition.resource.id == child
        and ev.state_transition.old is CoroState.NOT_EXIST
    )
    assert created.coroutine == main
    assert created.stack.frames[0].func == "trio_main"
    wakes = {
        (ev.state_transition.resource.id, ev.state_transition.reason, ev.coroutine)
        for ev in transitions(events)
        if ev.state_transition.old is CoroState.WAITING
    }
    assert (child, "timer", reader.NO_COROUTINE) in wakes
    assert (main, "coroutine", child) in wakes
    assert ends(events)[child] == "returned"
    assert ends(events)[boom] == "raised ValueError"

    loops = [
        ev
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.kind is ResourceKind.LOOP
    ]
    assert loops[0].state_transition.new is reader.LoopState.RUNNING
    assert loops[-1].state_transition.new is reader.LoopState.NOT_EXIST
    assert all(
        ev.loop == loops[0].state_transition.resource.id for ev in transitions(events)
    )

    assert {ev.coroutine for ev in planted_stall_samples(events)} == {main}


def test_trio_run_started_before_tracing(tmp_path: Path) -> None:
    """Tracing started inside a trio run traces that run from then on: tasks
    spawned after start are coroutines, the running ones appear as
    UNDETERMINED, and stopping inside the run leaves trio working."""
    path = tmp_path / "inside.trace"

    async def sleeper() -> None:
        await trio.sleep(0.05)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.sleep(0.01)
            with aiotrace.tracing(path):
                nursery.start_soon(sleeper, name="late")
                # Until "late" has ended (not a sleep longer than its own:
                # a starved run may wake both at once, this one first).
                await trio.sleep(0)
                while any(t.name == "late" for t in nursery.child_tasks):
                    await trio.sleep(0.01)
        await trio.sleep(0)  # trio still runs after stop

    trio.run(main)
    events = read_valid(path)
    late = by_label(events, "late")
    assert ends(events)[late] == "returned"
    statuses = [
        ev
        for ev in transitions(events)
        if ev.state_transition.old is CoroState.UNDETERMINED
    ]
    assert statuses  # the main task and the early sleeper, first seen running


def test_anyio_on_trio(tmp_path: Path) -> None:
    """anyio on the trio backend is traced through trio: its task group's
    children are coroutines, an anyio Event wait is an event block, and a
    to_thread call blocks as executor."""
    path = tmp_path / "anyio.trace"
    seen: list[str] = []

    async def waiter(event: anyio.Event) -> None:
        await event.wait()
        seen.append("woken")

    async def main() -> None:
        event = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, event)
            await anyio.to_thread.run_sync(time.sleep, 0.01)
            event.set()

    with aiotrace.tracing(path):
        anyio.run(main, backend="trio")
    assert seen == ["woken"]
    events = read_valid(path)
    w = by_label(events, "waiter")
    assert blocks(events, w)[0] == "event"
    m = by_label(events, "main")
    assert "executor" in blocks(events, m)


def test_trio_in_guest_mode_inside_asyncio(tmp_path: Path) -> None:
    """A trio run hosted by an asyncio loop (`trio.lowlevel.start_guest_run`,
    as anyio's pytest plugin runs trio tests) is traced: its tasks are
    coroutines with their blocks, next to the host loop's."""
    path = tmp_path / "guest.trace"

    async def host() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
        )
        return (await done).unwrap()

    with aiotrace.tracing(path):
        asyncio.run(host())
    events = read_valid(path)
    main = by_label(events, "trio_main")
    child = by_label(events, "trio_child")
    assert blocks(events, main)[:2] == ["queue", "gather"]
    assert blocks(events, child)[0] == "sleep"
    assert ends(events)[child] == "returned"
    assert ends(events)[by_label(events, "trio_boom")] == "raised ValueError"
    assert blocks(events, by_label(events, "host")) == ["future"]
    loop_ids = {
        ev.state_transition.resource.id
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.kind is ResourceKind.LOOP
    }
    assert len(loop_ids) == 2  # the asyncio host and the trio guest
    # The blocking call in the guest holds the host loop: one stall, on the
    # host's loop, sampled at the trio task's line.
    held = planted_stall_samples(events)
    host = by_label(events, "host")
    host_loop = {
        ev.loop
        for ev in transitions(events)
        if ev.state_transition.resource.id == host
        and ev.state_transition.new is CoroState.RUNNING
    }
    (held_loop,) = {ev.loop for ev in held}
    assert held_loop in host_loop


# uvloop


def test_uvloop(tmp_path: Path) -> None:
    """On uvloop, tasks are coroutines through a coroutine proxy: created
    with their creator and stack, blocked on a queue and sleep, woken by the
    putting coroutine, ended returned / raised / cancelled, the program's
    results untouched, and task.get_coro() still answers like a coroutine."""
    uvloop = pytest.importorskip("uvloop")
    path = tmp_path / "uvloop.trace"

    async def child(q: Any) -> str:
        await q.put(await_me := "espresso")
        return await_me

    async def boom() -> None:
        raise ValueError("burnt")

    async def forever() -> None:
        await uvloop_sleep(10)

    async def main() -> list[Any]:
        import asyncio

        q: asyncio.Queue[str] = asyncio.Queue()
        t = asyncio.create_task(child(q))
        got = await q.get()
        assert t.get_coro().__qualname__.endswith("child")
        b = asyncio.create_task(boom())
        f = asyncio.create_task(forever())
        await asyncio.sleep(0.01)
        f.cancel()
        results = await asyncio.gather(t, b, f, return_exceptions=True)
        return [
            got,
            *(type(r).__name__ if isinstance(r, BaseException) else r for r in results),
        ]

    import asyncio

    uvloop_sleep = asyncio.sleep
    with aiotrace.tracing(path):
        loop = uvloop.new_event_loop()
        try:
            result = loop.run_until_complete(main())
        finally:
            loop.close()
    assert result == ["espresso", "espresso", "ValueError", "CancelledError"]
    events = read_valid(path)
    c = by_label(events, "child")
    m = by_label(events, "main")
    assert blocks(events, m)[0] == "queue"
    assert ends(events)[c] == "returned"
    assert ends(events)[by_label(events, "boom")] == "raised ValueError"
    assert ends(events)[by_label(events, "forever")] == "cancelled"
    assert blocks(events, by_label(events, "forever")) == ["sleep"]
    wake = [
        ev
        for ev in transitions(events)
        if ev.state_transition.resource.id == m
        and ev.state_transition.old is CoroState.WAITING
    ]
    assert wake[0].coroutine == c
    # One label per coroutine (each task's coroutine function), one for the
    # loop naming uvloop's class (Loop) and its thread, one per thread that
    # recorded (the program's and the watchdog), nothing else.
    assert sorted(lab.rsplit(".", 1)[-1] for lab in labels(events).values()) == [
        "boom",
        "child",
        "forever",
        "main",
    ]
    loop_labels = [
        ev.label.label
        for ev in events
        if ev.kind is EventKind.LABEL and ev.label.resource.kind is ResourceKind.LOOP
    ]
    assert loop_labels == ["Loop in MainThread"]  # uvloop.Loop, its thread
    threads = {
        ev.label.label
        for ev in events
        if ev.kind is EventKind.LABEL and ev.label.resource.kind is ResourceKind.THREAD
    }
    # (the watchdog records its first metric sample after a tick: a loaded
    # machine may stop tracing before it has)
    assert "MainThread" in threads <= {"MainThread", "aiotrace-watchdog"}
    assert sum(1 for ev in events if ev.kind is EventKind.LABEL) == 5 + len(threads)
