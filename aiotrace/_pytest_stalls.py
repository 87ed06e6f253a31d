"""What the pytest plugin reads back from a test's trace: coroutine names,
block reasons and loop stalls.

Imported only when a test's trace is read back (a failing test's report, or
the ``aiotrace_events`` fixture), since it imports the reader.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .reader import (
    NO_COROUTINE,
    CoroID,
    CoroState,
    Event,
    EventKind,
    LoopID,
    ResourceKind,
    StackFrame,
)

STALL = "loop stall"
"""The name of the range the execution tracer records for a stall."""

# Frames from these directories are the scheduler's, not the program's: a
# stall's stack is shown up to the first of them.
_SCHEDULER_DIRS = (
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(__file__) + os.sep,  # aiotrace's own hooks
)
_SCHEDULER_PACKAGES = (
    f"{os.sep}trio{os.sep}",
    f"{os.sep}anyio{os.sep}",
    f"{os.sep}uvloop{os.sep}",
    f"{os.sep}pytest_asyncio{os.sep}",
)


@dataclass(frozen=True)
class Stall:
    """Stall is one loop stall: a step that held its loop past the threshold.

    ``frames`` are the program's own frames of the first stack sample taken
    during the stall, innermost first (empty if none was taken: a C call held
    the GIL throughout).
    """

    loop: LoopID
    start: int
    """When the step began, in trace nanoseconds."""
    end: int
    """When it returned, or the end of the trace if it never did."""
    coroutine: CoroID
    """The coroutine whose step it was, or NO_COROUTINE (a plain callback)."""
    name: str
    """The coroutine's label, or "" if none."""
    frames: tuple[StackFrame, ...]

    @property
    def duration(self) -> float:
        """How long the stall lasted, in seconds."""
        return (self.end - self.start) / 1e9

    def describe(self) -> str:
        """Returns one line: how long, where, and which coroutine."""
        who = f"coroutine {self.name!r}" if self.name else "a callback"
        if self.coroutine != NO_COROUTINE and not self.name:
            who = f"coroutine {self.coroutine}"
        text = f"{self.duration:.3f} s on loop {self.loop} in {who}"
        if self.frames:
            top = self.frames[0]
            text += f": {top.func} at {top.file}:{top.line}"
        return text


def coroutine_labels(events: Iterable[Event]) -> dict[CoroID, list[str]]:
    """Returns every label given to each coroutine, in the order given."""
    labels: dict[CoroID, list[str]] = {}
    for ev in events:
        if ev.kind is EventKind.LABEL:
            lab = ev.label
            if lab.resource.kind is ResourceKind.COROUTINE:
                labels.setdefault(CoroID(lab.resource.id), []).append(lab.label)
    return labels


def label_matches(label: str, name: str) -> bool:
    """Reports whether a coroutine's label answers to ``name``.

    A label is the coroutine function's qualified name, then a space and the
    task's name if it was given one. ``name`` matches the whole label, the
    qualified name or the task's name, or the last dotted part of either
    (``handler`` for ``test_x.<locals>.handler``).
    """
    if name == label:
        return True
    qualname, _, task_name = label.partition(" ")
    return any(
        part and name in (part, part.rpartition(".")[2])
        for part in (qualname, task_name)
    )


@dataclass
class _Open:
    start: int
    coroutine: CoroID = NO_COROUTINE
    frames: tuple[StackFrame, ...] = ()


def find_stalls(events: Sequence[Event]) -> list[Stall]:
    """Returns the loop stalls in ``events``, in the order they began."""
    labels = coroutine_labels(events)
    open_: dict[LoopID, _Open] = {}
    done: list[Stall] = []

    def close(loop: LoopID, end: int) -> None:
        s = open_.pop(loop)
        names = labels.get(s.coroutine, [])
        name = names[-1] if names else ""
        done.append(Stall(loop, s.start, end, s.coroutine, name, s.frames))

    for ev in events:
        kind = ev.kind
        if kind is EventKind.RANGE_BEGIN or kind is EventKind.RANGE_END:
            rng = ev.range
            if rng.name != STALL or rng.scope.kind is not ResourceKind.LOOP:
                continue
            loop = LoopID(rng.scope.id)
            if kind is EventKind.RANGE_BEGIN:
                open_[loop] = _Open(ev.time)
            elif loop in open_:
                close(loop, ev.time)
        elif kind is EventKind.STATE_TRANSITION and ev.loop in open_:
            st = ev.state_transition
            s = open_[ev.loop]
            if (
                st.resource.kind is ResourceKind.COROUTINE
                and st.new is CoroState.RUNNING
                and s.coroutine == NO_COROUTINE
            ):
                s.coroutine = CoroID(st.resource.id)
        elif kind is EventKind.STACK_SAMPLE and ev.loop in open_:
            s = open_[ev.loop]
            if not s.frames:
                s.frames = own_frames(ev.stack.frames)
                if s.coroutine == NO_COROUTINE:
                    s.coroutine = ev.coroutine
    last = events[-1].time if events else 0
    for loop in list(open_):
        close(loop, last)  # the trace ended during the stall
    done.sort(key=lambda s: s.start)
    return done


def own_frames(frames: Sequence[StackFrame]) -> tuple[StackFrame, ...]:
    """Returns the innermost frames up to the first of the scheduler's own
    (asyncio, trio, anyio, uvloop, pytest-asyncio or aiotrace); all of them if
    the innermost frame is already the scheduler's."""
    own: list[StackFrame] = []
    for f in frames:
        if f.file.startswith(_SCHEDULER_DIRS) or any(
            p in f.file for p in _SCHEDULER_PACKAGES
        ):
            break
        own.append(f)
    return tuple(own) if own else tuple(frames)


def report_section(
    path: str | None,
    stalls: Sequence[Stall],
    *,
    threshold: float | None,
    max_stalls: int = 10,
    max_frames: int = 4,
) -> str:
    """Returns the text a failing test's report shows about its trace: the
    file, and the ``max_stalls`` longest stalls in the order they began."""
    lines = [f"trace: {path}"] if path else []
    if threshold is None:
        lines.append("stall detection was off")
    elif not stalls:
        lines.append(f"no loop stalls (steps over {threshold:g} s)")
    else:
        n = len(stalls)
        lines.append(
            f"{n} loop stall{'s' if n > 1 else ''} (steps over {threshold:g} s):"
        )
        longest = sorted(stalls, key=lambda s: s.end - s.start)[-max_stalls:]
        for s in sorted(longest, key=lambda s: s.start):
            lines.append(f"  {s.describe()}")
            for f in s.frames[1:max_frames]:
                lines.append(f"      called from {f.func} at {f.file}:{f.line}")
        if n > max_stalls:
            lines.append(f"  ... and {n - max_stalls} shorter ones")
    return "\n".join(lines)
