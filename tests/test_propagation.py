"""The current user task travels with the context, and only with it.

Each test spawns work through one mechanism and checks, inside the work,
what ``aiotrace.current_task()`` says, then reads the trace back and checks
the task (and the thread) that the work's regions and logs were recorded
under. Where Python copies no context (``threading.Thread``,
``executor.submit``, ``loop.run_in_executor``) the task does not follow
unless the callable is wrapped with ``aiotrace.wrap`` or run with
``aiotrace.run_in_executor``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest

import aiotrace
from aiotrace import reader
from aiotrace._context import current_task_var, regions_var
from aiotrace.reader import EventKind
from aiotrace.sinks import MemorySink

MISUSE = "aiotrace/misuse"
JOIN_TIMEOUT = 20.0

THREADS_INHERIT_CONTEXT = bool(getattr(sys.flags, "thread_inherit_context", 0))
"""Python 3.14 can make threads start in a copy of their creator's context."""

no_context_for_threads = pytest.mark.skipif(
    THREADS_INHERIT_CONTEXT,
    reason="this Python copies the creator's context into new threads "
    "(sys.flags.thread_inherit_context)",
)
eager_tasks = pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="asyncio.eager_task_factory is new in Python 3.12",
)


# --- what spawned work does, and how to check it ------------------------------


@dataclass(frozen=True)
class Seen:
    """What a piece of spawned work saw: the current task (at its start and
    after it suspended) and the native id of the thread it ran on."""

    task: aiotrace.Task | None
    task_after_await: aiotrace.Task | None
    thread: int


def work(name: str, seen: dict[str, Seen]) -> str:
    """Synchronous work: notes what it sees, then records a region ``name``
    with a log of category ``name`` inside it. Returns ``name``."""
    task = aiotrace.current_task()
    seen[name] = Seen(task, task, threading.get_native_id())
    with aiotrace.region(name):
        aiotrace.log(name, "inside")
    return name


async def awork(name: str, seen: dict[str, Seen]) -> str:
    """Async work: like ``work``, but the region spans a suspension (a log
    before and one after it), and the task is looked at again after it."""
    task = aiotrace.current_task()
    thread = threading.get_native_id()
    async with aiotrace.region(name):
        aiotrace.log(name, "before await")
        await anyio.sleep(0)
        aiotrace.log(name, "after await")
    seen[name] = Seen(task, aiotrace.current_task(), thread)
    return name


def read(sink: MemorySink) -> list[reader.Event]:
    """The trace in ``sink``; fails if any annotation misuse was recorded."""
    events = sink.events()
    misuse = [
        ev.log.message
        for ev in events
        if ev.kind is EventKind.LOG and ev.log.category == MISUSE
    ]
    assert misuse == []
    return events


def task_events(
    events: list[reader.Event], kind: EventKind, task_id: int
) -> list[reader.Event]:
    """The TASK_BEGIN or TASK_END events of ``task_id``."""
    return [ev for ev in events if ev.kind is kind and ev.task.id == task_id]


def assert_recorded_under(
    events: list[reader.Event], name: str, task_id: int, thread: int | None = None
) -> None:
    """The region ``name`` began and ended once, and it and every log of
    category ``name`` (at least one) are under ``task_id`` and, if given, on
    ``thread``."""
    regions = [
        ev
        for ev in events
        if ev.kind in (EventKind.REGION_BEGIN, EventKind.REGION_END)
        and ev.region.type == name
    ]
    logged = [
        ev for ev in events if ev.kind is EventKind.LOG and ev.log.category == name
    ]
    assert [ev.kind for ev in regions] == [EventKind.REGION_BEGIN, EventKind.REGION_END]
    assert logged
    assert [ev.region.task for ev in regions] == [task_id, task_id]
    assert [ev.log.task for ev in logged] == [task_id] * len(logged)
    if thread is not None:
        assert {ev.thread for ev in regions + logged} == {thread}


def assert_saw(seen: Seen, task: aiotrace.Task | None) -> None:
    """The work saw ``task`` as current, before and after suspending."""
    assert seen.task is task
    assert seen.task_after_await is task


# --- asyncio ------------------------------------------------------------------


def _create_task(coro: Coroutine[Any, Any, str]) -> Awaitable[str]:
    return asyncio.create_task(coro)


def _ensure_future(coro: Coroutine[Any, Any, str]) -> Awaitable[str]:
    return asyncio.ensure_future(coro)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "spawn", [_create_task, _ensure_future], ids=["create_task", "ensure_future"]
)
async def test_spawned_asyncio_task_sees_the_task(
    spawn: Callable[[Coroutine[Any, Any, str]], Awaitable[str]],
) -> None:
    """An asyncio task made with create_task / ensure_future inside a user task
    sees that task, across its awaits, and records its regions and logs
    under it, on the loop's thread."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        assert await spawn(awork("spawned", seen)) == "spawned"
        assert aiotrace.current_task() is task
    assert_saw(seen["spawned"], task)
    assert_recorded_under(read(sink), "spawned", task.id, threading.get_native_id())


@pytest.mark.asyncio
async def test_gather_children_see_the_task() -> None:
    """Every coroutine run by asyncio.gather (each wrapped in its own asyncio
    task) sees the user task current where gather was called."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    names = ["a", "b", "c"]
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        got = await asyncio.gather(*(awork(n, seen) for n in names))
    assert got == names
    events = read(sink)
    for n in names:
        assert_saw(seen[n], task)
        assert_recorded_under(events, n, task.id, threading.get_native_id())


@pytest.mark.asyncio
async def test_asyncio_task_group_children_see_the_task() -> None:
    """Tasks started with asyncio.TaskGroup.create_task see the user task
    current where they were created."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(awork("first", seen))
            tg.create_task(awork("second", seen))
        assert aiotrace.current_task() is task
    events = read(sink)
    for n in ("first", "second"):
        assert_saw(seen[n], task)
        assert_recorded_under(events, n, task.id, threading.get_native_id())


@pytest.mark.asyncio
async def test_inside_an_asyncio_timeout_block() -> None:
    """Inside `async with asyncio.timeout(...)` the task stays current, both
    for work awaited directly in the block and for a task created in it."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        async with asyncio.timeout(JOIN_TIMEOUT):
            await awork("awaited", seen)
            await asyncio.create_task(awork("created", seen))
        assert aiotrace.current_task() is task
    events = read(sink)
    for n in ("awaited", "created"):
        assert_saw(seen[n], task)
        assert_recorded_under(events, n, task.id, threading.get_native_id())


@pytest.mark.asyncio
async def test_wait_for_sees_the_task() -> None:
    """A coroutine run by asyncio.wait_for (in its own asyncio task on 3.11,
    in the caller's on 3.12+) sees the caller's user task."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        assert await asyncio.wait_for(awork("waited", seen), JOIN_TIMEOUT)
    assert_saw(seen["waited"], task)
    assert_recorded_under(read(sink), "waited", task.id, threading.get_native_id())


# --- eager tasks (3.12+) ------------------------------------------------------


@eager_tasks
@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["create_task", "TaskGroup"])
async def test_eager_task_sees_the_task_in_its_first_step(how: str) -> None:
    """With asyncio.eager_task_factory the first step of a new task runs inside
    create_task, before it returns; that step already sees the user task, and
    a region begun in it and ended in a later step is recorded whole under
    the task."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    sink = MemorySink()
    first_step: dict[str, aiotrace.Task | None] = {}
    later_step: dict[str, aiotrace.Task | None] = {}

    async def eager(name: str) -> None:
        first_step[name] = aiotrace.current_task()
        r = aiotrace.start_region(name)
        aiotrace.log(name, "first step")
        await anyio.sleep(0)
        later_step[name] = aiotrace.current_task()
        aiotrace.log(name, "later step")
        r.end()

    try:
        async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
            if how == "create_task":
                t = asyncio.create_task(eager("eager"))
                assert "eager" in first_step, "the first step did not run eagerly"
                assert not t.done()
                await t
            else:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(eager("eager"))
                    assert "eager" in first_step, "the first step was not eager"
    finally:
        loop.set_task_factory(None)
    assert first_step["eager"] is task
    assert later_step["eager"] is task
    assert_recorded_under(read(sink), "eager", task.id, threading.get_native_id())


@eager_tasks
@pytest.mark.asyncio
async def test_new_task_in_an_eager_first_step_stays_in_the_child() -> None:
    """A user task made (and left current) in the eager first step of a child
    belongs to the child's context: when create_task returns, the creator's
    current task is unchanged, and the child's task is a child of it."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    sink = MemorySink()
    made: list[aiotrace.Task] = []
    later: list[aiotrace.Task | None] = []

    async def child() -> None:
        made.append(aiotrace.new_task("eagerChild"))
        await anyio.sleep(0)
        later.append(aiotrace.current_task())
        with aiotrace.region("in-child"):
            aiotrace.log("in-child", "after the first step")

    try:
        async with aiotrace.tracing(sink):
            async with aiotrace.new_task("order") as task:
                t = asyncio.create_task(child())
                assert made, "the first step did not run eagerly"
                assert aiotrace.current_task() is task
                await t
                assert aiotrace.current_task() is task
            made[0].end()
    finally:
        loop.set_task_factory(None)
    (eager_child,) = made
    assert later == [eager_child]
    assert eager_child.parent_id == task.id
    events = read(sink)
    (begin,) = task_events(events, EventKind.TASK_BEGIN, eager_child.id)
    assert begin.task.parent == task.id
    assert_recorded_under(events, "in-child", eager_child.id)


# --- anyio --------------------------------------------------------------------


async def _started(
    name: str,
    seen: dict[str, Seen],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    await awork(name, seen)


@pytest.mark.anyio
async def test_anyio_task_group_children_see_the_task() -> None:
    """Tasks started with an anyio task group (start_soon and start), on
    asyncio and on trio, see the user task current where they were started."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        async with anyio.create_task_group() as tg:
            tg.start_soon(awork, "soon-1", seen)
            tg.start_soon(awork, "soon-2", seen)
            await tg.start(_started, "started", seen)
        assert aiotrace.current_task() is task
    events = read(sink)
    for n in ("soon-1", "soon-2", "started"):
        assert_saw(seen[n], task)
        assert_recorded_under(events, n, task.id, threading.get_native_id())


@pytest.mark.anyio
async def test_anyio_to_thread_run_sync_sees_the_task() -> None:
    """anyio.to_thread.run_sync copies the context into the worker thread, on
    asyncio and on trio: the work sees the task and records under it, on the
    worker thread."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        got = await anyio.to_thread.run_sync(work, "threaded", seen)
    assert got == "threaded"
    assert_saw(seen["threaded"], task)
    assert seen["threaded"].thread != threading.get_native_id()
    assert_recorded_under(read(sink), "threaded", task.id, seen["threaded"].thread)


# --- threads ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_asyncio_to_thread_sees_the_task() -> None:
    """asyncio.to_thread copies the context into the worker thread: the work
    sees the task and records under it, on the worker thread."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        assert await asyncio.to_thread(work, "threaded", seen) == "threaded"
    assert_saw(seen["threaded"], task)
    assert seen["threaded"].thread != threading.get_native_id()
    assert_recorded_under(read(sink), "threaded", task.id, seen["threaded"].thread)


def run_thread(target: Callable[..., object], *args: object) -> None:
    """Runs ``target(*args)`` in a new thread and waits for it."""
    t = threading.Thread(target=target, args=args)
    t.start()
    t.join(JOIN_TIMEOUT)
    assert not t.is_alive()


@no_context_for_threads
def test_plain_thread_does_not_see_the_task() -> None:
    """A threading.Thread target starts in an empty context, not its creator's:
    current_task() there is None and its regions and logs are under the
    background task."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        run_thread(work, "plain", seen)
        assert aiotrace.current_task() is task
    assert_saw(seen["plain"], None)
    assert seen["plain"].thread != threading.get_native_id()
    assert_recorded_under(
        read(sink), "plain", aiotrace.BACKGROUND_TASK, seen["plain"].thread
    )


def test_wrapped_thread_target_sees_the_task() -> None:
    """threading.Thread(target=aiotrace.wrap(fn)) runs fn in a copy of the
    context wrap was called in: it sees the task and records under it, on the
    new thread."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        run_thread(aiotrace.wrap(work), "wrapped", seen)
    assert_saw(seen["wrapped"], task)
    assert seen["wrapped"].thread != threading.get_native_id()
    assert_recorded_under(read(sink), "wrapped", task.id, seen["wrapped"].thread)


@no_context_for_threads
def test_executor_submit_does_not_carry_the_task() -> None:
    """ThreadPoolExecutor.submit(fn) copies no context: fn sees no task and
    records under the background task, on the worker thread."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    with (
        aiotrace.tracing(sink),
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
        aiotrace.new_task("order"),
    ):
        assert pool.submit(work, "plain", seen).result(JOIN_TIMEOUT) == "plain"
    assert_saw(seen["plain"], None)
    assert seen["plain"].thread != threading.get_native_id()
    assert_recorded_under(
        read(sink), "plain", aiotrace.BACKGROUND_TASK, seen["plain"].thread
    )


def test_executor_submit_of_a_wrapped_function_carries_the_task() -> None:
    """ThreadPoolExecutor.submit(aiotrace.wrap(fn), ...) runs fn in a copy of
    the submitter's context: it sees the task and records under it, on the
    worker thread."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    with (
        aiotrace.tracing(sink),
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
        aiotrace.new_task("order") as task,
    ):
        got = pool.submit(aiotrace.wrap(work), "wrapped", seen).result(JOIN_TIMEOUT)
    assert got == "wrapped"
    assert_saw(seen["wrapped"], task)
    assert seen["wrapped"].thread != threading.get_native_id()
    assert_recorded_under(read(sink), "wrapped", task.id, seen["wrapped"].thread)


@no_context_for_threads
@pytest.mark.asyncio
async def test_loop_run_in_executor_copies_no_context() -> None:
    """loop.run_in_executor(None, fn) does NOT carry the task: unlike
    asyncio.to_thread it hands fn to executor.submit as is, copying no
    context, so fn sees no task and records under the background task. Use
    aiotrace.run_in_executor instead."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    loop = asyncio.get_running_loop()
    async with aiotrace.tracing(sink), aiotrace.new_task("order"):
        assert await loop.run_in_executor(None, work, "plain", seen) == "plain"
    assert_saw(seen["plain"], None)
    assert seen["plain"].thread != threading.get_native_id()
    assert_recorded_under(
        read(sink), "plain", aiotrace.BACKGROUND_TASK, seen["plain"].thread
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["default", "ThreadPoolExecutor"])
async def test_aiotrace_run_in_executor_carries_the_task(executor: str) -> None:
    """aiotrace.run_in_executor(executor, fn, *args) runs fn(*args) in the
    executor (the loop's default one for None) in a copy of the caller's
    context: it sees the task and records under it, on the worker thread, and
    its result comes back."""
    sink = MemorySink()
    seen: dict[str, Seen] = {}
    pool = (
        concurrent.futures.ThreadPoolExecutor(max_workers=1)
        if executor == "ThreadPoolExecutor"
        else None
    )
    try:
        async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
            got = await aiotrace.run_in_executor(pool, work, "kept", seen)
    finally:
        if pool is not None:
            pool.shutdown()
    assert got == "kept"
    assert_saw(seen["kept"], task)
    assert seen["kept"].thread != threading.get_native_id()
    assert_recorded_under(read(sink), "kept", task.id, seen["kept"].thread)


def test_wrapped_function_called_twice_at_once_from_two_threads() -> None:
    """One wrapped function running in two threads at the same time: each call
    runs in its own copy of the captured context, so each makes its own child
    task and region without seeing the other's, and both record under their
    own task on their own thread."""
    sink = MemorySink()
    both_inside = threading.Barrier(2, timeout=JOIN_TIMEOUT)
    both_checked = threading.Barrier(2, timeout=JOIN_TIMEOUT)
    calls: dict[str, dict[str, Any]] = {}

    def call(name: str) -> None:
        before = aiotrace.current_task()
        with aiotrace.new_task(f"inner-{name}") as inner, aiotrace.region(name) as r:
            both_inside.wait()  # both calls are inside their task and region
            aiotrace.log(name, "inside")
            calls[name] = {
                "before": before,
                "inner": inner,
                "current": aiotrace.current_task(),
                "regions": regions_var.get(),
                "region": r,
                "thread": threading.get_native_id(),
            }
            both_checked.wait()
        calls[name]["after"] = aiotrace.current_task()

    with aiotrace.tracing(sink), aiotrace.new_task("outer") as outer:
        fn = aiotrace.wrap(call)
        threads = [threading.Thread(target=fn, args=(n,)) for n in ("left", "right")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOIN_TIMEOUT)
        assert not any(t.is_alive() for t in threads)
        assert aiotrace.current_task() is outer
        assert regions_var.get() == ()

    events = read(sink)
    assert set(calls) == {"left", "right"}
    assert calls["left"]["thread"] != calls["right"]["thread"]
    for name, c in calls.items():
        inner = c["inner"]
        assert c["before"] is outer
        assert c["current"] is inner
        assert c["after"] is outer
        assert c["regions"] == (c["region"],)
        assert inner.parent_id == outer.id
        (begin,) = task_events(events, EventKind.TASK_BEGIN, inner.id)
        assert begin.task.parent == outer.id
        assert begin.thread == c["thread"]
        assert_recorded_under(events, name, inner.id, c["thread"])


def test_each_call_of_a_wrapped_function_starts_from_the_captured_context() -> None:
    """A wrapped function's calls do not see each other's context changes: a
    task one call leaves current is not current in the next call, nor in the
    caller."""
    sink = MemorySink()
    seen: list[aiotrace.Task | None] = []
    leaked: list[aiotrace.Task] = []

    def call() -> None:
        seen.append(aiotrace.current_task())
        leaked.append(aiotrace.new_task("leaky"))  # never restored

    with aiotrace.tracing(sink), aiotrace.new_task("outer") as outer:
        fn = aiotrace.wrap(call)
        fn()
        fn()
        run_thread(fn)
        assert aiotrace.current_task() is outer
        for t in leaked:
            t.end()
    assert seen == [outer, outer, outer]
    assert len({t.id for t in leaked}) == 3
    events = read(sink)
    for t in leaked:
        assert t.parent_id == outer.id
        (begin,) = task_events(events, EventKind.TASK_BEGIN, t.id)
        assert begin.task.parent == outer.id


def test_threaded_program_without_an_event_loop() -> None:
    """A plain threaded program, no event loop anywhere: a task made in the
    main thread reaches worker threads through wrap; each worker's regions
    and logs (log and logf) are under it, on the worker's thread, and a task
    a worker makes is a child of it, current only in that worker."""
    sink = MemorySink()
    n = 4
    seen: dict[int, aiotrace.Task | None] = {}
    subs: dict[int, aiotrace.Task] = {}
    after: dict[int, aiotrace.Task | None] = {}
    native: dict[int, int] = {}

    def worker(i: int) -> None:
        native[i] = threading.get_native_id()
        seen[i] = aiotrace.current_task()
        with aiotrace.region(f"chunk-{i}"):
            aiotrace.logf(f"chunk-{i}", "item %d", i)
            with aiotrace.new_task(f"sub-{i}") as sub:
                subs[i] = sub
                aiotrace.with_region(
                    f"sub-chunk-{i}", aiotrace.log, f"sub-chunk-{i}", "x"
                )
            after[i] = aiotrace.current_task()
            aiotrace.log(f"chunk-{i}", "after the sub-task")

    with aiotrace.tracing(sink), aiotrace.new_task("batch") as batch:
        threads = [
            threading.Thread(target=aiotrace.wrap(worker), args=(i,)) for i in range(n)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOIN_TIMEOUT)
        assert not any(t.is_alive() for t in threads)
        assert aiotrace.current_task() is batch
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()

    events = read(sink)
    for i in range(n):
        assert native[i] != threading.get_native_id()
        assert seen[i] is batch
        assert after[i] is batch
        assert subs[i].parent_id == batch.id
        (begin,) = task_events(events, EventKind.TASK_BEGIN, subs[i].id)
        assert begin.task.parent == batch.id
        assert begin.thread == native[i]
        assert_recorded_under(events, f"chunk-{i}", batch.id, native[i])
        assert_recorded_under(events, f"sub-chunk-{i}", subs[i].id, native[i])


# --- nested tasks -------------------------------------------------------------


@pytest.mark.asyncio
async def test_child_task_made_in_a_spawned_coroutine() -> None:
    """A task made inside a coroutine spawned under a parent task is the
    parent's child (parent_id, and TASK_BEGIN's parent); inside its `with`
    block it is current, and after the block the parent is current again."""
    sink = MemorySink()
    inside: list[aiotrace.Task | None] = []
    after: list[aiotrace.Task | None] = []

    async def spawned() -> aiotrace.Task:
        with aiotrace.new_task("child") as child:
            await anyio.sleep(0)
            inside.append(aiotrace.current_task())
            with aiotrace.region("child-work"):
                aiotrace.log("child-work", "inside the child")
        after.append(aiotrace.current_task())
        with aiotrace.region("after-child"):
            aiotrace.log("after-child", "back under the parent")
        return child

    async with aiotrace.tracing(sink):
        async with aiotrace.new_task("parent") as parent:
            child = await asyncio.create_task(spawned())
            assert aiotrace.current_task() is parent
        assert aiotrace.current_task() is None

    assert child.parent_id == parent.id
    assert inside == [child]
    assert after == [parent]
    events = read(sink)
    (parent_begin,) = task_events(events, EventKind.TASK_BEGIN, parent.id)
    assert parent_begin.task.parent == aiotrace.BACKGROUND_TASK
    (child_begin,) = task_events(events, EventKind.TASK_BEGIN, child.id)
    assert child_begin.task.parent == parent.id
    assert child_begin.task.type == "child"
    assert len(task_events(events, EventKind.TASK_END, child.id)) == 1
    assert_recorded_under(events, "child-work", child.id)
    assert_recorded_under(events, "after-child", parent.id)


@pytest.mark.asyncio
async def test_sibling_new_task_does_not_leak() -> None:
    """A task a sibling coroutine makes (and leaves current) is current only in
    that sibling: a concurrent sibling, and the parent after gather, still
    see the parent task."""
    sink = MemorySink()
    made = asyncio.Event()
    other_saw: list[aiotrace.Task | None] = []

    async def leaky() -> aiotrace.Task:
        t = aiotrace.new_task("sibling")  # never restored
        made.set()
        await anyio.sleep(0)
        assert aiotrace.current_task() is t
        return t

    async def other() -> None:
        await made.wait()
        other_saw.append(aiotrace.current_task())
        with aiotrace.region("other"):
            aiotrace.log("other", "after the sibling made its task")

    async with aiotrace.tracing(sink), aiotrace.new_task("parent") as parent:
        sibling, _ = await asyncio.gather(leaky(), other())
        assert aiotrace.current_task() is parent
        with aiotrace.region("parent-after"):
            aiotrace.log("parent-after", "after gather")
        sibling.end()
    assert other_saw == [parent]
    assert sibling.parent_id == parent.id
    events = read(sink)
    assert_recorded_under(events, "other", parent.id)
    assert_recorded_under(events, "parent-after", parent.id)


# --- the state kept is immutable ----------------------------------------------


def assert_immutable_state() -> None:
    """The ContextVars hold a Task or None, and a tuple of Regions."""
    task = current_task_var.get()
    assert task is None or type(task) is aiotrace.Task
    regions = regions_var.get()
    assert type(regions) is tuple
    assert all(type(r) is aiotrace.Region for r in regions)


@pytest.mark.asyncio
async def test_context_vars_hold_immutable_values() -> None:
    """current_task_var holds a Task or None and regions_var a tuple of Regions,
    everywhere: before any task, in a task, in a region, in a spawned
    coroutine and in a thread."""
    sink = MemorySink()
    assert_immutable_state()
    assert current_task_var.get() is None
    assert regions_var.get() == ()

    async def child() -> None:
        assert_immutable_state()
        async with aiotrace.region("child"):
            assert_immutable_state()
            await anyio.sleep(0)
            assert_immutable_state()

    def in_thread() -> None:
        assert_immutable_state()
        with aiotrace.region("thread"):
            assert_immutable_state()

    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        assert current_task_var.get() is task
        assert_immutable_state()
        with aiotrace.region("outer") as outer:
            assert regions_var.get() == (outer,)
            assert_immutable_state()
            await asyncio.create_task(child())
            await asyncio.to_thread(in_thread)
        assert regions_var.get() == ()
    read(sink)


@pytest.mark.asyncio
async def test_region_in_a_child_coroutine_is_not_open_in_the_parent() -> None:
    """A child coroutine starts with a copy of the parent's open regions; a
    region it opens is on its own stack only: while it is open, and after,
    the parent's regions_var holds the very same tuple as before."""
    sink = MemorySink()
    opened = asyncio.Event()
    checked = asyncio.Event()
    child_view: dict[str, tuple[object, ...]] = {}

    async def child() -> None:
        child_view["start"] = regions_var.get()
        async with aiotrace.region("inner") as inner:
            child_view["inside"] = regions_var.get()
            child_view["inner"] = (inner,)
            opened.set()
            await checked.wait()
        child_view["end"] = regions_var.get()

    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        with aiotrace.region("outer") as outer:
            before = regions_var.get()
            assert before == (outer,)
            t = asyncio.create_task(child())
            await opened.wait()
            assert regions_var.get() is before  # the child's region is not here
            checked.set()
            await t
            assert regions_var.get() is before
    (inner,) = child_view["inner"]
    assert child_view["start"] == (outer,)
    assert child_view["inside"] == (outer, inner)
    assert child_view["end"] == (outer,)
    events = read(sink)
    assert_recorded_under_region(events, "inner", task.id)
    assert_recorded_under_region(events, "outer", task.id)


def assert_recorded_under_region(
    events: list[reader.Event], name: str, task_id: int
) -> None:
    """The region ``name`` began and ended once, under ``task_id``."""
    got = [
        (ev.kind, ev.region.task)
        for ev in events
        if ev.kind in (EventKind.REGION_BEGIN, EventKind.REGION_END)
        and ev.region.type == name
    ]
    assert got == [(EventKind.REGION_BEGIN, task_id), (EventKind.REGION_END, task_id)]


# --- Go's cappuccino: a task ended by another coroutine -----------------------


def test_cappuccino_task_ended_from_a_third_coroutine() -> None:
    """Go's cappuccino: one coroutine makes the task and spawns three; two
    steam milk and extract coffee in regions, the third waits for both, mixes
    and ends the task. TASK_END is recorded once, from the third coroutine
    (its stack), after the mixing, even though end() is called again later."""
    sink = MemorySink()

    async def make_cappuccino() -> tuple[aiotrace.Task, list[asyncio.Task[None]]]:
        task = aiotrace.new_task("makeCappuccino")  # ended by mix_milk_coffee
        milk = asyncio.Event()
        espresso = asyncio.Event()

        async def steam_milk() -> None:
            await aiotrace.with_region("steamMilk", anyio.sleep, 0)
            milk.set()

        async def extract_coffee() -> None:
            await aiotrace.with_region("extractCoffee", anyio.sleep, 0)
            espresso.set()

        async def mix_milk_coffee() -> None:
            await milk.wait()
            await espresso.wait()
            with aiotrace.region("mixMilkCoffee"):
                aiotrace.log("mixMilkCoffee", "done")
            task.end()

        spawned = [
            asyncio.create_task(steam_milk()),
            asyncio.create_task(extract_coffee()),
            asyncio.create_task(mix_milk_coffee()),
        ]
        return task, spawned

    async def main() -> aiotrace.Task:
        task, spawned = await asyncio.create_task(make_cappuccino())
        assert aiotrace.current_task() is None  # the maker's task stayed there
        assert not task.ended
        await asyncio.gather(*spawned)
        assert task.ended
        task.end()  # a second end() records nothing
        return task

    with aiotrace.tracing(sink, annotation_stacks=True):
        task = asyncio.run(main())
        task.end()

    events = read(sink)
    (begin,) = task_events(events, EventKind.TASK_BEGIN, task.id)
    (end,) = task_events(events, EventKind.TASK_END, task.id)
    assert begin.task.type == end.task.type == "makeCappuccino"
    assert begin.stack.frames[0].func.endswith("make_cappuccino")
    assert end.stack.frames[0].func.endswith("mix_milk_coffee")
    for name in ("steamMilk", "extractCoffee", "mixMilkCoffee"):
        assert_recorded_under_region(events, name, task.id)
    (mixed,) = [
        ev
        for ev in events
        if ev.kind is EventKind.REGION_END and ev.region.type == "mixMilkCoffee"
    ]
    assert events.index(end) > events.index(mixed)
    assert end.time >= mixed.time


def test_end_raced_from_many_threads_records_one_task_end() -> None:
    """end() called at once from 8 threads (any thread may end a task): the
    trace holds exactly one TASK_END for the task."""
    sink = MemorySink()
    n = 8
    go = threading.Barrier(n, timeout=JOIN_TIMEOUT)

    with aiotrace.tracing(sink):
        # Made in a copy of the context, so as to leave this thread's alone.
        task = contextvars.copy_context().run(aiotrace.new_task, "raced")

        def end() -> None:
            go.wait()
            task.end()

        threads = [threading.Thread(target=end) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOIN_TIMEOUT)
        assert not any(t.is_alive() for t in threads)
    assert task.ended
    events = read(sink)
    assert len(task_events(events, EventKind.TASK_BEGIN, task.id)) == 1
    assert len(task_events(events, EventKind.TASK_END, task.id)) == 1
