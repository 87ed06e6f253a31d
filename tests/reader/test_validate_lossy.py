"""The validator on real lossy traces, and its memory on long ones."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import aiotrace
from aiotrace.reader import (
    NO_STACK,
    Event,
    EventKind,
    Reader,
    Task,
    Validator,
    validate,
)

BUFFER = 2_000_000
LOSS_STEP = 5_000
"""Events the tracer must drop while the sink is held, before it takes more."""
KEPT_BYTES = 1_000_000
"""Bytes the sink takes at once between two holds."""


class SlowFile:
    """A binary file that holds each write until the tracer has dropped
    ``LOSS_STEP`` more events, then takes ``KEPT_BYTES`` at once, until
    ``fast`` is set: whole batches are dropped between stretches that are
    kept, however fast the machine runs the program."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("wb")
        self.fast = threading.Event()
        self.lost: Callable[[], int] = lambda: 0
        self._free = 0

    def write(self, data: bytes) -> int:
        if self._free <= 0 and not self.fast.is_set():
            goal = self.lost() + LOSS_STEP
            deadline = time.monotonic() + 60  # a hang guard, not a condition
            while (
                self.lost() < goal
                and not self.fast.wait(0.01)
                and time.monotonic() < deadline
            ):
                pass
            self._free = KEPT_BYTES
        self._free -= len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


async def busy(stop: threading.Event) -> None:
    """Coroutines that create tasks, lock, queue and sleep until ``stop``."""
    lock = asyncio.Lock()
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def child(i: int) -> int:
        async with lock:
            await asyncio.sleep(0)
        with aiotrace.region("child"):
            queue.put_nowait(i)
        return i

    async def drain() -> None:
        while True:
            await queue.get()

    drainer = asyncio.create_task(drain())
    i = 0
    while not stop.is_set():
        with aiotrace.new_task("round"):
            await asyncio.gather(*(child(i + k) for k in range(20)))
        i += 20
    drainer.cancel()


def test_a_lossy_trace_validates_where_the_losses_are_announced(
    tmp_path: Path,
) -> None:
    """A real program traced into a sink too slow for it, with the smallest
    buffer: whole batches are dropped and announced; the validator accepts
    the gaps the announcements cover and finds nothing else."""
    path = tmp_path / "lossy.trace"
    sink = SlowFile(path)
    stop = threading.Event()
    tracer = aiotrace.start(sink, max_buffer_bytes=BUFFER)
    sink.lost = lambda: tracer.lost_events
    try:
        timer = threading.Thread(
            target=lambda: (
                _wait_for(lambda: tracer.lost_events > 20_000),
                stop.set(),
            )
        )
        timer.start()
        asyncio.run(busy(stop))
        timer.join(60)
    finally:
        sink.fast.set()
        aiotrace.stop()
        sink.close()
    assert tracer.lost_events > 20_000
    with path.open("rb") as f:
        reader = Reader(f)
        events = list(reader)
    assert reader.lost_events == tracer.lost_events
    announced = [
        ev
        for ev in events
        if ev.kind is EventKind.METRIC and ev.metric.name == "/aiotrace/lost:events"
    ]
    # Losses between kept stretches.
    assert announced and len(events) > 50_000
    assert validate(events) == []


def _wait_for(cond: object) -> None:
    deadline = time.monotonic() + 60
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def task_events(n: int, start: int = 1) -> Iterator[Event]:
    """``n`` tasks, each begun and ended, as a reader yields them."""
    for tid in range(start, start + n):
        task = Task(tid, 0, "request")
        t = 10 * tid
        yield Event(EventKind.TASK_BEGIN, t, 1, 1, 7, NO_STACK, task)
        yield Event(EventKind.TASK_END, t + 5, 1, 1, 7, NO_STACK, task)


def peak_validating(n: int) -> int:
    """Peak bytes traced while a Validator checks ``n`` tasks."""
    validator = Validator()
    tracemalloc.start()
    try:
        for ev in task_events(n):
            validator.check(ev)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert validator.problems == []
    return peak


def test_validator_memory_is_bounded_by_open_tasks_not_all_tasks() -> None:
    """400k tasks, each begun and ended: the Validator needs about what 100k
    tasks need (it kept two sets of every task id: ~245 MiB for 2 M tasks),
    and it still finds a task that ends twice or begins again soon after."""
    small = peak_validating(100_000)
    big = peak_validating(400_000)
    assert big < small + (4 << 20), (small, big)
    assert big < 16 << 20
    validator = Validator()
    events = list(task_events(3))
    begin_again = Event(events[0][0], 100, *events[0][2:])
    end_again = Event(events[-1][0], 101, *events[-1][2:])
    validator.validate([*events, begin_again, end_again])
    assert [p.message for p in validator.problems] == [
        "task 1 begins twice",
        "task 3 ends twice",
    ]
