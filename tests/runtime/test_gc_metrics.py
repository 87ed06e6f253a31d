"""The runtime's own events: garbage collections as ranges with a collected
metric, and the metrics sampled every ``metrics_interval``."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

from helpers import hold_until_metrics_posted
from programs import read_trace, run, trace_program

import aiotrace
from aiotrace.reader import NO_LOOP, EventKind, ResourceID, ResourceKind

GC_RANGES = ("GC gen0", "GC gen1", "GC gen2")
COLLECTED = "/gc/collected:objects"
ALIVE = "/coroutines/alive:coroutines"
RSS = "/memory/rss:bytes"
LAG = "/loop/lag:seconds"
READY = "/loop/ready:callbacks"


class Node:
    """A node of a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.peer: Node = self


def test_gc_collect_in_a_coroutine_is_a_gen2_range_with_a_collected_metric(
    trace_path: Path,
) -> None:
    """``gc.collect()`` in a traced coroutine is a "GC gen2" range (scope
    none) on the loop's thread, inside that coroutine; it ends with a
    "/gc/collected:objects" metric at the same time, whose value is what
    gc.collect() returned (at least the 1000 cycles made garbage)."""

    async def main() -> int:
        # No automatic collection in the coroutine: only the explicit one.
        gc.disable()
        try:
            cycles = [Node() for _ in range(1000)]
            await asyncio.sleep(0)
            del cycles  # now garbage only the cyclic collector frees
            return gc.collect()
        finally:
            gc.enable()

    collected, trace = trace_program(trace_path, main)
    assert collected >= 1000
    main_id = trace.one(main.__qualname__)
    ours = [
        (b, e)
        for b, e in trace.ranges("GC gen2")
        if b.coroutine == main_id and b.thread == threading.get_native_id()
    ]
    assert len(ours) == 1
    begin, end = ours[0]
    assert begin.range.scope == ResourceID(ResourceKind.NONE, 0)
    (lid,) = trace.loops()
    assert begin.loop == lid
    after = trace.events[trace.events.index(end) + 1]
    assert after.kind is EventKind.METRIC
    assert after.metric == (COLLECTED, collected)
    assert (after.time, after.thread) == (end.time, end.thread)


def test_every_collection_is_a_whole_range_followed_by_its_metric(
    trace_path: Path,
) -> None:
    """A program that makes a lot of garbage triggers collections on its own:
    every GC range is named "GC gen0/1/2", begins and ends on one thread with
    nothing else of GC in between, and each end is followed by the collected
    metric of that thread, at the same time; the generations and counts are
    those the interpreter reports to gc.callbacks, in order."""

    async def churn() -> None:
        for _ in range(20):
            for _ in range(2000):
                Node()
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(churn(), churn())

    # What the interpreter itself reports for each collection, in order.
    reported: list[tuple[str, int]] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            reported.append((GC_RANGES[info["generation"]], info["collected"]))

    gc.callbacks.append(on_gc)
    try:
        _, trace = trace_program(trace_path, main)
    finally:
        gc.callbacks.remove(on_gc)
    gc_events = [
        ev
        for ev in trace.events
        if ev.kind in (EventKind.RANGE_BEGIN, EventKind.RANGE_END)
        and ev.range.name.startswith("GC")
    ]
    assert gc_events, "40,000 cycles collected without a collection"
    by_thread: dict[int, list[str]] = {}
    traced: list[tuple[str, int | float]] = []
    for ev in gc_events:
        assert ev.range.name in GC_RANGES
        seq = by_thread.setdefault(ev.thread, [])
        if ev.kind is EventKind.RANGE_BEGIN:
            assert not seq or seq[-1] == "end", seq
            seq.append("begin")
        else:
            assert seq and seq[-1] == "begin", seq
            seq.append("end")
            nxt = trace.events[trace.events.index(ev) + 1]
            assert nxt.kind is EventKind.METRIC and nxt.metric.name == COLLECTED
            assert (nxt.time, nxt.thread) == (ev.time, ev.thread)
            traced.append((ev.range.name, nxt.metric.value))
    assert len(trace.metrics(COLLECTED)) == sum(
        1 for ev in gc_events if ev.kind is EventKind.RANGE_END
    )
    # Each traced collection has the generation and the collected count the
    # interpreter reported, in the same order (the ones before and after
    # tracing are not in the trace).
    assert traced
    assert any(reported[k : k + len(traced)] == traced for k in range(len(reported))), (
        traced,
        reported,
    )


def test_metrics_are_sampled_every_interval(trace_path: Path) -> None:
    """With metrics_interval=0.05, a program that waits for three samples
    gets them for every metric: coroutines alive (counting its sleeping
    tasks) and resident memory from the watchdog thread (no loop), and the
    loop's lag and ready callbacks recorded on the loop's own thread (ev.loop
    = the loop); each lag is at most the time since tracing began, and the
    ready count is a whole number of callbacks."""

    async def sleeper(stop: asyncio.Event) -> None:
        await stop.wait()

    async def main() -> None:
        stop = asyncio.Event()
        sleepers = [asyncio.create_task(sleeper(stop)) for _ in range(5)]
        await asyncio.sleep(0)  # they start, then wait
        for _ in range(3):  # three samples, however long they take
            hold_until_metrics_posted()
            await asyncio.sleep(0)  # the loop runs the sampler's callback
        stop.set()
        await asyncio.gather(*sleepers)

    _, trace = trace_program(trace_path, main, metrics_interval=0.05)
    (lid,) = trace.loops()
    watchdog = [
        tid
        for tid, names in trace.thread_names().items()
        if "aiotrace-watchdog" in names
    ]
    assert len(watchdog) == 1
    for name in (ALIVE, RSS):
        got = trace.metrics(name)
        assert len(got) >= 3, name
        assert {ev.thread for ev in got} == set(watchdog)
        assert {ev.loop for ev in got} == {NO_LOOP}
    assert max(ev.metric.value for ev in trace.metrics(ALIVE)) >= 6  # main + 5
    assert min(ev.metric.value for ev in trace.metrics(RSS)) > 1 << 20
    t0 = trace.events[0].time
    for name in (LAG, READY):
        got = trace.metrics(name)
        assert len(got) >= 3, name
        assert {ev.thread for ev in got} == {threading.get_native_id()}
        assert {ev.loop for ev in got} == {lid}
    for ev in trace.metrics(LAG):
        assert 0 <= ev.metric.value <= (ev.time - t0) / 1e9
    assert all(
        isinstance(ev.metric.value, int) and ev.metric.value >= 0
        for ev in trace.metrics(READY)
    )


def test_loop_lag_and_ready_while_the_loop_is_blocked(trace_path: Path) -> None:
    """The lag metric measures how long the sampler's callback waited for the
    loop, and the ready metric counts the callbacks queued behind it: a step
    that holds the loop for 0.1 s after the sampler posted its callback, and
    queues 7 callbacks meanwhile, gets a lag of at least 0.1 s and a ready
    count of those 7 plus the loop's own (metrics_interval=10: one sample in
    the run)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hold_until_metrics_posted()
        time.sleep(0.1)  # a lower bound for the lag, not a hope
        for _ in range(7):
            loop.call_soon(int)
        await asyncio.sleep(0)

    _, trace = trace_program(trace_path, main, metrics_interval=10)
    (lag,) = trace.metrics(LAG)
    assert lag.metric.value >= 0.1
    (ready,) = trace.metrics(READY)
    # Behind it: the 7, the task's next step (sleep(0)), and the loop's own
    # self-pipe reader once the sampler's wakeup byte was seen (asyncio's
    # call_soon_threadsafe queues the callback, then writes that byte).
    assert ready.metric.value in (8, 9)
    assert ready.time == lag.time


def test_each_loop_in_its_thread_reports_its_own_lag(trace_path: Path) -> None:
    """Two loops in two threads, each waiting for two of its samples: each
    gets lag and ready metrics on its own thread, carrying its own loop id."""
    native: dict[str, int] = {}

    async def main() -> None:
        native[threading.current_thread().name] = threading.get_native_id()
        for _ in range(2):
            hold_until_metrics_posted()
            await asyncio.sleep(0)

    threads = [
        threading.Thread(target=run, args=(main,), name=f"metered-{i}")
        for i in range(2)
    ]
    with aiotrace.tracing(trace_path, metrics_interval=0.05):
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    trace = read_trace(trace_path)
    trace.check()
    lid_of = {thread: lid for lid, thread in trace.loops().items()}
    assert set(lid_of) == set(native.values())
    for thread, lid in lid_of.items():
        lags = [ev for ev in trace.metrics(LAG) if ev.thread == thread]
        assert len(lags) >= 2
        assert {ev.loop for ev in lags} == {lid}
        readies = [ev for ev in trace.metrics(READY) if ev.thread == thread]
        assert len(readies) == len(lags)


def test_no_metrics_interval_means_no_sampled_metrics(trace_path: Path) -> None:
    """``metrics_interval=None`` turns the sampled metrics off; GC ranges and
    their collected metric stay."""

    async def main() -> None:
        await asyncio.sleep(0.15)
        gc.collect()

    _, trace = trace_program(trace_path, main, metrics_interval=None)
    for name in (ALIVE, RSS, LAG, READY):
        assert trace.metrics(name) == [], name
    assert trace.ranges("GC gen2")
    assert trace.metrics(COLLECTED)
