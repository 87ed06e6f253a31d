"""Generation cuts never split a step: events recorded inside a step keep
their coroutine, and the step its start, whatever the cuts."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import time
from pathlib import Path

import pytest

import aiotrace
from aiotrace import _session
from aiotrace.reader import CoroState, Event, EventKind, Reader, validate
from aiotrace.sinks import MemorySink

ANNOTATIONS = (
    EventKind.LOG,
    EventKind.REGION_BEGIN,
    EventKind.REGION_END,
    EventKind.TASK_BEGIN,
    EventKind.TASK_END,
)


def read(data: bytes) -> list[Event]:
    return list(Reader(io.BytesIO(data)))


def cut_now() -> None:
    """Closes the running session's generation from another thread (as a
    flight-recorder snapshot does), and returns once the cut is made."""
    session = _session.current()
    assert session is not None
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (session.drainer.at_boundary(), done.set())
    )
    thread.start()
    thread.join(30)
    assert done.is_set(), "the generation was not cut"


def starts_of(events: list[Event], cid: int) -> list[int]:
    return [
        ev.time
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.id == cid
        and ev.state_transition.new is CoroState.RUNNING
    ]


def long_step_program(between: list[int]) -> None:
    """Runs a coroutine whose one step lasts 1.3 s inside a region, with
    logs before and after a generation cut made in its middle."""

    async def work() -> None:
        await asyncio.sleep(0)
        with aiotrace.region("long"):
            aiotrace.log("step", "before")
            cut_now()
            between.append(time.perf_counter_ns())
            time.sleep(1.3)
            aiotrace.log("step", "after")
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.create_task(work(), name="work")

    asyncio.run(main())


def test_long_step_across_a_cut_keeps_its_coroutine_and_start() -> None:
    """A 1.3 s step that a cut splits in two: its logs and region, recorded
    before the cut, belong to its coroutine in the generation before, and
    the step starts before them, not at its record in the next generation."""
    sink = MemorySink()
    between: list[int] = []
    with aiotrace.tracing(sink):
        long_step_program(between)
    events = read(sink.getvalue())
    assert validate(events) == []
    logs = [ev for ev in events if ev.kind is EventKind.LOG]
    assert [ev.log.message for ev in logs] == ["before", "after"]
    cid = logs[0].coroutine
    assert cid > 0 and logs[1].coroutine == cid
    for ev in events:
        if ev.kind in ANNOTATIONS:
            assert ev.coroutine == cid, ev
    # The cut lies between the two logs: a SYNC separates them.
    gens = [i for i, ev in enumerate(events) if ev.kind is EventKind.SYNC]
    i0, i1 = events.index(logs[0]), events.index(logs[1])
    assert any(i0 < g < i1 for g in gens)
    # The step starts before the first log, once, and ends after the last.
    step_start = max(t for t in starts_of(events, cid) if t <= logs[0].time)
    ends = [
        ev
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.id == cid
        and ev.state_transition.old is CoroState.RUNNING
        and ev.time >= logs[1].time
    ]
    assert ends, "the step's end is missing"
    assert [t for t in starts_of(events, cid) if step_start < t < ends[0].time] == []
    assert ends[0].time - step_start >= 1_300_000_000
    assert step_start <= logs[0].time < between[0] < logs[1].time


def test_long_step_across_cuts_in_a_flight_snapshot(tmp_path: Path) -> None:
    """Flight-recorder snapshots taken inside and after a long step: each
    reads with 0 problems, and gives every annotation of the step its
    coroutine, whether the step's start is in the snapshot or restated."""
    inside = tmp_path / "inside.trace"
    after = tmp_path / "after.trace"
    rec = aiotrace.FlightRecorder(max_bytes=1 << 20, min_age=0.0)

    async def work() -> None:
        await asyncio.sleep(0)
        with aiotrace.region("long"):
            aiotrace.log("step", "before")
            # A snapshot from another thread cuts the generation here.
            t = threading.Thread(target=rec.write_to, args=(str(inside),))
            t.start()
            t.join(30)
            time.sleep(1.3)
            aiotrace.log("step", "after")
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.create_task(work(), name="work")

    rec.start()
    try:
        asyncio.run(main())
        rec.write_to(str(after))
    finally:
        rec.stop()
    # min_age=0: the second snapshot keeps the last generations only, and
    # may begin after the step did.
    for path, last in ((inside, "before"), (after, "after")):
        events = read(path.read_bytes())
        assert validate(events) == [], path
        logs = [ev for ev in events if ev.kind is EventKind.LOG]
        assert logs[-1].log.message == last
        cid = logs[-1].coroutine
        assert cid > 0
        assert all(ev.coroutine == cid for ev in events if ev.kind in ANNOTATIONS)
        assert starts_of(events, cid), "the running step has no start"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks need 3.12")
def test_a_cut_inside_an_eager_first_step_gives_a_valid_trace() -> None:
    """A cut inside an eager task's first step (which runs inside its
    creator's step, before its creation is recorded): the trace validates,
    and the creator's events after that step keep their coroutine."""
    sink = MemorySink()

    async def child() -> None:
        aiotrace.log("step", "child")
        cut_now()
        await asyncio.sleep(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        task = asyncio.create_task(child())
        aiotrace.log("step", "creator")
        await task

    with aiotrace.tracing(sink):
        asyncio.run(main())
    events = read(sink.getvalue())
    assert validate(events) == []
    logs = {ev.log.message: ev for ev in events if ev.kind is EventKind.LOG}
    assert logs["creator"].coroutine > 0
