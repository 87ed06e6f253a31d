"""analyze: one streaming pass over a trace's events into a Summary."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..reader import (
    LOST_METRIC,
    NO_COROUTINE,
    CoroState,
    Event,
    EventKind,
    LoopState,
    Reader,
    ResourceKind,
    Stack,
    TraceError,
)
from ._coro import UNKNOWN_REASON, CoroAccounting, CoroGroup
from ._dist import Distribution
from ._loops import LoopAccounting, LoopUsage
from ._stalls import STALL, Stall, StallTracker
from ._tasks import RegionAccounting, TaskAccounting

Progress = Callable[[int, "int | None"], None]
"""progress(done, total), called at each generation and at the end: bytes
read of a file (total its size, when known), or events read of an iterable
of events (total None)."""

_TRUNCATED = "the trace is truncated"


@dataclass
class Summary:
    """Summary is what a trace tells: tasks, regions, coroutines, loops, stalls.

    Durations are in nanoseconds of the trace clock. ``truncated`` is None
    for a whole trace, or the reader's error text for a trace cut short (the
    summary then covers what could be read).
    """

    start_ns: int = 0
    end_ns: int = 0
    events: int = 0
    lost_events: int = 0
    truncated: str | None = None
    tasks: dict[str, Distribution] = field(default_factory=dict)
    regions: dict[str, Distribution] = field(default_factory=dict)
    coroutines: list[CoroGroup] = field(default_factory=list)
    loops: list[LoopUsage] = field(default_factory=list)
    stalls: list[Stall] = field(default_factory=list)

    @property
    def duration_ns(self) -> int:
        """The time from the trace's first event to its last."""
        return self.end_ns - self.start_ns

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict of everything (``aiotrace stats --json``)."""
        return {
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_ns": self.duration_ns,
            "events": self.events,
            "lost_events": self.lost_events,
            "truncated": self.truncated,
            "tasks": {k: d.to_dict() for k, d in self.tasks.items()},
            "regions": {k: d.to_dict() for k, d in self.regions.items()},
            "coroutines": [g.to_dict() for g in self.coroutines],
            "loops": [u.to_dict() for u in self.loops],
            "stalls": [s.to_dict() for s in self.stalls],
        }


class _CountingStream:
    """_CountingStream counts the bytes read through it, for progress."""

    def __init__(self, stream: Any) -> None:
        self._read = stream.read
        self.done = 0

    def read(self, n: int, /) -> bytes:
        data: bytes = self._read(n)
        self.done += len(data) if data else 0
        return data


def _size(stream: Any) -> int | None:
    try:
        return os.fstat(stream.fileno()).st_size - int(stream.tell())
    except (AttributeError, OSError, ValueError):
        return None


def analyze(
    source: str | os.PathLike[str] | IO[bytes] | Iterable[Event],
    *,
    progress: Progress | None = None,
) -> Summary:
    """Analyzes a trace in one streaming pass and returns its Summary.

    Memory follows what is alive at once (coroutines, open tasks and
    regions, loops) and the size of the result, not the number of events.

    Args:
        source: a trace file's path, a binary file object, or an iterable
            of ``reader.Event``.
        progress: called at each generation and at the end as
            ``progress(done, total)``: bytes read and the input's size
            (None if unknown), or, for an iterable of events, events read
            and None.

    Raises:
        reader.TraceError: the trace is malformed (a truncated trace is not
            an error: the summary says so in ``truncated``).
        OSError: the file cannot be read.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return analyze(f, progress=progress)
    if callable(getattr(source, "read", None)):
        total = _size(source)
        counting = _CountingStream(source)
        reader = Reader(counting)
        summary = _Pass(
            reader, (lambda: counting.done, total) if progress else None, progress
        ).run()
        summary.lost_events = max(summary.lost_events, reader.lost_events)
        return summary
    if isinstance(source, bytes | bytearray | memoryview):
        raise TypeError("analyze() takes a path or a binary file, not the bytes")
    return _Pass(iter(source), None, progress).run()  # type: ignore[arg-type]


_ST = EventKind.STATE_TRANSITION
_STACK_SAMPLE = EventKind.STACK_SAMPLE
_TASK_BEGIN, _TASK_END = EventKind.TASK_BEGIN, EventKind.TASK_END
_REGION_BEGIN, _REGION_END = EventKind.REGION_BEGIN, EventKind.REGION_END
_LABEL, _SYNC, _METRIC = EventKind.LABEL, EventKind.SYNC, EventKind.METRIC
_RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END = (
    EventKind.RANGE_BEGIN,
    EventKind.RANGE_ACTIVE,
    EventKind.RANGE_END,
)
_COROUTINE, _LOOP = ResourceKind.COROUTINE, ResourceKind.LOOP
_LOOP_UNKNOWN = LoopState.UNDETERMINED
_UNDETERMINED, _RUNNABLE, _RUNNING, _WAITING, _NOT_EXIST = (
    CoroState.UNDETERMINED,
    CoroState.RUNNABLE,
    CoroState.RUNNING,
    CoroState.WAITING,
    CoroState.NOT_EXIST,
)


class _Pass:
    """_Pass is one run of the analysis over a stream of events."""

    def __init__(
        self,
        events: Iterable[Event],
        by_bytes: tuple[Callable[[], int], int | None] | None,
        progress: Progress | None,
    ) -> None:
        self.events = events
        self.by_bytes = by_bytes
        self.progress = progress
        self.coros = CoroAccounting()
        self.tasks = TaskAccounting()
        self.regions = RegionAccounting()
        self.loops = LoopAccounting()
        self.stalls = StallTracker(self.coros.name)
        self.summary = Summary()
        self.error: TraceError | None = None

    def _report(self, n: int) -> None:
        assert self.progress is not None
        if self.by_bytes is not None:
            done, total = self.by_bytes
            self.progress(done(), total)
        else:
            self.progress(n, None)

    def run(self) -> Summary:
        s = self.summary
        n, first, last = self._consume()
        if self.error is not None:
            if not self.error.reason.startswith(_TRUNCATED) or n == 0:
                raise self.error
            s.truncated = str(self.error)
        if self.progress is not None:
            self._report(n)
        s.events = n
        s.start_ns = first if first is not None else 0
        s.end_ns = max(last, s.start_ns)
        end = s.end_ns
        s.coroutines = self.coros.finish(end)
        s.tasks = self.tasks.finish()
        s.regions = self.regions.finish()
        s.loops = self.loops.finish(end)
        s.stalls = self.stalls.finish(end)
        return s

    def _consume(self) -> tuple[int, int | None, int]:
        """Runs the pass; returns (events, first time, last time).

        A TraceError from the reader ends the pass; it is kept in ``error``
        and the counts so far are returned (a truncated trace still has
        its summary).
        """
        s = self.summary
        coros = self.coros
        live = coros.live
        fold = coros.fold
        loop_transition = self.loops.transition
        regions, stalls = self.regions, self.stalls
        other = self._other
        progress = self.progress
        n = 0
        first: int | None = None
        last = 0
        events: Iterator[Event] = iter(self.events)
        try:
            for ev in events:
                first = last = ev[1]
                events = itertools.chain((ev,), events)
                break
            for ev in events:
                kind, t, coro, loop, thread, stack, d = ev
                n += 1
                if t > last:  # noqa: PLR1730 - max() costs a call per event
                    last = t
                if kind is _ST:
                    r = d[0]
                    if r[0] is _COROUTINE:
                        # The coroutine state machine, inline: most events are these.
                        cid = r[1]
                        new = d[4]
                        st = live.get(cid)
                        if st is None:
                            if new is not _NOT_EXIST:
                                live[cid] = [
                                    new,
                                    t,
                                    d[1] or UNKNOWN_REASON,
                                    0,
                                    0,
                                    None,
                                    "",
                                ]
                            continue
                        if new is st[0] and d[3] is _UNDETERMINED:
                            # A generation restating what is known: its time
                            # may be a little early, so it must not move st[1].
                            continue
                        dt = t - st[1]
                        if dt > 0:
                            state = st[0]
                            if state is _RUNNING:
                                st[3] += dt
                            elif state is _RUNNABLE:
                                st[4] += dt
                            elif state is _WAITING:
                                block = st[5]
                                if block is None:
                                    block = st[5] = {}
                                block[st[2]] = block.get(st[2], 0) + dt
                        st[0] = new
                        st[1] = t
                        if new is _RUNNING:
                            if stalls.open:
                                stalls.start(thread, cid)
                        elif new is _WAITING:
                            st[2] = d[1] or UNKNOWN_REASON
                        elif new is _NOT_EXIST:
                            del live[cid]
                            fold(st, ended=True)
                            if regions.open:
                                regions.drop(cid)
                    else:
                        loop_transition(
                            r[1], t, d[4], thread, restated=d[3] is _LOOP_UNKNOWN
                        )
                elif kind is _SYNC:
                    s.lost_events = max(s.lost_events, d[1])
                    if progress is not None:
                        self._report(n)
                else:
                    other(kind, t, coro, loop, thread, stack, d)
        except TraceError as exc:
            self.error = exc
        return n, first, last

    def _other(
        self,
        kind: EventKind,
        t: int,
        coro: int,
        loop: int,
        thread: int,
        stack: Stack,
        d: Any,
    ) -> None:
        """Handles the events other than transitions and syncs."""
        tasks, regions, stalls = self.tasks, self.regions, self.stalls
        if kind is _STACK_SAMPLE:
            stalls.sample(loop, thread, coro, stack)
        elif kind is _TASK_BEGIN:
            tasks.begin(d[0], d[2], t)
        elif kind is _TASK_END:
            tasks.end(d[0], t)
        elif kind is _REGION_BEGIN:
            regions.begin(coro if coro != NO_COROUTINE else ~thread, d[0], d[1], t)
        elif kind is _REGION_END:
            regions.end(coro if coro != NO_COROUTINE else ~thread, d[0], d[1], t)
        elif kind is _LABEL:
            rid = d[1]
            if rid[0] is _COROUTINE:
                self.coros.label(rid[1], d[0])
                if stalls.open:
                    stalls.label(rid[1], d[0])
            elif rid[0] is _LOOP:
                self.loops.label(rid[1], d[0])
        elif kind is _RANGE_BEGIN or kind is _RANGE_ACTIVE:
            if d[0] == STALL and d[1][0] is _LOOP:
                lid = d[1][1]
                where = self.loops.thread_of(lid)
                stalls.begin(
                    lid,
                    thread if where is None else where,
                    t,
                    coro if loop == lid else NO_COROUTINE,
                    began=kind is _RANGE_BEGIN,
                )
        elif kind is _RANGE_END:
            if d[0] == STALL and d[1][0] is _LOOP:
                stalls.end(d[1][1], t)
        elif kind is _METRIC and d[0] == LOST_METRIC:
            s = self.summary
            s.lost_events = max(s.lost_events, int(d[1]))
