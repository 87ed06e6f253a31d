"""The summary ``aiotrace run`` prints at exit, built while tracing.

``Follower`` reads each batch of raw events on the drain thread, as it is
encoded (``Drainer.on_batch``), and keeps only what the summary shows: the
number of loops and coroutines seen, the loop stalls with their samples, and
the duration of each annotated task type (bounded quantiles). So the summary
is ready when the program ends, whatever the trace's length: nothing is read
back from the file.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from types import CodeType
from typing import Any, Final

from ._encode import _user_frames, line_of
from ._format.spec import C, ResourceKind
from .analysis._dist import Distribution
from .analysis._format import format_duration
from .analysis._stalls import GC_PREFIX, STALL, STALL_METRICS, Stall
from .reader import NO_COROUTINE, CoroID, LoopID, Stack, StackFrame, ThreadID

TOP: Final = 3
"""Stalls and task types listed, at most."""

_RANGE_BEGIN: Final = C["RangeBegin"]
_RANGE_END: Final = C["RangeEnd"]
_SAMPLE: Final = C["StackSample"]
_TASK_BEGIN: Final = C["TaskBegin"]
_TASK_END: Final = C["TaskEnd"]
_LOOP_STATUS: Final = C["LoopStatus"]
_CREATE: Final = C["CoroCreate"]
_STATUS: Final = C["CoroStatus"]
_METRIC: Final = C["Metric"]
_STEPS: Final = frozenset({C["CoroRunYield"], C["CoroRunBlock"], C["CoroRunEnd"]})
_WANTED: Final = frozenset(
    {_RANGE_BEGIN, _RANGE_END, _SAMPLE, _TASK_BEGIN, _TASK_END, _LOOP_STATUS, _METRIC}
)
_LOOP: Final = int(ResourceKind.LOOP)
_code = itemgetter(0)


class Follower:
    """Follower is what the exit summary needs, kept up to date from each
    batch of raw events the drain thread encodes.

    Attributes:
        loops: event loops seen (asyncio, uvloop or trio runs).
        coroutines: coroutines seen (created, or found running).
        steps: step records seen (each reads as two events: start and end).
        error: why following stopped, if ``feed`` failed (then the summary
            says so rather than guess).
    """

    def __init__(self, name_of: Callable[[int], str]) -> None:
        self.loops = 0
        self.coroutines = 0
        self.steps = 0
        self.start_ns = 0
        self.end_ns = 0
        self.error: BaseException | None = None
        self._name_of = name_of
        self._stalls: list[Stall] = []
        # Each loop's latest stalls: a sample (recorded by the watchdog, in
        # its own thread's buffer) may be drained after the stall's end.
        self._recent: dict[int, deque[Stall]] = {}
        self._open: dict[int, Stall] = {}  # loop -> its stall going on
        # Samples drained before the record of the stall they belong to (the
        # loop thread records a stall it could not announce when it ends).
        self._early: dict[int, deque[tuple[int, int, Any]]] = {}
        self._stacks: dict[Stack, Stack] = {}
        self._tasks: dict[str, Distribution] = {}
        self._begun: dict[int, tuple[str, int]] = {}  # task id -> (type, begin)
        self._last: dict[int, tuple[Any, ...]] = {}  # thread -> its last event
        self._gc_begun: dict[str, int] = {}  # GC range name -> its begin
        self._lock = threading.Lock()

    def feed(self, thread: int, events: list[Any]) -> None:
        """Follows one batch of ``thread``'s raw events (on the drain thread);
        never raises."""
        if self.error is not None or not events:
            return
        try:
            with self._lock:
                self._feed(thread, events)
        except Exception as exc:  # the summary says so; the trace goes on
            self.error = exc

    def _feed(self, thread: int, events: list[Any]) -> None:
        first, last = events[0][1], events[-1][1]
        if not self.start_ns or first < self.start_ns:
            self.start_ns = first
        self.end_ns = max(self.end_ns, last)
        codes = list(map(_code, events))
        seen = set(codes)
        if _CREATE in seen:
            self.coroutines += codes.count(_CREATE)
        if _STATUS in seen:
            self.coroutines += codes.count(_STATUS)
        for code in _STEPS & seen:
            self.steps += codes.count(code)
        if seen.isdisjoint(_WANTED):
            self._last[thread] = events[-1]
            return
        for i in _positions(codes, _WANTED & seen):
            ev = events[i]
            code = ev[0]
            if code == _SAMPLE:
                self._sample(ev[1], ev[3], ev[4], ev[5])
            elif code == _METRIC:
                if ev[2] in STALL_METRICS:
                    self._stall_metric(thread, ev[2], ev[3])
            elif code == _RANGE_BEGIN:
                if ev[2].startswith(GC_PREFIX):
                    self._gc_begun[ev[2]] = ev[1]
                elif ev[2] == STALL and ev[3] == _LOOP:
                    prev = events[i - 1] if i else self._last.get(thread)
                    # A stall seen when its step ended follows that step's record.
                    cid = -1
                    if prev is not None and prev[0] in _STEPS and prev[1] == ev[1]:
                        cid = prev[2]
                    self._begin(ev[4], thread, ev[1], cid)
            elif code == _RANGE_END:
                if ev[2].startswith(GC_PREFIX):
                    gc_begun = self._gc_begun.pop(ev[2], None)
                    if gc_begun is not None:
                        self._gc(ev[2], gc_begun, ev[1])
                elif ev[2] == STALL and ev[3] == _LOOP:
                    st = self._open.pop(ev[4], None)
                    if st is not None:
                        st.duration_ns = max(0, ev[1] - st.start_ns)
            elif code == _TASK_BEGIN:
                self._begun[ev[2]] = (ev[4], ev[1])
            elif code == _TASK_END:
                begun = self._begun.pop(ev[2], None)
                if begun is not None:
                    dist = self._tasks.get(begun[0])
                    if dist is None:
                        dist = self._tasks[begun[0]] = Distribution()
                    dist.add(ev[1] - begun[1])
            elif code == _LOOP_STATUS:
                self.loops += 1
        self._last[thread] = events[-1]

    def _begin(self, loop: int, thread: int, t: int, cid: int) -> None:
        if loop in self._open:
            return
        st = Stall(LoopID(loop), ThreadID(thread), t)
        self._open[loop] = st
        self._stalls.append(st)
        recent = self._recent.get(loop)
        if recent is None:
            recent = self._recent[loop] = deque(maxlen=8)
        recent.append(st)
        if cid > 0:
            self._hold(st, cid)
        early = self._early.get(loop)
        if early:
            for t_s, cid_s, raw in [e for e in early if e[0] >= t]:
                early.remove((t_s, cid_s, raw))
                self._add_sample(st, cid_s, raw)

    def _gc(self, name: str, t0: int, t1: int) -> None:
        """Adds a collection to the stalls it overlaps (recent ones too: the
        threads' buffers are drained in no particular order)."""
        for recent in self._recent.values():
            for st in recent:
                end = (
                    t1
                    if self._open.get(st.loop) is st
                    else st.start_ns + st.duration_ns
                )
                overlap = min(t1, end) - max(t0, st.start_ns)
                if overlap > 0:
                    st.gc_ns += overlap
                    st.gc.add(name)

    def _stall_metric(self, thread: int, name: str, value: float) -> None:
        """A stall's CPU figures, recorded on its loop's thread before its end."""
        st = next((s for s in self._open.values() if s.thread == thread), None)
        if st is None or not (0 <= value < 1e12):
            return
        ns = round(value * 1e9)
        which = STALL_METRICS[name]
        if which == 0:
            st.cpu_ns = ns
        elif which == 1:
            st.runqueue_ns = ns
        else:
            st.measured_ns = ns

    def _hold(self, st: Stall, cid: int) -> None:
        st.coroutine = CoroID(cid)
        st.coroutine_name = self._name_of(cid)

    def _sample(self, t: int, loop: int, cid: int, raw: Any) -> None:
        for st in reversed(self._recent.get(loop, ())):
            if st.start_ns <= t and (
                self._open.get(loop) is st or t <= st.start_ns + st.duration_ns
            ):
                self._add_sample(st, cid, raw)
                return
        early = self._early.get(loop)
        if early is None:
            early = self._early[loop] = deque(maxlen=64)
        early.append((t, cid, raw))

    def _add_sample(self, st: Stall, cid: int, raw: Any) -> None:
        stack = _stack(raw)
        st.samples.append(self._stacks.setdefault(stack, stack))
        if st.coroutine == NO_COROUTINE and cid > 0:
            self._hold(st, cid)

    def stalls(self) -> list[Stall]:
        """The stalls seen, in time order (one still going ends at the last event)."""
        with self._lock:
            for st in self._open.values():
                st.ended = False
                st.duration_ns = max(0, self.end_ns - st.start_ns)
            return sorted(self._stalls, key=lambda st: st.start_ns)

    def tasks(self) -> dict[str, Distribution]:
        """Each annotated task type's durations."""
        with self._lock:
            return dict(self._tasks)


def _positions(codes: list[int], wanted: set[int] | frozenset[int]) -> list[int]:
    """The indexes of ``wanted`` codes in ``codes``, in order: found by
    ``list.index`` (C speed), as most events are not wanted."""
    found: list[int] = []
    for code in wanted:
        i = -1
        with contextlib.suppress(ValueError):
            while True:
                i = codes.index(code, i + 1)
                found.append(i)
    found.sort()
    return found


def _stack(raw: Any) -> Stack:
    if not raw:
        return Stack()
    frames = []
    for fr in _user_frames(raw):
        if isinstance(fr[0], CodeType):
            co: CodeType = fr[0]
            frames.append(
                StackFrame(co.co_qualname, co.co_filename, line_of(co, fr[1]))
            )
        else:
            func, file, line = fr
            frames.append(
                StackFrame(str(func), str(file), line if type(line) is int else 0)
            )
    return Stack(tuple(frames))


def summary(
    path: str,
    follower: Follower,
    *,
    events: int,
    lost_events: int,
    stall_threshold: float | None,
    runtime_events: bool = True,
    changed: str | None = None,
) -> str:
    """The few lines ``aiotrace run`` prints at exit about the trace in ``path``.

    They name the file, count its events, say whether any event loop was
    seen, list the loop stalls (the longest first, each with where it
    blocked) and the slowest annotated task types. ``changed`` says how the
    file differs from what was written, if the program altered it.
    """
    duration = max(0, follower.end_ns - follower.start_ns)
    events += follower.steps  # as a reader counts them
    lines = [
        f"aiotrace: trace written to {path} "
        f"({events:,} events recorded, {format_duration(duration)})"
    ]
    if changed:
        lines.append(f"aiotrace: {changed}")
    if lost_events:
        lines.append(
            f"aiotrace: {lost_events:,} events were lost (the sink fell behind)"
        )
    if follower.error is not None:
        lines.append(
            "aiotrace: no summary of the trace: following it failed "
            f"({type(follower.error).__name__}: {follower.error}); the file is whole"
        )
    elif not runtime_events:
        lines.append("aiotrace: runtime events were off: annotations only")
    elif not follower.loops:
        lines.append(
            "aiotrace: no event loop was seen: nothing ran on asyncio, uvloop or "
            "trio while tracing, so the trace has no coroutines and no stalls"
        )
    else:
        lines += _stall_lines(follower.stalls(), stall_threshold)
    finished = [(name, d) for name, d in follower.tasks().items() if d.count]
    if finished:
        lines.append("aiotrace: slowest task types (by p90):")
        finished.sort(key=lambda item: -item[1].p90)
        for name, d in finished[:TOP]:
            lines.append(
                f"  {name}: {d.count} done, p50 {format_duration(d.p50)}, "
                f"p90 {format_duration(d.p90)}, max {format_duration(d.max_ns)}"
            )
    q = shlex.quote(path)
    html = shlex.quote(os.path.splitext(path)[0] + ".html")
    lines.append(
        f"aiotrace: more with `aiotrace stats {q}`, `aiotrace stalls {q}` "
        f"or `aiotrace report {q} -o {html}`"
    )
    return "\n".join(lines)


def _stall_lines(stalls: list[Stall], threshold: float | None) -> list[str]:
    if threshold is None:
        return ["aiotrace: stall detection was off"]
    if not stalls:
        return [f"aiotrace: no loop stalls (threshold {threshold:g} s)"]
    n = len(stalls)
    lines = [
        f"aiotrace: {n} loop stall{'s' if n != 1 else ''} "
        f"(threshold {threshold:g} s){', longest first' if n > 1 else ''}:"
    ]
    for st in sorted(stalls, key=lambda st: -st.duration_ns)[:TOP]:
        if st.by_gc:
            gens = ", ".join(sorted(n.removeprefix("GC ") for n in st.gc))
            where = f"garbage collection ({gens})"
        elif st.samples:
            where = where_of(st.folded()[0][0])
        else:
            where = "no stack sampled"
        if st.descheduled:
            where += " (the OS did not run the loop thread for most of it)"
        who = f" in coroutine {st.coroutine_name}" if st.coroutine_name else ""
        lines.append(f"  {format_duration(st.duration_ns):>9}  {where}{who}")
    if n > TOP:
        lines.append(f"  ... and {n - TOP} more")
    return lines


def where_of(stack: Stack) -> str:
    """The innermost frame of ``stack``, and the program's own frame nearest
    to it when the innermost is in the standard library or a package."""
    frames = stack.frames
    if not frames:
        return "no stack sampled"
    inner = frames[0]
    text = f"{inner.func} ({os.path.basename(inner.file)}:{inner.line})"
    if _is_library(inner.file):
        for f in frames[1:]:
            if not _is_library(f.file):
                text += f" called from {f.func} ({os.path.basename(f.file)}:{f.line})"
                break
    return text


def _is_library(file: str) -> bool:
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return file.startswith("<") or any(file.startswith(r + os.sep) for r in roots)
