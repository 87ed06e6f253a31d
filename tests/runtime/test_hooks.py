"""The hooks themselves: installed while tracing, undone by stop(), harmless
to the program when they fail, and shaped by the start options."""

from __future__ import annotations

import asyncio
import collections.abc
import gc
import math
import multiprocessing
import threading
import time
import warnings
from asyncio import base_events, events
from collections.abc import Generator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from programs import (
    ASYNCIO_DIR,
    EAGER_SKIP,
    Trace,
    marker_line,
    read_trace,
    run,
    trace_program,
)

import aiotrace
from aiotrace import reader
from aiotrace.reader import CoroState, EventKind, StackFrame

HOOK_ERROR = "aiotrace/hook-error"

PATCHED = (
    (events.Handle, "_run"),
    (base_events.BaseEventLoop, "_call_soon"),
    (base_events.BaseEventLoop, "create_task"),
    (base_events.BaseEventLoop, "run_forever"),
    (base_events.BaseEventLoop, "close"),
    (base_events.BaseEventLoop, "run_in_executor"),
)
"""The class attributes the execution tracer patches."""


def _snapshot(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """What the hooks patch, as it is now: class attributes (from the class
    dict, not inherited), gc callbacks, and the loop's selector."""
    out: dict[str, Any] = {
        f"{owner.__name__}.{name}": owner.__dict__.get(name) for owner, name in PATCHED
    }
    out["gc.callbacks"] = list(gc.callbacks)
    out["loop._selector"] = loop._selector  # type: ignore[attr-defined]
    for cls in type(loop).__mro__:
        out[f"{cls.__name__} dict"] = set(cls.__dict__)
    out["TimerHandle dict"] = set(asyncio.TimerHandle.__dict__)
    return out


def test_stop_restores_every_patched_attribute(trace_path: Path) -> None:
    """While tracing, Handle._run, BaseEventLoop._call_soon, create_task,
    run_forever, close and run_in_executor are replaced, a gc callback is
    added and a running loop's selector is wrapped; after stop() each is the
    very object it was before start, and no class gained an attribute."""
    loop = asyncio.new_event_loop()
    try:
        before = _snapshot(loop)
        during: dict[str, Any] = {}

        async def main() -> None:
            await asyncio.sleep(0.001)
            await asyncio.to_thread(time.sleep, 0.001)
            during.update(_snapshot(loop))

        with aiotrace.tracing(trace_path):
            loop.run_until_complete(main())
        after = _snapshot(loop)
    finally:
        loop.close()

    for owner, name in PATCHED:
        key = f"{owner.__name__}.{name}"
        assert during[key] is not before[key], key
    assert len(during["gc.callbacks"]) == len(before["gc.callbacks"]) + 1
    assert during["loop._selector"] is not before["loop._selector"]

    assert after.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, list | set):
            assert after[key] == value, key
        else:
            assert after[key] is value, key
    read_trace(trace_path).check()


def test_a_loop_running_across_stop_goes_on_untraced(trace_path: Path) -> None:
    """A loop running in a thread while tracing stops (from the main thread)
    keeps running correctly: its selector is unwrapped under it, and what it
    does after stop is not in the trace, which validates."""
    traced = threading.Event()
    stopped = threading.Event()
    results: list[int] = []

    async def part(tag: str, n: int) -> int:
        aiotrace.log("part", tag)
        await asyncio.sleep(0.001)
        return n

    async def main() -> None:
        results.append(await asyncio.create_task(part("traced", 1)))
        traced.set()
        await asyncio.to_thread(stopped.wait, 20)
        results.append(await asyncio.create_task(part("untraced", 2)))
        results.append(
            sum(await asyncio.gather(*(part("untraced", 1) for _ in range(3))))
        )

    thread = threading.Thread(target=run, args=(main,), name="across-stop")
    with aiotrace.tracing(trace_path):
        thread.start()
        assert traced.wait(20)
    stopped.set()
    thread.join(60)
    assert results == [1, 2, 3]
    trace = read_trace(trace_path)
    assert not reader.validate(trace.events)
    assert [ev.log.message for ev in trace.logs("part")] == ["traced"]
    assert len(trace.coros(part.__qualname__)) == 1


def test_a_program_run_after_stop_works_and_records_nothing(trace_path: Path) -> None:
    """``aiotrace.stop()`` called inside a running program: the rest of the
    program (tasks, sleeps, executor work, a GC, a long blocking step) works
    as before and leaves nothing in the trace, which validates; a second
    program after that runs untraced too, and a new trace records again."""

    async def part(tag: str) -> str:
        aiotrace.log("part", tag)
        await asyncio.sleep(0.001)
        return tag

    async def main() -> list[str]:
        got = [await asyncio.create_task(part("one"))]
        aiotrace.stop()
        got.append(await asyncio.create_task(part("two")))
        got.append(await asyncio.to_thread(str.upper, "three"))
        gc.collect()
        time.sleep(0.15)
        await asyncio.sleep(0)
        return got

    aiotrace.start(trace_path)
    try:
        result = asyncio.run(main())
    finally:
        aiotrace.stop()
    assert result == ["one", "two", "THREE"]
    assert not aiotrace.is_enabled()
    trace = read_trace(trace_path)
    assert not reader.validate(trace.events)
    assert [ev.log.message for ev in trace.logs("part")] == ["one"]
    assert len(trace.coros(part.__qualname__)) == 1
    assert trace.ranges("loop stall") == []
    assert trace.ranges("executor") == []
    assert trace.ranges("GC gen2") == []

    assert asyncio.run(part("untraced")) == "untraced"

    again = trace_path.with_name("again.trace")
    assert trace_program(again, lambda: part("again"))[0] == "again"
    second = read_trace(again)
    assert [ev.log.message for ev in second.logs("part")] == ["again"]
    assert second.one(part.__qualname__)


async def _interleave(log: list[str]) -> None:
    """Tasks that take turns through sleep(0), a lock, a queue and an event."""
    lock = asyncio.Lock()
    q: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    ev = asyncio.Event()

    async def worker(name: str) -> None:
        for i in range(3):
            log.append(f"{name}{i}")
            await asyncio.sleep(0)
        async with lock:
            log.append(f"{name} locked")
            await asyncio.sleep(0)
        await q.put(name)
        await ev.wait()
        log.append(f"{name} done")

    async def drain() -> None:
        for _ in range(3):
            log.append(f"got {await q.get()}")
        ev.set()

    await asyncio.gather(worker("a"), worker("b"), worker("c"), drain())


def test_tracing_does_not_change_the_programs_schedule(
    trace_path: Path, flavour: str
) -> None:
    """The hooks only observe: a program whose tasks interleave through
    sleep(0), a lock, a queue and an event runs in exactly the same order
    traced as untraced."""
    untraced: list[str] = []
    run(lambda: _interleave(untraced), flavour)
    traced: list[str] = []
    trace_program(trace_path, lambda: _interleave(traced), flavour)
    assert traced == untraced
    assert len(traced) == 3 * 5 + 3


def test_errors_in_callbacks_and_steps_pass_through_the_hooks(
    trace_path: Path,
) -> None:
    """An exception in a plain callback still reaches the loop's exception
    handler; a SystemExit raised in a step still leaves asyncio.run; the
    trace validates and records main ending "raised SystemExit"."""
    handled: list[BaseException] = []

    def fail() -> None:
        raise ZeroDivisionError("in a callback")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, ctx: handled.append(ctx["exception"]))
        loop.call_soon(fail)
        await asyncio.sleep(0.001)
        raise SystemExit(3)

    with pytest.raises(SystemExit) as exc_info:
        trace_program(trace_path, main)
    assert exc_info.value.code == 3
    assert [type(e) for e in handled] == [ZeroDivisionError]
    trace = read_trace(trace_path)
    trace.check()
    assert trace.end(trace.one(main.__qualname__)) == "raised SystemExit"


# A hook that fails.


class OpaqueTask(asyncio.Task):  # type: ignore[type-arg]
    """A Task subclass that will not hand out its coroutine."""

    def get_coro(self) -> Any:
        raise RuntimeError("opaque task")


def opaque_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
    """A task factory making OpaqueTasks."""
    return OpaqueTask(coro, loop=loop, **kwargs)


async def work(n: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * n


async def _opaque_program(seen: dict[str, Any]) -> int:
    asyncio.get_running_loop().set_task_factory(opaque_factory)
    total = sum(await asyncio.gather(*(work(i) for i in range(5))))
    seen["Handle._run"] = events.Handle.__dict__["_run"]
    total += await asyncio.create_task(work(10))
    return total


def _hook_errors(trace: Trace) -> list[str]:
    return [ev.log.message for ev in trace.logs(HOOK_ERROR)]


def test_a_failing_hook_is_turned_off_with_one_warning_and_a_log(
    trace_path: Path,
) -> None:
    """A Task subclass whose get_coro() raises makes the Handle._run hook fail
    (it walks the coroutine to classify a wait): the hook is turned off at
    once (Handle._run is asyncio's again while tracing goes on), one
    TracingWarning names it, an "aiotrace/hook-error" log records it, and the
    program's result is intact."""
    original = events.Handle.__dict__["_run"]
    seen: dict[str, Any] = {}
    with (
        pytest.warns(
            aiotrace.TracingWarning, match=r"Handle\._run hook failed"
        ) as record,
        aiotrace.tracing(trace_path),
    ):
        result = asyncio.run(_opaque_program(seen))
    assert result == 2 * sum(range(5)) + 20
    assert [w.category for w in record] == [aiotrace.TracingWarning]
    assert "RuntimeError: opaque task" in str(record[0].message)
    assert seen["Handle._run"] is original
    trace = read_trace(trace_path)
    (message,) = _hook_errors(trace)
    assert "Handle._run" in message and "RuntimeError: opaque task" in message
    (log,) = trace.logs(HOOK_ERROR)
    assert log.thread == threading.get_native_id()


def test_the_trace_of_a_program_whose_hook_failed_still_validates(
    trace_path: Path,
) -> None:
    """After a hook fails and is turned off, the trace (the part before the
    failure, and whatever the remaining hooks record) still validates."""
    with pytest.warns(aiotrace.TracingWarning), aiotrace.tracing(trace_path):
        asyncio.run(_opaque_program({}))
    problems = reader.validate(read_trace(trace_path).events)
    assert not problems, "\n".join(map(str, problems))


class NamelessCoroutine(collections.abc.Coroutine):  # type: ignore[type-arg]
    """Wraps a coroutine and forwards everything to it, except its name: the
    lookup of ``__qualname__`` fails (with something else than
    AttributeError)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def send(self, value: Any) -> Any:
        return self._inner.send(value)

    def throw(self, *args: Any) -> Any:
        return self._inner.throw(*args)

    def close(self) -> None:
        self._inner.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._inner.__await__()  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        if name == "__qualname__":
            raise LookupError("this coroutine has no name")
        return getattr(self._inner, name)


@pytest.mark.parametrize(
    "flavour",
    [
        "plain",
        pytest.param(
            "eager",
            marks=[
                EAGER_SKIP,
            ],
        ),
    ],
)
def test_a_coroutine_whose_name_lookup_fails_turns_off_the_create_task_hook(
    trace_path: Path, flavour: str
) -> None:
    """A task made from a coroutine object whose ``__qualname__`` lookup
    raises makes the create_task hook fail: one TracingWarning, one
    "aiotrace/hook-error" log naming the hook, the program's result is
    intact, the step and wakeup hooks are turned off with it, and the trace
    validates."""

    async def main() -> int:
        nameless = NamelessCoroutine(work(1))
        try:
            task = asyncio.create_task(nameless)
        except BaseException:
            nameless.close()  # no "never awaited" warning in a later test
            raise
        first = await task
        later = await asyncio.gather(work(2), work(3))
        return first + sum(later)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result, trace = trace_program(trace_path, main, flavour)
    assert result == 12
    assert [w.category for w in record] == [aiotrace.TracingWarning]
    assert "create_task hook failed" in str(record[0].message)
    (message,) = _hook_errors(trace)
    assert "BaseEventLoop.create_task" in message
    assert "LookupError" in message
    # The coroutine hooks fail together (a step hook alone would contradict
    # the missing creations): the tasks made after the failure are not in the
    # trace, and what was recorded before still validates.
    works = [
        cid
        for cid, label in trace.labels.items()
        if label.split(" ")[0] == work.__qualname__
    ]
    assert works == []
    assert trace.labels  # main was recorded before the failure


@EAGER_SKIP
def test_a_task_factory_error_on_the_eager_path_is_the_programs_own(
    trace_path: Path,
) -> None:
    """An eager task factory whose task constructor refuses a coroutine
    raises to the caller of create_task, exactly as without tracing: the
    constructor is called once, aiotrace issues no warning and keeps its
    hooks, and no coroutine appears for the refused task."""
    calls: list[str] = []
    seen: dict[str, Any] = {}

    class Refused(Exception):
        pass

    def constructor(coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        calls.append(coro.__name__)
        if coro.__name__ == "refused":
            raise Refused("not this one")
        return asyncio.Task(coro, **kwargs)

    async def refused() -> None:
        await asyncio.sleep(0)

    async def accepted() -> int:
        await asyncio.sleep(0.001)
        return 1

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.create_eager_task_factory(constructor))  # type: ignore[attr-defined]
        coro = refused()
        with pytest.raises(Refused):
            seen["refused"] = asyncio.create_task(coro)
        coro.close()
        n = await asyncio.create_task(accepted())
        loop.set_task_factory(None)
        return n

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, trace = trace_program(trace_path, main)
    assert result == 1
    assert calls == ["refused", "accepted"]
    assert [str(w.message) for w in caught] == []
    assert _hook_errors(trace) == []
    assert trace.coros(refused.__qualname__) == []
    assert trace.creation(trace.one(accepted.__qualname__))
    assert "refused" not in seen


def test_run_in_executor_with_a_process_pool_works_under_tracing(
    trace_path: Path,
) -> None:
    """``loop.run_in_executor`` with a ProcessPoolExecutor (spawned worker)
    returns the function's result under tracing, as it does without."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            return await loop.run_in_executor(pool, math.factorial, 20)

    result, _ = trace_program(trace_path, main)
    assert result == math.factorial(20)


# Options.


def test_runtime_events_false_records_annotations_only(trace_path: Path) -> None:
    """``runtime_events=False``: no hook is installed (Handle._run stays
    asyncio's, no gc callback, no watchdog thread), and the trace of a busy
    program (tasks, executor work, a stall, a GC) holds its annotations and
    nothing of the runtime: no state transition, range, sample or metric."""
    original = events.Handle.__dict__["_run"]
    callbacks = list(gc.callbacks)
    seen: dict[str, Any] = {}

    async def brew(n: int) -> int:
        await asyncio.sleep(0.001)
        return n

    async def main() -> int:
        seen["Handle._run"] = events.Handle.__dict__["_run"]
        seen["gc.callbacks"] = list(gc.callbacks)
        seen["threads"] = {t.name for t in threading.enumerate()}
        with aiotrace.region("order"):
            aiotrace.log("order", "42")
            total = sum(await asyncio.gather(*(brew(n) for n in range(3))))
            total += await asyncio.to_thread(len, "abc")
            time.sleep(0.15)
            gc.collect()
        return total

    result, trace = trace_program(trace_path, main, runtime_events=False)
    assert result == 6
    assert seen["Handle._run"] is original
    assert seen["gc.callbacks"] == callbacks
    assert "aiotrace-watchdog" not in seen["threads"]
    assert [ev.log.message for ev in trace.logs("order")] == ["42"]
    assert len(trace.of_kind(EventKind.REGION_BEGIN)) == 1
    assert len(trace.of_kind(EventKind.REGION_END)) == 1
    for kind in (
        EventKind.STATE_TRANSITION,
        EventKind.STACK_SAMPLE,
        EventKind.RANGE_BEGIN,
        EventKind.RANGE_END,
        EventKind.METRIC,
    ):
        assert trace.of_kind(kind) == [], kind
    assert trace.labels == {}


async def inner() -> None:
    await asyncio.sleep(0.001)  # mark: sleep


async def outer() -> None:
    await inner()  # mark: inner


async def stacked_main() -> None:
    await asyncio.create_task(outer())  # mark: await-task
    q: asyncio.Queue[int] = asyncio.Queue()
    asyncio.get_running_loop().call_later(0.001, q.put_nowait, 1)
    await q.get()  # mark: get


def _wait_stacks(trace: Trace, cid: int) -> list[tuple[StackFrame, ...]]:
    return [
        ev.state_transition.stack.frames
        for ev in trace.coro_transitions(cid)
        if ev.state_transition.new is CoroState.WAITING
        and ev.state_transition.old is CoroState.RUNNING
    ]


def test_block_stacks_records_the_await_stack_of_every_wait(trace_path: Path) -> None:
    """``block_stacks=True``: each RUNNING->WAITING transition carries the
    coroutine's await stack, innermost first: asyncio's sleep, then inner()
    at its await, then outer() at its await; main's waits name main at the
    line of each await (and Queue.get inside)."""
    _, trace = trace_program(trace_path, stacked_main, block_stacks=True)
    (frames,) = _wait_stacks(trace, trace.one(outer.__qualname__))
    assert frames[0].func == "sleep"
    assert frames[0].file.startswith(ASYNCIO_DIR)
    assert frames[1:] == (
        StackFrame(inner.__qualname__, __file__, marker_line(inner, "sleep")),
        StackFrame(outer.__qualname__, __file__, marker_line(outer, "inner")),
    )
    main_stacks = _wait_stacks(trace, trace.one(stacked_main.__qualname__))
    here = stacked_main.__qualname__
    assert main_stacks[0] == (
        StackFrame(here, __file__, marker_line(stacked_main, "await-task")),
    )
    assert main_stacks[1][0].func == "Queue.get"
    assert main_stacks[1][1:] == (
        StackFrame(here, __file__, marker_line(stacked_main, "get")),
    )
    # The transition's stack is also the event's.
    for ev in trace.coro_transitions():
        if ev.state_transition.new is CoroState.WAITING:
            assert ev.stack == ev.state_transition.stack


def test_without_block_stacks_waits_record_their_site(trace_path: Path) -> None:
    """By default (block_stacks=False) a wait records only its site: the
    library function that names its reason and the program's frame that
    awaits it, at its line; creation stacks are still recorded."""
    _, trace = trace_program(trace_path, stacked_main)
    waits = [
        ev
        for ev in trace.coro_transitions()
        if ev.state_transition.new is CoroState.WAITING
    ]
    assert waits
    assert all(len(ev.state_transition.stack.frames) <= 2 for ev in waits)
    sites = {ev.state_transition.stack.frames for ev in waits}
    here = stacked_main.__qualname__
    get = [s for s in sites if s and s[0].func == "Queue.get"]
    assert get and get[0][1:] == (
        StackFrame(here, __file__, marker_line(stacked_main, "get")),
    ), sites
    inner_sleep = [s for s in sites if s and s[-1].func == inner.__qualname__]
    assert inner_sleep and inner_sleep[0][0].func == "sleep", sites
    assert trace.creation(trace.one(outer.__qualname__)).stack


def test_tracing_twice_in_a_row_installs_the_hooks_afresh(tmp_path: Path) -> None:
    """Two traces one after the other each record their own program whole and
    validate; the hooks come and go with each."""
    original = events.Handle.__dict__["_run"]
    for i in range(2):
        path = tmp_path / f"run{i}.trace"
        result, trace = trace_program(path, lambda i=i: work(i))
        assert result == 2 * i
        assert trace.end(trace.one(work.__qualname__)) == "returned"
        assert events.Handle.__dict__["_run"] is original
    assert not aiotrace.is_enabled()
