"""Loop stalls: each "loop stall" range, who held the loop, and its samples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..reader import NO_COROUTINE, CoroID, LoopID, Stack, StackFrame, ThreadID

STALL = "loop stall"
"""The range name the watchdog records for a stall (scope: the loop)."""


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
        stack = self._stacks.setdefault(stack, stack)
        s.samples.append(stack)
        if s.coroutine == NO_COROUTINE and coro != NO_COROUTINE:
            s.coroutine, s.coroutine_name = CoroID(coro), self._name_of(coro)

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
