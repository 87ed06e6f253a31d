"""The tracer keeps no user object alive: tasks, futures, results and
exceptions are freed as soon as the program drops them, while tracing is on.

Each test drops its last reference, runs ``gc.collect()`` and checks weak
references (and, for the leak of issue 12, the memory the program's results
occupy) before tracing stops: what the tracer held is freed only at stop().
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import tracemalloc
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from programs import FLAVOURS, read_trace, run

import aiotrace
from aiotrace import reader

PAYLOAD_BYTES = 128 << 10
"""The size of one child's result: a leak of N rounds keeps N times this."""

ROUNDS = 200


class Payload:
    """A child's result, weakly referenceable, allocated in this file."""

    __slots__ = ("__weakref__", "data")

    def __init__(self) -> None:
        self.data = bytearray(PAYLOAD_BYTES)


class Boom(Exception):
    """An exception a task raises (a subclass: built-in exceptions cannot be
    weakly referenced)."""


Tracer = Callable[..., None]


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Tracer]:
    """``traced(program, recorder="file", **options)`` calls ``program()``
    while tracing to a file (or with a FlightRecorder, then writes its
    snapshot); after the test every trace must validate."""
    paths: list[Path] = []

    def trace(
        program: Callable[[], Any], recorder: str = "file", **options: Any
    ) -> None:
        path = tmp_path / f"{len(paths)}.trace"
        paths.append(path)
        if recorder == "file":
            with aiotrace.tracing(path, **options):
                program()
            return
        assert recorder == "flight", recorder
        fr = aiotrace.FlightRecorder(max_bytes=1 << 20, **options)
        fr.start()
        try:
            program()
            fr.write_to(path)
        finally:
            fr.stop()

    yield trace
    for path in paths:
        problems = reader.validate(read_trace(path).events)
        assert not problems, "\n".join(map(str, problems))


async def _child() -> Payload:
    await asyncio.sleep(0)
    return Payload()


async def _round(kind: str, alive: weakref.WeakSet[Any]) -> None:
    """One gather, shield or wait of fresh children; every child task, the
    outer future and each result go into ``alive``."""
    if kind == "gather":
        a, b = asyncio.ensure_future(_child()), asyncio.ensure_future(_child())
        outer = asyncio.gather(a, b)
        alive.update((a, b, outer))
        alive.update(await outer)
    elif kind == "shield":
        inner = asyncio.ensure_future(_child())
        outer = asyncio.shield(inner)
        alive.update((inner, outer))
        alive.add(await outer)
    else:
        assert kind == "wait", kind
        task = asyncio.ensure_future(_child())
        alive.add(task)
        done, pending = await asyncio.wait([task])
        assert done == {task} and not pending
        alive.add(task.result())


def _live_futures() -> int:
    """How many asyncio futures (tasks included) are alive."""
    return sum(isinstance(o, asyncio.Future) for o in gc.get_objects())


def _payload_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by this file (the payloads) and still alive."""
    here = tracemalloc.Filter(True, __file__)
    return sum(s.size for s in snapshot.filter_traces([here]).statistics("filename"))


@pytest.mark.parametrize("recorder", ["file", "flight"])
@pytest.mark.parametrize("kind", ["gather", "shield", "wait"])
def test_memory_flat_over_many_rounds(
    traced: Callable[..., None], kind: str, recorder: str
) -> None:
    """200 gathers, shields or waits of children returning 128 kB each, while
    tracing (to a file, or with a FlightRecorder): every child, outer future
    and result is freed (so is every future asyncio makes inside, such as
    wait's waiter), and the memory they took stays freed.

    Before the fix each round's waker closure was cached by the tracer, with
    the children and their results: about 50 MB here."""
    found: dict[str, int] = {}

    async def main() -> None:
        alive: weakref.WeakSet[Any] = weakref.WeakSet()
        for _ in range(5):  # the first rounds fill the tracer's own caches
            await _round(kind, alive)
        await asyncio.sleep(0)
        gc.collect()
        futures = _live_futures()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(ROUNDS):
            await _round(kind, alive)
        await asyncio.sleep(0)  # asyncio holds what woke this step until it ends
        gc.collect()
        found["alive"] = len(alive)
        found["futures"] = _live_futures() - futures
        found["payload"] = _payload_bytes(tracemalloc.take_snapshot())
        found["growth"] = tracemalloc.get_traced_memory()[0] - before

    tracemalloc.start()
    try:
        traced(lambda: asyncio.run(main()), recorder)
    finally:
        tracemalloc.stop()
    assert found["alive"] == 0, found
    # Nor any future asyncio made inside (wait's waiter).
    assert found["futures"] == 0, found
    # Only the WeakSet's own bookkeeping, no payload.
    assert found["payload"] < PAYLOAD_BYTES, found
    # Events not yet drained and the tracer's tables may grow a little;
    # a leak of the results alone would be ROUNDS * PAYLOAD_BYTES (25+ MB).
    assert found["growth"] < ROUNDS * PAYLOAD_BYTES // 4, found


async def _dead(refs: list[weakref.ref[Any]]) -> list[str]:
    """Names the referents still alive once the running step is over (asyncio
    itself holds the future that woke it until then) and garbage collected."""
    await asyncio.sleep(0)
    gc.collect()
    return [repr(r()) for r in refs if r() is not None]


@pytest.mark.parametrize("block_stacks", [False, True])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_finished_task_and_its_exception_are_freed(
    traced: Tracer, flavour: str, block_stacks: bool
) -> None:
    """A task that raised, once awaited and dropped, is freed with its
    exception and its coroutine while tracing is on (with and without
    block_stacks, which walks the await chain of every blocked task)."""
    refs: list[weakref.ref[Any]] = []
    alive: list[list[str]] = []

    async def fails(ready: asyncio.Event) -> None:
        await ready.wait()
        raise Boom("boom")

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(fails(ready))
        await asyncio.sleep(0)
        ready.set()
        with pytest.raises(Boom) as info:
            await task
        refs.extend((weakref.ref(info.value), weakref.ref(task)))
        refs.append(weakref.ref(task.get_coro()))  # type: ignore[arg-type]
        del task, info
        alive.append(await _dead(refs))

    traced(lambda: run(main, flavour), block_stacks=block_stacks)
    assert alive == [[]]
    assert len(refs) == 3


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cancelled_task_is_freed(traced: Tracer, flavour: str) -> None:
    """A task cancelled while it waits, once awaited and dropped, is freed
    with the CancelledError it ended with."""
    refs: list[weakref.ref[Any]] = []
    alive: list[list[str]] = []

    async def waits(started: asyncio.Event) -> None:
        started.set()
        await asyncio.Event().wait()

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(waits(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        refs.append(weakref.ref(task))
        del task
        alive.append(await _dead(refs))

    traced(lambda: run(main, flavour))
    assert alive == [[]]


@pytest.mark.parametrize("how", ["call_soon", "call_later", "threadsafe"])
def test_future_and_result_are_freed(traced: Tracer, how: str) -> None:
    """A future completed by a plain loop callback (``fut.set_result`` run
    by call_soon, call_later, or call_soon_threadsafe from another thread),
    once awaited and dropped, is freed with its result: the tracer names the
    waker without keeping the callback, which is bound to the future."""
    refs: list[weakref.ref[Any]] = []
    alive: list[list[str]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(3):
            fut: asyncio.Future[Payload] = loop.create_future()
            result = Payload()
            refs.extend((weakref.ref(fut), weakref.ref(result)))
            if how == "call_soon":
                loop.call_soon(fut.set_result, result)
            elif how == "call_later":
                loop.call_later(0.001, fut.set_result, result)
            else:
                thread = threading.Thread(
                    target=loop.call_soon_threadsafe, args=(fut.set_result, result)
                )
                thread.start()
                thread.join()
                del thread
            del result
            assert isinstance(await fut, Payload)
            del fut
        alive.append(await _dead(refs))

    traced(lambda: asyncio.run(main()))
    assert alive == [[]]
    assert len(refs) == 6


def test_region_does_not_keep_its_coroutine_alive(traced: Tracer) -> None:
    """A region open while a child task is created sits in the child's
    context; the coroutine that began it is still freed when it ends, while
    the child lives on."""
    refs: list[weakref.ref[Any]] = []
    alive: list[list[str]] = []

    async def child(release: asyncio.Event) -> None:
        await release.wait()

    async def parent(release: asyncio.Event) -> asyncio.Task[None]:
        with aiotrace.region("spawn"):
            return asyncio.create_task(child(release))

    async def main() -> None:
        release = asyncio.Event()
        spawner = asyncio.create_task(parent(release))
        kid = await spawner
        refs.append(weakref.ref(spawner))
        del spawner
        alive.append(await _dead(refs))
        release.set()
        await kid

    traced(lambda: asyncio.run(main()))
    assert alive == [[]]


class _Done(Exception):
    """What the inner task group's body raises."""


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_task_group_exception_has_no_other_referrer(
    traced: Tracer, flavour: str
) -> None:
    """anyio's parent-task refcycle check, while tracing: once a nested task
    group's ExceptionGroup is caught and dropped, the exception inside it
    has no referrer at all.

    Two holds made it fail: the waker table kept the callback that woke the
    host task, and (on 3.12+) a hook's frame object, linked as the f_back of
    a frame in the exception's traceback, kept the handle it ran."""
    found: list[list[str]] = []

    async def main() -> None:
        tg = anyio.create_task_group()

        async def coro_fn() -> None:
            async with tg:
                raise _Done

        exc: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg2:
                tg2.start_soon(coro_fn)
        except BaseExceptionGroup as group:
            inner = group.exceptions[0]
            assert isinstance(inner, BaseExceptionGroup)
            exc = inner.exceptions[0]
            del inner
        assert isinstance(exc, _Done)
        found.append([type(r).__name__ for r in gc.get_referrers(exc)])

    traced(lambda: run(main, flavour))
    assert found == [[]]


def test_unclosed_loop_and_its_callbacks_are_freed(traced: Tracer) -> None:
    """A loop dropped without close() (its selector still holding a reader
    callback bound to a program object) is freed with that object while
    tracing: the tracer holds the loop and its selector weakly."""
    refs: list[weakref.ref[Any]] = []
    alive: list[list[str]] = []

    class Reader:
        def on_readable(self) -> None:
            """Never called: nothing is written."""

    def program() -> None:
        a, b = socket.socketpair()
        try:
            loop = asyncio.new_event_loop()
            reader_ = Reader()
            loop.add_reader(a.fileno(), reader_.on_readable)
            loop.run_until_complete(asyncio.sleep(0))
            refs.extend((weakref.ref(loop), weakref.ref(reader_)))
            # The loop is garbage in a cycle (loop -> selector -> reader
            # handle -> loop), and its self-pipe sockets hang off it.
            # CPython's collector finalizes garbage in no fixed order: when
            # a socket is finalized first, the loop's own __del__ fails to
            # unregister its fd (-1) and pytest reports that as unraisable,
            # traced or not. Keeping the self-pipe outside the garbage
            # makes the loop's finalizer run as it would in a program.
            self_pipe = [getattr(loop, "_ssock", None), getattr(loop, "_csock", None)]
            del loop, reader_
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)  # unclosed loop
                gc.collect()
            alive.append([repr(r()) for r in refs if r() is not None])
            del self_pipe
        finally:
            a.close()
            b.close()

    traced(program)
    assert alive == [[]]


def test_annotation_arguments_are_not_kept(traced: Tracer) -> None:
    """An object passed where an annotation takes text (a log message or
    category, a region or task type) is recorded as its text: the events
    waiting to be drained do not keep it alive."""
    refs: list[weakref.ref[Any]] = []
    alive: list[list[str]] = []

    def program() -> None:
        exc = Boom("boom")
        refs.append(weakref.ref(exc))
        aiotrace.log("category", exc)  # type: ignore[arg-type]
        aiotrace.log(exc, "message")  # type: ignore[arg-type]
        aiotrace.logf(exc, "%s", "message")  # type: ignore[arg-type]
        with aiotrace.region(exc) as r:  # type: ignore[arg-type]
            assert r.type == "boom"
        with aiotrace.new_task(exc) as t:  # type: ignore[arg-type]
            assert t.type == "boom"
        del exc, r, t
        gc.collect()
        alive.append([repr(r()) for r in refs if r() is not None])

    traced(program)
    assert alive == [[]]
