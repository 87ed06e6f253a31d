"""analyze: one streaming pass over a trace's events into a Summary."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..reader import (
    NO_COROUTINE,
    CoroState,
    Event,
    EventKind,
    LoopState,
    Reader,
    ResourceKind,
    TraceError,
)
from ._coro import UNKNOWN_REASON, CoroAccounting, CoroGroup
from ._dist import Distribution
from ._loops import LoopUsage
from ._pass import ByBytes, Progress, StreamPass, read_source
from ._records import (
    K_BLOCK,
    K_CREATE,
    K_END,
    K_LOG,
    K_REGION_BEGIN,
    K_REGION_END,
    K_START,
    K_STATUS,
    K_TASK_BEGIN,
    K_TASK_END,
    K_UNBLOCK,
    K_WAITING,
    K_YIELD,
    KIND,
    STATES,
    context,
    generations,
    last_time,
)
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
_LABEL, _SYNC, _LOG = EventKind.LABEL, EventKind.SYNC, EventKind.LOG
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
        # on_sync(time, wall_time_ns) at each generation's SYNC, if set.
        self.on_sync: Callable[[int, int], None] | None = None
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
                elif kind is _LOG:
                    continue  # no figure comes from logs
                elif kind is _SYNC:
                    s.lost_events = max(s.lost_events, d[1])
                    if self.on_sync is not None:
                        self.on_sync(t, d[0])
                    if progress is not None:
                        self._report(n)
                else:
                    other(ev)
        except TraceError as exc:
            self.error = exc
        return n, last

    def _consume_records(self, reader: Reader) -> tuple[int, int | None, int]:
        """The pass over a file's records (see ``_records``): the same
        figures as ``_consume`` over its typed Events."""
        s = self.result
        coros = self.coros
        live = coros.live
        fold = coros.fold
        loop_transition = self.loops.transition
        regions, stalls = self.regions, self.stalls
        other = self._other
        progress = self.progress
        typer: Any = reader._typer
        handlers = typer._handlers
        ctx = typer._ctx
        labels = typer._labels
        kinds = KIND
        k_start, k_block, k_yield = K_START, K_BLOCK, K_YIELD
        k_unblock, k_end = K_UNBLOCK, K_END
        k_create, k_status, k_waiting, k_log = K_CREATE, K_STATUS, K_WAITING, K_LOG
        k_region_begin, k_region_end = K_REGION_BEGIN, K_REGION_END
        k_task_begin, k_task_end = K_TASK_BEGIN, K_TASK_END
        tasks = self.tasks
        n = 0
        first: int | None = None
        last = 0
        try:
            for gen, recs in generations(reader):
                t = gen.time  # the generation's SYNC
                if first is None:
                    first = last = t
                elif t > last:
                    last = t
                n += 1 + len(recs)  # less those the Typer would not yield
                s.lost_events = max(s.lost_events, gen.lost_events)
                if self.on_sync is not None:
                    self.on_sync(t, gen.wall_time_ns)
                if progress is not None:
                    self._report(n - len(recs))
                dropped: set[int] = set()
                for ev in recs:
                    k = kinds[ev[2]]
                    if k == k_log:
                        continue  # no figure comes from logs
                    t = ev[0]
                    # Each coroutine transition: its coroutine, new state,
                    # reason, and the thread's context as the Typer keeps it.
                    if k == k_unblock:
                        cid = ev[3]
                        new = _RUNNABLE
                        reason = ev[4]
                    elif k == k_start:
                        cid = ev[3]
                        new = _RUNNING
                        reason = ""
                        c = ctx.get(ev[1]) or context(ctx, ev[1])
                        if c[1] != NO_COROUTINE:
                            c[2].append(c[1])
                        c[1] = cid
                    elif k == k_block:
                        cid = ev[3]
                        new = _WAITING
                        reason = ev[4]
                        c = ctx.get(ev[1]) or context(ctx, ev[1])
                        if c[1] == cid:
                            c[1] = c[2].pop() if c[2] else NO_COROUTINE
                    elif k == k_yield:
                        cid = ev[3]
                        new = _RUNNABLE
                        reason = "yield"
                        c = ctx.get(ev[1]) or context(ctx, ev[1])
                        if c[1] == cid:
                            c[1] = c[2].pop() if c[2] else NO_COROUTINE
                    elif k_region_begin <= k <= k_region_end:  # RegionBegin, RegionEnd
                        c = ctx.get(ev[1])
                        coro = c[1] if c is not None else NO_COROUTINE
                        where = coro if coro != NO_COROUTINE else ~ev[1]
                        if k == k_region_begin:
                            regions.begin(where, ev[3], ev[4], t)
                        else:
                            regions.end(where, ev[3], ev[4], t)
                        continue
                    elif k == k_create:
                        cid = ev[3]
                        new = _RUNNABLE
                        reason = ""
                    elif k == k_end:
                        cid = ev[3]
                        new = _NOT_EXIST
                        reason = ev[4]
                        labels.pop((_COROUTINE, cid), None)
                        c = ctx.get(ev[1]) or context(ctx, ev[1])
                        if c[1] == cid:
                            c[1] = c[2].pop() if c[2] else NO_COROUTINE
                    elif k_status <= k <= k_waiting:  # CoroStatus, CoroWaiting
                        # Restated statuses: the Typer yields one only when it
                        # tells something new, and its state is this pass's.
                        cid = ev[3]
                        st = live.get(cid)
                        if k == k_status:
                            new = STATES[ev[4]]
                            reason = ""
                        else:
                            new = _WAITING
                            reason = ev[4]
                        if st is not None and st[0] is new:
                            dropped.add(id(ev))
                            n -= 1
                            continue
                        if new is _RUNNING:
                            c = ctx.get(ev[1]) or context(ctx, ev[1])
                            if c[1] != cid:
                                if c[1] != NO_COROUTINE:
                                    c[2].append(c[1])
                                c[1] = cid
                    elif k == k_task_begin:
                        tasks.begin(ev[3], ev[5], t)
                        continue
                    elif k == k_task_end:
                        tasks.end(ev[3], t)
                        continue
                    else:
                        out = handlers[ev[2]](ev, ctx.get(ev[1]) or context(ctx, ev[1]))
                        if out is None:
                            dropped.add(id(ev))
                            n -= 1
                        elif out[0] is _ST:
                            d = out[6]
                            loop_transition(
                                d[0][1], t, d[4], ev[1], restated=d[3] is _LOOP_UNKNOWN
                            )
                        else:
                            other(out)
                        continue
                    # The coroutine state machine, as in _consume.
                    st = live.get(cid)
                    if st is None:
                        if new is not _NOT_EXIST:
                            reason = reason or UNKNOWN_REASON
                            live[cid] = [new, t, reason, 0, 0, None, ""]
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
                            stalls.start(ev[1], cid)
                    elif new is _WAITING:
                        st[2] = reason or UNKNOWN_REASON
                    elif new is _NOT_EXIST:
                        del live[cid]
                        fold(st, ended=True)
                        if regions.open:
                            regions.drop(cid)
                if recs:
                    last = last_time(recs, dropped, last)
                del gen, recs  # or they stay alive while the next is decoded
        except TraceError as exc:
            self.error = exc
        return n, first, last

    def _other(self, ev: Event) -> None:
        """Handles the events other than transitions and syncs."""
        kind, t, coro, _, thread, _, d = ev
        if kind is _REGION_BEGIN:
            self.regions.begin(coro if coro != NO_COROUTINE else ~thread, d[0], d[1], t)
        elif kind is _REGION_END:
            self.regions.end(coro if coro != NO_COROUTINE else ~thread, d[0], d[1], t)
        elif kind is _TASK_BEGIN:
            self.tasks.begin(d[0], d[2], t)
        elif kind is _TASK_END:
            self.tasks.end(d[0], t)
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
