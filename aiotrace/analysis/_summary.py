"""analyze: one streaming pass over a trace's events into a Summary."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..reader import (
    NO_COROUTINE,
    CoroState,
    Event,
    EventKind,
    LoopState,
    ResourceKind,
    TraceError,
)
from ._coro import UNKNOWN_REASON, CoroAccounting, CoroGroup
from ._dist import Distribution
from ._loops import LoopUsage
from ._pass import ByBytes, Progress, StreamPass, read_source
from ._stalls import Stall
from ._tasks import RegionAccounting, TaskAccounting


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
    return read_source(
        source, "analyze", progress, lambda ev, by: _Pass(ev, by, progress).run()
    )


_ST = EventKind.STATE_TRANSITION
_TASK_BEGIN, _TASK_END = EventKind.TASK_BEGIN, EventKind.TASK_END
_REGION_BEGIN, _REGION_END = EventKind.REGION_BEGIN, EventKind.REGION_END
_LABEL, _SYNC = EventKind.LABEL, EventKind.SYNC
_COROUTINE, _LOOP = ResourceKind.COROUTINE, ResourceKind.LOOP
_LOOP_UNKNOWN = LoopState.UNDETERMINED
_UNDETERMINED, _RUNNABLE, _RUNNING, _WAITING, _NOT_EXIST = (
    CoroState.UNDETERMINED,
    CoroState.RUNNABLE,
    CoroState.RUNNING,
    CoroState.WAITING,
    CoroState.NOT_EXIST,
)


class _Pass(StreamPass[Summary]):
    """_Pass is one run of the analysis over a stream of events."""

    def __init__(
        self,
        events: Iterable[Event],
        by_bytes: ByBytes | None,
        progress: Progress | None,
    ) -> None:
        self.coros = CoroAccounting()
        self.tasks = TaskAccounting()
        self.regions = RegionAccounting()
        super().__init__(events, by_bytes, progress, Summary(), self.coros.name)

    def run(self) -> Summary:
        s = self.result
        end = self._span()
        s.coroutines = self.coros.finish(end)
        s.tasks = self.tasks.finish()
        s.regions = self.regions.finish()
        s.loops = self.loops.finish(end)
        s.stalls = self.stalls.finish(end)
        return s

    def _consume(self, events: Iterator[Event], last: int) -> tuple[int, int]:
        """Runs the pass; returns (events, last time).

        A TraceError from the reader ends the pass; it is kept in ``error``
        and the counts so far are returned (a truncated trace still has
        its summary).
        """
        s = self.result
        coros = self.coros
        live = coros.live
        fold = coros.fold
        loop_transition = self.loops.transition
        regions, stalls = self.regions, self.stalls
        other = self._other
        progress = self.progress
        n = 0
        try:
            for ev in events:
                kind, t, _, _, thread, _, d = ev
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
                    other(ev)
        except TraceError as exc:
            self.error = exc
        return n, last

    def _other(self, ev: Event) -> None:
        """Handles the events other than transitions and syncs."""
        kind, t, coro, _, thread, _, d = ev
        if kind is _TASK_BEGIN:
            self.tasks.begin(d[0], d[2], t)
        elif kind is _TASK_END:
            self.tasks.end(d[0], t)
        elif kind is _REGION_BEGIN:
            self.regions.begin(coro if coro != NO_COROUTINE else ~thread, d[0], d[1], t)
        elif kind is _REGION_END:
            self.regions.end(coro if coro != NO_COROUTINE else ~thread, d[0], d[1], t)
        elif kind is _LABEL:
            rid = d[1]
            if rid[0] is _COROUTINE:
                self.coros.label(rid[1], d[0])
                if self.stalls.open:
                    self.stalls.label(rid[1], d[0])
            elif rid[0] is _LOOP:
                self.loops.label(rid[1], d[0])
        else:
            self._stall_event(ev)
