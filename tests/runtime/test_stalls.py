"""Loop stalls: a step or callback holding its loop past ``stall_threshold``
is a "loop stall" range on the loop, beginning when the step began, with
stack samples the watchdog thread takes while it lasts."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import hold_until_sampled, wait_until
from programs import (
    AIOTRACE_DIR,
    EAGER_SKIP,
    Trace,
    marker_line,
    read_trace,
    run,
    trace_program,
)

import aiotrace
from aiotrace.reader import NO_COROUTINE, Event, ResourceID, ResourceKind, StackFrame

MS = 1_000_000


async def stalling_step() -> None:
    """Its second step holds the loop until the watchdog took 5 samples."""
    await asyncio.sleep(0)
    hold_until_sampled(5)  # mark: stall


def _stall_of_step(trace: Trace, start: Event) -> tuple[Event, Event]:
    """The one stall range that begins (within 1 ms) when ``start`` began."""
    found = [
        (b, e) for b, e in trace.ranges("loop stall") if abs(b.time - start.time) <= MS
    ]
    assert len(found) == 1, (start, trace.ranges("loop stall"))
    return found[0]


def _samples_in(trace: Trace, begin: Event, end: Event) -> list[Event]:
    return [s for s in trace.samples() if begin.time <= s.time <= end.time]


def _samples_only_in_stalls(trace: Trace) -> None:
    """Asserts that samples are taken only during stalls: each lies within a
    stall range of its own loop. (A loaded machine may add stalls of its own,
    steps the OS kept off the CPU past the threshold: their samples are in
    their ranges too.)"""
    stalls = trace.ranges("loop stall")
    for s in trace.samples():
        scope = ResourceID(ResourceKind.LOOP, s.loop)
        assert any(
            b.range.scope == scope and b.time <= s.time <= e.time for b, e in stalls
        ), (s, stalls)


def _the_stall_sampled_in(trace: Trace, func: str) -> tuple[Event, Event]:
    """The one stall range whose samples show ``func`` (a loaded machine may
    add other stalls; none of them may show it)."""
    found = [
        (b, e)
        for b, e in trace.ranges("loop stall")
        if any(
            func in [f.func for f in s.stack.frames] for s in _samples_in(trace, b, e)
        )
    ]
    assert len(found) == 1, found
    return found[0]


def _held_at(s: Event, where: StackFrame) -> None:
    """Asserts sample ``s`` caught hold_until_sampled called at ``where``."""
    assert s.stack.frames[0].func == hold_until_sampled.__name__, s.stack
    assert s.stack.frames[1] == where, s.stack


def test_a_blocking_sleep_in_a_coroutine_is_a_sampled_stall(
    trace_path: Path, flavour: str
) -> None:
    """A coroutine step that blocks the loop (until the watchdog has sampled
    it 5 times) with stall_threshold=0.1: one "loop stall" range scoped to
    the loop, lasting at least the threshold, beginning when the stalling
    step began (its RUNNABLE->RUNNING) and ending when it ended; at least 5
    stack samples during it, each naming the stalling coroutine, the loop
    and the loop's thread, whose stack is the blocking call (innermost)
    called from the coroutine function at its line in this file."""

    async def main() -> None:
        await asyncio.create_task(stalling_step())

    _, trace = trace_program(trace_path, main, flavour, stall_threshold=0.1)
    cid = trace.one(stalling_step.__qualname__)
    (lid,) = trace.loops()
    step = trace.starts(cid)[1]
    step_end = trace.step_end_after(cid, step)
    begin, end = _stall_of_step(trace, step)
    assert begin.range.scope == ResourceID(ResourceKind.LOOP, lid)
    assert end.range.scope == begin.range.scope
    assert end.time - begin.time >= 100 * MS
    assert abs(end.time - step_end.time) <= MS

    samples = _samples_in(trace, begin, end)
    assert len(samples) >= 5
    where = StackFrame(
        stalling_step.__qualname__, __file__, marker_line(stalling_step, "stall")
    )
    for s in samples:
        assert s.coroutine == cid
        assert s.loop == lid
        assert s.thread == threading.get_native_id()
        _held_at(s, where)
    _samples_only_in_stalls(trace)


@EAGER_SKIP
def test_a_stall_in_an_eager_first_step_samples_the_eager_child(
    trace_path: Path,
) -> None:
    """With eager tasks, a child that blocks the loop in its first step stalls
    inside its creator's step: the range begins when the creator's step
    began, and the samples name the child (the coroutine actually running),
    at its line."""

    async def eager_staller() -> None:
        hold_until_sampled(3)  # mark: stall
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.create_task(eager_staller())

    _, trace = trace_program(trace_path, main, "eager", stall_threshold=0.1)
    child = trace.one(eager_staller.__qualname__)
    main_id = trace.one(main.__qualname__)
    begin, end = _stall_of_step(trace, trace.starts(main_id)[0])
    samples = _samples_in(trace, begin, end)
    assert len(samples) >= 3
    where = StackFrame(
        eager_staller.__qualname__, __file__, marker_line(eager_staller, "stall")
    )
    for s in samples:
        assert s.coroutine == child
        _held_at(s, where)


def hog() -> None:
    """A plain loop callback that blocks the loop (until sampled 3 times)."""
    hold_until_sampled(3)  # mark: hog


def test_a_blocking_plain_callback_is_a_stall_without_a_coroutine(
    trace_path: Path,
) -> None:
    """A plain callback (``loop.call_soon``) that holds the loop is a stall
    too; its samples name no coroutine and their innermost frame is the
    callback's line."""

    async def main() -> None:
        asyncio.get_running_loop().call_soon(hog)
        await asyncio.sleep(0.01)

    _, trace = trace_program(trace_path, main, stall_threshold=0.1)
    begin, end = _the_stall_sampled_in(trace, "hog")
    assert end.time - begin.time >= 100 * MS
    samples = _samples_in(trace, begin, end)
    assert len(samples) >= 3
    for s in samples:
        assert s.coroutine == NO_COROUTINE
        _held_at(s, StackFrame("hog", __file__, marker_line(hog, "hog")))
    _samples_only_in_stalls(trace)


async def crunch() -> int:
    """Its second step is one long C call that holds the GIL."""
    await asyncio.sleep(0)
    return sum(range(25_000_000))  # mark: crunch


def test_a_long_c_call_is_a_stall_even_if_it_cannot_be_sampled(
    trace_path: Path,
) -> None:
    """A C call that holds the GIL (``sum(range(25_000_000))`` in one
    expression) can't be sampled while it runs, but its stall range is still
    recorded, from the step's start to its end; any sample taken names the
    crunching coroutine."""

    async def main() -> int:
        return await asyncio.create_task(crunch())

    result, trace = trace_program(trace_path, main, stall_threshold=0.05)
    assert result == sum(range(25_000_000))
    cid = trace.one(crunch.__qualname__)
    step = trace.starts(cid)[1]
    begin, end = _stall_of_step(trace, step)
    assert abs(end.time - trace.step_end_after(cid, step).time) <= MS
    assert end.time - begin.time >= 50 * MS
    for s in _samples_in(trace, begin, end):
        assert s.coroutine == cid


def test_two_stalling_steps_are_two_stalls(trace_path: Path) -> None:
    """Two consecutive stalling steps of one coroutine are two separate
    ranges, each beginning at its own step, each with its own samples."""

    async def twice() -> None:
        await asyncio.sleep(0)
        hold_until_sampled(3)
        await asyncio.sleep(0)
        hold_until_sampled(3)

    async def main() -> None:
        await asyncio.create_task(twice())

    _, trace = trace_program(trace_path, main, stall_threshold=0.05)
    cid = trace.one(twice.__qualname__)
    starts = trace.starts(cid)
    first = _stall_of_step(trace, starts[1])
    second = _stall_of_step(trace, starts[2])
    assert first[1].time <= second[0].time
    for begin, end in (first, second):
        assert end.time - begin.time >= 50 * MS
        assert len(_samples_in(trace, begin, end)) >= 3


def test_steps_shorter_than_the_threshold_are_not_stalls(trace_path: Path) -> None:
    """Steps that block the loop for less than the threshold (20 ms against
    2 s: far more than a loaded machine keeps a thread off the CPU) record no
    stall and no sample."""

    async def main() -> None:
        for _ in range(3):
            time.sleep(0.02)
            await asyncio.sleep(0)

    _, trace = trace_program(trace_path, main, stall_threshold=2.0)
    assert len(trace.starts(trace.one(main.__qualname__))) == 4
    assert trace.ranges("loop stall") == []
    assert trace.samples() == []


def test_stall_threshold_none_records_no_stall(trace_path: Path) -> None:
    """``stall_threshold=None`` turns stall detection off: a 0.15 s blocking
    step records no range and no sample, while metrics still flow."""

    async def main() -> None:
        await asyncio.sleep(0)
        time.sleep(0.15)

    _, trace = trace_program(
        trace_path, main, stall_threshold=None, metrics_interval=0.02
    )
    assert trace.ranges("loop stall") == []
    assert trace.samples() == []
    assert trace.metrics("/memory/rss:bytes")


def test_no_stall_detection_and_no_metrics_means_no_watchdog(trace_path: Path) -> None:
    """With ``stall_threshold=None`` and ``metrics_interval=None`` there is
    nothing to watch: no watchdog thread runs, and none appears in the
    trace; coroutines are still traced."""
    seen: list[str] = []

    async def main() -> None:
        seen.extend(t.name for t in threading.enumerate())
        time.sleep(0.05)
        await asyncio.sleep(0)

    _, trace = trace_program(
        trace_path, main, stall_threshold=None, metrics_interval=None
    )
    assert "aiotrace-watchdog" not in seen
    names = set().union(*trace.thread_names().values())
    assert "aiotrace-watchdog" not in names
    assert trace.ranges("loop stall") == []
    assert trace.one(main.__qualname__)


def test_a_stall_in_one_of_two_loops_is_on_that_loop_only(trace_path: Path) -> None:
    """Two loops in two threads, one of which stalls: the stall range of the
    stalling step is scoped to the stalling thread's loop, its samples carry
    that thread and that loop, and the other loop has no stall. (Any other
    stall a loaded machine adds, a step the OS kept off the CPU past the
    threshold, must be a step of that loop's own, sampled on its own
    thread.)"""
    native: dict[str, int] = {}

    async def staller() -> None:
        native["staller"] = threading.get_native_id()
        await asyncio.sleep(0.01)
        hold_until_sampled(3)

    async def ticker() -> None:
        native["ticker"] = threading.get_native_id()
        for _ in range(30):
            await asyncio.sleep(0.01)

    threads = [
        threading.Thread(target=run, args=(main,), name=main.__name__)
        for main in (staller, ticker)
    ]
    with aiotrace.tracing(trace_path, stall_threshold=0.1):
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    trace = read_trace(trace_path)
    trace.check()
    lid_of = {thread: lid for lid, thread in trace.loops().items()}
    stall_loop = ResourceID(ResourceKind.LOOP, lid_of[native["staller"]])
    cid = trace.one(staller.__qualname__)
    begin, end = _stall_of_step(trace, trace.starts(cid)[1])
    assert begin.range.scope == stall_loop
    samples = _samples_in(trace, begin, end)
    assert len(samples) >= 3
    for s in samples:
        assert s.thread == native["staller"]
        assert s.loop == lid_of[native["staller"]]
        assert s.coroutine == cid
    # Only this stall began then: the other loop was not made to stall too.
    at_once = [
        b for b, _ in trace.ranges("loop stall") if abs(b.time - begin.time) <= MS
    ]
    assert at_once == [begin]
    _samples_only_in_stalls(trace)
    for s in trace.samples():
        thread = native["staller"] if s.loop == stall_loop.id else native["ticker"]
        assert s.thread == thread, s


def test_the_watchdog_exits_when_the_sink_fails() -> None:
    """A sink that fails stops tracing from inside the writer thread; the
    watchdog thread exits too, rather than watching a trace that is over."""

    class Broken:
        def write(self, data: bytes) -> int:
            raise OSError("disk gone")

    def watchdogs() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "aiotrace-watchdog"]

    before = len(watchdogs())
    tracer = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracer = aiotrace.start(Broken())
            # The error is set before the writer thread issues the warning:
            # wait for both, or a loaded machine loses the warning.
            deadline = time.monotonic() + 10
            while (tracer.error is None or not caught) and time.monotonic() < deadline:
                time.sleep(0.01)
        assert tracer.error is not None
        assert [w.category for w in caught] == [aiotrace.TracingWarning]
        deadline = time.monotonic() + 10
        while len(watchdogs()) > before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(watchdogs()) == before
    finally:
        # Collect the failed tracer even when an assertion failed, so the
        # next test does not inherit it.
        if tracer is not None:
            with pytest.raises(aiotrace.TracingError):
                aiotrace.stop()


# --- sampling that names the blocking line -----------------------------------


def _watchdog() -> Any:
    """The running trace's watchdog (internal: the tests wait on its counts)."""
    session = aiotrace._session.current()
    assert session is not None and session.runtime is not None
    wd = session.runtime._watchdog
    assert wd is not None
    return wd


def _samples_taken() -> int:
    """Samples the watchdog has taken of the calling thread's stall so far."""
    return int(_watchdog()._samples.get(threading.get_ident(), 0))


async def spin_until_sampled(n: int) -> None:
    """A pure-Python CPU loop that holds the loop until ``n`` samples of it
    have been taken (so no clock decides how many)."""
    await asyncio.sleep(0)
    while _samples_taken() < n:  # mark: spin
        pass


def _the_stall_samples(trace: Trace, cid: int) -> list[Event]:
    step = trace.starts(cid)[1]
    begin, end = _stall_of_step(trace, step)
    return _samples_in(trace, begin, end)


def test_a_pure_python_loop_is_sampled_densely_at_its_line(trace_path: Path) -> None:
    """A CPU-bound pure-Python loop that holds the loop gets at least 40
    samples (one every STALL_TICK while it stalls), each at the loop's line (in its own frame, or
    in the helper the loop calls); none shows one of aiotrace's own frames."""

    async def main() -> None:
        await asyncio.create_task(spin_until_sampled(40))

    _, trace = trace_program(trace_path, main, stall_threshold=0.05)
    cid = trace.one(spin_until_sampled.__qualname__)
    samples = _the_stall_samples(trace, cid)
    assert len(samples) >= 40
    where = StackFrame(
        spin_until_sampled.__qualname__,
        __file__,
        marker_line(spin_until_sampled, "spin"),
    )
    for s in samples:
        # The loop's line, innermost or calling the helper it spins on.
        assert where in s.stack.frames[:3], s.stack.frames[:3]
        assert not any(f.file.startswith(AIOTRACE_DIR) for f in s.stack.frames)


async def hold_the_gil() -> None:
    """Its last step is a builtin C call that holds the GIL (sum over a
    range of 25 M: some 0.2-1 s), then spins until sampled. The drain
    thread is kept from waking meanwhile, so that the watchdog is the one
    thread waiting for the GIL when the call ends."""
    session = aiotrace._session.current()
    assert session is not None
    drainer = session.drainer
    interval, drainer.interval = drainer.interval, 3600.0
    await asyncio.sleep(2 * interval)  # its wait in progress ends
    total = sum(range(25_000_000))  # mark: hold
    while _samples_taken() < 1:
        pass
    drainer.interval = interval
    drainer._wake.set()
    assert total


def test_a_c_call_that_holds_the_gil_is_named_by_its_line(trace_path: Path) -> None:
    """The watchdog cannot sample while a C call holds the GIL; the first
    sample it takes after it, at the bytecode boundary that ends the call,
    names the line of the call, not the line after it."""

    async def main() -> None:
        await asyncio.create_task(hold_the_gil())

    _, trace = trace_program(
        trace_path, main, stall_threshold=0.05, metrics_interval=None
    )
    cid = trace.one(hold_the_gil.__qualname__)
    samples = _the_stall_samples(trace, cid)
    assert samples
    first = min(samples, key=lambda s: s.time)
    assert first.stack.frames[0] == StackFrame(
        hold_the_gil.__qualname__, __file__, marker_line(hold_the_gil, "hold")
    )


async def wait_on_lock(lock: threading.Lock) -> None:
    """Its second step blocks in lock.acquire() (which releases the GIL)
    until another thread releases the lock."""
    await asyncio.sleep(0)
    lock.acquire()  # mark: acquire


def test_a_c_call_that_releases_the_gil_is_sampled_all_along(trace_path: Path) -> None:
    """A blocking call that releases the GIL (a lock held by another thread,
    released once 30 samples are taken) is sampled throughout: every sample
    of the stall names the line of the call."""
    lock = threading.Lock()
    lock.acquire()
    ident: list[int] = []

    def release_when_sampled() -> None:
        wait_until(
            lambda: ident and _watchdog()._samples.get(ident[0], 0) >= 30,
            "30 samples of the blocked loop",
        )
        lock.release()

    async def main() -> None:
        ident.append(threading.get_ident())
        helper = threading.Thread(target=release_when_sampled)
        helper.start()
        await asyncio.create_task(wait_on_lock(lock))
        helper.join()

    _, trace = trace_program(trace_path, main, stall_threshold=0.05)
    cid = trace.one(wait_on_lock.__qualname__)
    samples = _the_stall_samples(trace, cid)
    assert len(samples) >= 30
    where = StackFrame(
        wait_on_lock.__qualname__, __file__, marker_line(wait_on_lock, "acquire")
    )
    assert {s.stack.frames[0] for s in samples} == {where}


def test_a_callback_stall_shows_no_aiotrace_frame(trace_path: Path) -> None:
    """A plain loop callback (run through aiotrace's Handle._run hook) that
    stalls is sampled without the hook's frame: asyncio's Handle._run is
    followed directly by the callback."""
    done = threading.Event()

    def blocking_callback() -> None:
        while _samples_taken() < 5:  # mark: callback
            pass
        done.set()

    async def main() -> None:
        asyncio.get_running_loop().call_soon(blocking_callback)
        while not done.is_set():
            await asyncio.sleep(0.001)

    _, trace = trace_program(trace_path, main, stall_threshold=0.05)
    samples = _samples_in(
        trace, *_the_stall_sampled_in(trace, blocking_callback.__qualname__)
    )
    assert len(samples) >= 5
    line = marker_line(blocking_callback, "callback")
    for s in samples:
        files = [f.file for f in s.stack.frames]
        assert not any(f.startswith(AIOTRACE_DIR) for f in files), files
        funcs = [f.func for f in s.stack.frames]
        at = funcs.index(blocking_callback.__qualname__)
        assert s.stack.frames[at].line == line
        assert funcs[at + 1] == "Handle._run"


@pytest.mark.parametrize("enabled", [True, False])
def test_sampling_keeps_the_programs_gc_state(trace_path: Path, enabled: bool) -> None:
    """While the watchdog samples a stalled loop 50 times, the program never
    sees its GC state change: disabled stays disabled (the watchdog must not
    re-enable it), enabled stays enabled."""
    seen: set[bool] = set()

    async def spin() -> None:
        await asyncio.sleep(0)
        while _samples_taken() < 50:
            seen.add(gc.isenabled())

    async def main() -> None:
        await asyncio.create_task(spin())

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        trace_program(trace_path, main, stall_threshold=0.05)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == {enabled}
