"""Loop stalls: each "loop stall" range, who held the loop, and its samples."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..reader import NO_COROUTINE, CoroID, LoopID, Stack, StackFrame, ThreadID

STALL = "loop stall"
"""The range name the watchdog records for a stall (scope: the loop)."""

STALL_CPU = "/loop/stall/cpu:seconds"
STALL_RUNQUEUE = "/loop/stall/runqueue:seconds"
STALL_MEASURED = "/loop/stall/measured:seconds"
STALL_METRICS = {STALL_CPU: 0, STALL_RUNQUEUE: 1, STALL_MEASURED: 2}

GC_PREFIX = "GC gen"
"""The range names of garbage collections start so."""

DESCHEDULED = 0.5
"""A stall whose loop thread waited for a CPU this share of the time
measured or more was caused by the OS, not by the program."""

# aiotrace's own modules: never the "where" of a stall (older traces may
# hold their frames in samples).
_OWN = re.compile(
    r"[/\\]aiotrace[/\\](?!_demo\.py$)(_[a-z_]+\.py|_loop[/\\][a-z_]+\.py)$"
)


def is_own_frame(f: StackFrame) -> bool:
    """Whether ``f`` is one of aiotrace's own frames (its hooks, its GC
    callback, its watchdog), not the program's."""
    return _OWN.search(f.file) is not None


def program_frames(stack: Stack) -> Stack:
    """Returns ``stack`` without aiotrace's own frames."""
    if not any(_OWN.search(f.file) for f in stack.frames):
        return stack
    return Stack(tuple(f for f in stack.frames if not _OWN.search(f.file)))


@dataclass
class Stall:
    """Stall is one stretch of time a step or callback held its loop too long.

    ``coroutine`` is the coroutine that held the loop (running on it when
    the stall began, or the one that started running then), or
    NO_COROUTINE for a plain callback. ``samples`` are the stacks the
    watchdog sampled from the loop's thread while the stall lasted.
    ``ended`` is False for a stall still going when the trace ended (its
    duration is then up to the end of the trace); ``began`` is False for one
    already going when the trace began (its start is unknown).

    ``gc_ns`` is the time garbage collections ran during the stall (any
    thread's: a collection holds the GIL), ``gc`` their range names. Where
    the trace has them (Linux), ``cpu_ns`` and ``runqueue_ns`` are the time
    the loop thread was on a CPU and waiting for one (runnable, but not run
    by the OS) over ``measured_ns`` of the stall (from the watchdog's first
    look to its end); all three are None otherwise.
    """

    loop: LoopID
    thread: ThreadID
    start_ns: int
    duration_ns: int = 0
    coroutine: CoroID = NO_COROUTINE
    coroutine_name: str = ""
    samples: list[Stack] = field(default_factory=list)
    ended: bool = True
    began: bool = True
    gc_ns: int = 0
    gc: set[str] = field(default_factory=set)
    cpu_ns: int | None = None
    runqueue_ns: int | None = None
    measured_ns: int | None = None

    @property
    def by_gc(self) -> bool:
        """Whether garbage collection took half the stall or more: the
        stall is GC's."""
        return self.gc_ns > 0 and 2 * self.gc_ns >= self.duration_ns

    @property
    def descheduled(self) -> bool:
        """Whether the OS kept the loop thread off the CPU for most of the
        time measured (it was runnable, waiting for a CPU)."""
        return (
            self.runqueue_ns is not None
            and bool(self.measured_ns)
            and self.runqueue_ns >= DESCHEDULED * (self.measured_ns or 0)
        )

    def folded(self) -> list[tuple[Stack, int]]:
        """Returns the distinct sampled stacks with their counts, most common first."""
        return Counter(self.samples).most_common()

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict, with the samples folded."""
        return {
            "loop": self.loop,
            "thread": self.thread,
            "start_ns": self.start_ns,
            "duration_ns": self.duration_ns,
            "coroutine": self.coroutine,
            "coroutine_name": self.coroutine_name,
            "ended": self.ended,
            "began": self.began,
            "gc_ns": self.gc_ns,
            "gc": sorted(self.gc),
            "cpu_ns": self.cpu_ns,
            "runqueue_ns": self.runqueue_ns,
            "measured_ns": self.measured_ns,
            "samples": len(self.samples),
            "stacks": [
                {"count": n, "frames": [list(f) for f in stack.frames]}
                for stack, n in self.folded()
            ],
        }


class StallTracker:
    """StallTracker pairs stall ranges, and gives each its holder and samples.

    Invariant: ``open`` holds the stalls begun and not yet ended, by loop.
    Sampled stacks are interned, so equal stacks share one object.
    """

    def __init__(self, name_of: Callable[[int], str]) -> None:
        self._name_of = name_of
        self.open: dict[int, Stall] = {}
        self.stalls: list[Stall] = []
        self._stacks: dict[Stack, Stack] = {}

    def begin(self, loop: int, thread: int, t: int, coro: int, *, began: bool) -> None:
        """Opens a stall on ``loop``; ``coro`` is the coroutine running there."""
        if loop in self.open:
            return  # RANGE_ACTIVE for a stall already open
        s = Stall(LoopID(loop), ThreadID(thread), t, began=began)
        if coro != NO_COROUTINE:
            s.coroutine, s.coroutine_name = CoroID(coro), self._name_of(coro)
        self.open[loop] = s
        self.stalls.append(s)

    def start(self, thread: int, coro: int) -> None:
        """Notes a coroutine starting on ``thread``: the holder of a stall
        that began without one (the range is recorded as its step starts)."""
        for s in self.open.values():
            if s.thread == thread and s.coroutine == NO_COROUTINE:
                s.coroutine, s.coroutine_name = CoroID(coro), self._name_of(coro)

    def label(self, coro: int, label: str) -> None:
        """Names the holder of open stalls, if it is ``coro``."""
        for s in self.open.values():
            if s.coroutine == coro:
                s.coroutine_name = label

    def end(self, loop: int, t: int) -> None:
        """Closes the stall open on ``loop``."""
        s = self.open.pop(loop, None)
        if s is not None:
            s.duration_ns = max(0, t - s.start_ns)

    def sample(self, loop: int, thread: int, coro: int, stack: Stack) -> None:
        """Adds a stack sample to the stall open on its loop (or thread)."""
        s = self.open.get(loop)
        if s is None:
            s = next((o for o in self.open.values() if o.thread == thread), None)
            if s is None:
                return
        stack = program_frames(stack)
        stack = self._stacks.setdefault(stack, stack)
        s.samples.append(stack)
        if s.coroutine == NO_COROUTINE and coro != NO_COROUTINE:
            s.coroutine, s.coroutine_name = CoroID(coro), self._name_of(coro)

    def gc(self, name: str, t0: int, t1: int) -> None:
        """Adds a collection from ``t0`` to ``t1`` to the stalls open then."""
        for s in self.open.values():
            overlap = t1 - max(t0, s.start_ns)
            if overlap > 0:
                s.gc_ns += overlap
                s.gc.add(name)

    def metric(self, loop: int, thread: int, name: str, value: float) -> None:
        """Takes a stall's CPU figure, recorded just before its end."""
        s = self.open.get(loop)
        if s is None:
            s = next((o for o in self.open.values() if o.thread == thread), None)
            if s is None:
                return
        ns = round(value * 1e9) if value >= 0 and value < 1e12 else None
        which = STALL_METRICS[name]
        if which == 0:
            s.cpu_ns = ns
        elif which == 1:
            s.runqueue_ns = ns
        else:
            s.measured_ns = ns

    def finish(self, end_ns: int) -> list[Stall]:
        """Ends open stalls at ``end_ns``; returns every stall in time order."""
        for s in self.open.values():
            s.ended = False
            s.duration_ns = max(0, end_ns - s.start_ns)
        self.open.clear()
        self.stalls.sort(key=lambda s: s.start_ns)
        return self.stalls


def short_frame(f: StackFrame) -> str:
    """Formats a frame as ``func (file:line)``."""
    return f"{f.func} ({f.file}:{f.line})"
