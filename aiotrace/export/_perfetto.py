"""Perfetto export: a trace as Chrome trace-event JSON, streamed event by event.

Layout (see docs/views.md):

- process 1, "aiotrace": one thread track per loop (the loop running,
  coroutine steps nested in it, loop stalls, GC, stack samples), one per OS
  thread that did something off a loop (executor work, GC, logs), the user
  tasks as async slices with their regions nested, and the metrics as
  counters;
- process 2, "coroutines": one thread track per coroutine, showing its
  states (runnable, running, waiting: reason), with flow arrows from the
  creator to the coroutine it created and from a waker to the coroutine it
  woke.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, TextIO

from ..reader import (
    BACKGROUND_TASK,
    NO_COROUTINE,
    NO_LOOP,
    NO_TASK,
    CoroState,
    Event,
    EventKind,
    LoopState,
    ResourceKind,
    Stack,
    StateTransition,
    TraceError,
)
from ._chrome import JsonWriter, TraceEvent
from ._source import EventStream, Source
from ._tracks import Track

PROCESS_PID = 1
COROUTINES_PID = 2
LOOP_TID_BASE = 1_000_000_000
COROUTINE_TID_BASE = 2_000_000_000
BACKGROUND_ASYNC_BASE = 1 << 40
MAX_FRAMES = 32
MAX_STALL_STACKS = 10


def format_frames(stack: Stack) -> list[str]:
    """Formats a stack's frames, innermost first, as ``func (file:line)``."""
    frames = [f"{f.func} ({f.file}:{f.line})" for f in stack.frames[:MAX_FRAMES]]
    if len(stack.frames) > MAX_FRAMES:
        frames.append(f"... {len(stack.frames) - MAX_FRAMES} more frames")
    return frames


def _context_key(ev: Event) -> tuple[str, int]:
    if ev.coroutine != NO_COROUTINE:
        return ("coroutine", ev.coroutine)
    return ("thread", ev.thread)


@dataclass
class PerfettoResult:
    """PerfettoResult says what an export read and wrote.

    Attributes:
        events: trace events read.
        written: trace-event JSON objects written.
        error: the TraceError that ended reading early, or None.
    """

    events: int
    written: int
    error: TraceError | None


class _Coro:
    """What the exporter keeps about one live coroutine."""

    __slots__ = ("id", "label", "step_track", "track")

    def __init__(self, cid: int, track: Track) -> None:
        self.id = cid
        self.track = track
        self.label = ""
        self.step_track: Track | None = None


class PerfettoExporter:
    """PerfettoExporter turns events into trace-event JSON, one event at a time.

    Feed it events in the reader's order with ``__call__``, then call
    ``finish``. Memory holds only what is open: live coroutines, open slices,
    open tasks and the stack samples of open stalls.
    """

    def __init__(self, out: JsonWriter, *, coroutine_tracks: bool = True) -> None:
        self._out = out
        self._coroutine_tracks = coroutine_tracks
        self._write = out.write
        self._origin: int | None = None
        self._now = 0
        self._ts = 0.0
        self._loops: dict[int, Track] = {}
        self._threads: dict[int, Track] = {}
        self._thread_names: dict[int, str] = {}
        self._loop_names: dict[int, str] = {}
        self._coros: dict[int, _Coro] = {}
        self._tasks: dict[int, Track] = {}
        self._background: dict[tuple[str, int], Track] = {}
        self._async_ids = 0
        self._ranges: dict[tuple[str, int, int, int], Track] = {}
        self._stall_samples: dict[int, Counter[Stack]] = {}
        self._flow = 0
        self.wall_time_ns: int | None = None
        self.lost_events = 0
        self._meta("process_name", PROCESS_PID, PROCESS_PID, {"name": "aiotrace"})
        self._meta("process_sort_index", PROCESS_PID, PROCESS_PID, {"sort_index": 1})
        self._meta(
            "process_name", COROUTINES_PID, COROUTINES_PID, {"name": "coroutines"}
        )
        self._meta(
            "process_sort_index", COROUTINES_PID, COROUTINES_PID, {"sort_index": 2}
        )

    # -- tracks ----------------------------------------------------------

    def _meta(self, name: str, pid: int, tid: int, args: dict[str, Any]) -> None:
        self._write({"ph": "M", "name": name, "pid": pid, "tid": tid, "args": args})

    def _loop(self, loop: int) -> Track:
        track = self._loops.get(loop)
        if track is None:
            track = self._loops[loop] = Track(
                self._out, PROCESS_PID, LOOP_TID_BASE + loop
            )
            self._meta(
                "thread_sort_index", PROCESS_PID, track.tid, {"sort_index": loop}
            )
        return track

    def _thread(self, thread: int) -> Track:
        track = self._threads.get(thread)
        if track is None:
            track = self._threads[thread] = Track(self._out, PROCESS_PID, thread)
            self._meta(
                "thread_sort_index",
                PROCESS_PID,
                thread,
                {"sort_index": 1_000_000 + len(self._threads)},
            )
        return track

    def _context(self, ev: Event) -> Track:
        """The loop's track if the event happened on a loop, else its thread's."""
        if ev.loop != NO_LOOP:
            return self._loop(ev.loop)
        return self._thread(ev.thread)

    def _coro(self, cid: int) -> _Coro:
        c = self._coros.get(cid)
        if c is None:
            tid = COROUTINE_TID_BASE + cid
            c = self._coros[cid] = _Coro(cid, Track(self._out, COROUTINES_PID, tid))
            if self._coroutine_tracks:
                self._meta(
                    "thread_sort_index", COROUTINES_PID, tid, {"sort_index": cid}
                )
        return c

    def _name_coro(self, c: _Coro) -> None:
        """Names a coroutine's track, once, when the coroutine is done with."""
        if not self._coroutine_tracks:
            return
        name = f"C{c.id} {c.label}" if c.label else f"coroutine {c.id}"
        self._meta("thread_name", COROUTINES_PID, c.track.tid, {"name": name})

    def _task(self, task: int, ts: float) -> Track:
        track = self._tasks.get(task)
        if track is None:
            # A task begun before the trace, or the background task.
            track = self._tasks[task] = Track(
                self._out, PROCESS_PID, PROCESS_PID, async_id=task
            )
            track.begin(0.0, "task", f"task {task}", "task", {"task": task})
        return track

    def _region_track(self, ev: Event, ts: float, *, create: bool) -> Track | None:
        """The async track a region goes on: its task's, or its context's.

        Regions of the background task get one track per coroutine (or
        thread) outside any coroutine, as they nest only there.
        """
        task = ev.region.task
        if task not in (BACKGROUND_TASK, NO_TASK):
            return self._task(task, ts) if create else self._tasks.get(task)
        key = _context_key(ev)
        track = self._background.get(key)
        if track is None and create:
            self._async_ids += 1
            track = self._background[key] = Track(
                self._out,
                PROCESS_PID,
                PROCESS_PID,
                async_id=BACKGROUND_ASYNC_BASE + self._async_ids,
            )
        return track

    def _flow_between(self, ts: float, name: str, src: Track, dst: Track) -> None:
        """Draws an arrow from the slice open on ``src`` to the one on ``dst``."""
        if not (src and dst):
            return
        self._flow += 1
        common: TraceEvent = {"name": name, "cat": "flow", "id": self._flow, "ts": ts}
        self._write({**common, "ph": "s", "pid": src.pid, "tid": src.tid})
        self._write({**common, "ph": "f", "bp": "e", "pid": dst.pid, "tid": dst.tid})

    # -- events ----------------------------------------------------------

    def __call__(self, ev: Event) -> None:
        """Converts one event."""
        t = ev.time
        if self._origin is None:
            self._origin = t
        # Invariant: timestamps never go backwards, so each track is in order.
        # Only the first events of a generation can be older than the last of
        # the one before; they are moved forward by at most that overlap.
        if t > self._now:
            self._now = t
            self._ts = round((t - self._origin) / 1000, 3)
        ts = self._ts
        kind = ev.kind
        if kind is EventKind.STATE_TRANSITION:
            st = ev.state_transition
            if st.resource.kind is ResourceKind.COROUTINE:
                self._coro_transition(ev, st, ts)
            elif st.resource.kind is ResourceKind.LOOP:
                self._loop_transition(st, ts)
        elif kind is EventKind.RANGE_BEGIN or kind is EventKind.RANGE_ACTIVE:
            self._range_begin(ev, ts)
        elif kind is EventKind.RANGE_END:
            self._range_end(ev, ts)
        elif kind is EventKind.STACK_SAMPLE:
            self._sample(ev, ts)
        elif kind is EventKind.TASK_BEGIN:
            task = ev.task
            track = self._tasks.get(task.id)
            if track is None:
                track = self._tasks[task.id] = Track(
                    self._out, PROCESS_PID, PROCESS_PID, async_id=task.id
                )
                args: dict[str, Any] = {"task": task.id}
                if task.parent not in (NO_TASK, 0):
                    args["parent"] = task.parent
                track.begin(ts, "task", task.type, "task", args)
        elif kind is EventKind.TASK_END:
            task = ev.task
            track = self._task(task.id, ts)
            track.end_all(ts)
            del self._tasks[task.id]
        elif kind is EventKind.REGION_BEGIN:
            region = ev.region
            self._region_track(ev, ts, create=True).begin(  # type: ignore[union-attr]
                ts, ("region", region.type), region.type, "region", self._where(ev)
            )
        elif kind is EventKind.REGION_END:
            track = self._region_track(ev, ts, create=False)
            if track is not None:
                track.end(ts, ("region", ev.region.type))
                if not track and track.async_id >= BACKGROUND_ASYNC_BASE:  # type: ignore[operator]
                    del self._background[_context_key(ev)]
        elif kind is EventKind.LOG:
            log = ev.log
            c = self._coros.get(ev.coroutine) if self._coroutine_tracks else None
            track = c.track if c is not None else self._context(ev)
            args = {"category": log.category, "message": log.message}
            if log.task != NO_TASK:
                args["task"] = log.task
            if ev.stack:
                args["stack"] = format_frames(ev.stack)
            track.instant(ts, log.category or "log", "log", args)
        elif kind is EventKind.METRIC:
            m = ev.metric
            name = m.name
            if ev.loop != NO_LOOP and name.startswith("/loop/"):
                name = f"{name} loop {ev.loop}"  # one counter track per loop
            if m.name == "/aiotrace/lost:events" and math.isfinite(m.value):
                self.lost_events = max(self.lost_events, int(m.value))
            self._write(
                {
                    "ph": "C",
                    "name": name,
                    "ts": ts,
                    "pid": PROCESS_PID,
                    "tid": PROCESS_PID,
                    "args": {"value": m.value},
                }
            )
        elif kind is EventKind.LABEL:
            self._label(ev)
        elif kind is EventKind.SYNC:
            if self.wall_time_ns is None:
                self.wall_time_ns = ev.sync.wall_time_ns
            self.lost_events = max(self.lost_events, ev.sync.lost_events)

    @staticmethod
    def _where(ev: Event) -> dict[str, Any]:
        args: dict[str, Any] = {"thread": ev.thread}
        if ev.coroutine != NO_COROUTINE:
            args["coroutine"] = ev.coroutine
        if ev.stack:
            args["stack"] = format_frames(ev.stack)
        return args

    def _label(self, ev: Event) -> None:
        # Track names are written at the end (a coroutine's when it ends):
        # a LABEL comes after the resource's first event, and once is enough.
        label = ev.label
        kind, rid = label.resource
        if kind is ResourceKind.COROUTINE:
            c = self._coro(rid)
            if not c.label:
                c.label = label.label
        elif kind is ResourceKind.THREAD:
            self._thread_names.setdefault(rid, label.label)
        elif kind is ResourceKind.LOOP:
            self._loop_names.setdefault(rid, label.label)

    def _coro_transition(self, ev: Event, st: StateTransition, ts: float) -> None:
        cid = st.resource.id
        c = self._coro(cid)
        new = st.new
        if st.old is CoroState.RUNNING and c.step_track is not None:
            c.step_track.end(ts, ("step", cid))
            c.step_track = None
        if new is CoroState.RUNNING:
            step = self._context(ev)
            step.begin(
                ts, ("step", cid), c.label or f"C{cid}", "step", {"coroutine": cid}
            )
            c.step_track = step
        if self._coroutine_tracks:
            self._coro_states(ev, st, ts, c)
        if new is CoroState.NOT_EXIST:
            del self._coros[cid]

    def _coro_states(self, ev: Event, st: StateTransition, ts: float, c: _Coro) -> None:
        """Draws a coroutine's state on its own track, with flow arrows."""
        track = c.track
        new = st.new
        track.end(ts, "state")
        if new is CoroState.RUNNING:
            track.begin(ts, "state", "running", "coroutine")
        elif new is CoroState.RUNNABLE:
            args: dict[str, Any] = {}
            if st.old is CoroState.NOT_EXIST:
                if ev.coroutine != NO_COROUTINE:
                    args["created by"] = ev.coroutine
                if ev.stack:
                    args["stack"] = format_frames(ev.stack)
            elif st.reason:
                args["reason"] = st.reason
            track.begin(ts, "state", "runnable", "coroutine", args)
            src = self._coros.get(ev.coroutine)
            if src is not None and src is not c:
                if st.old is CoroState.NOT_EXIST:
                    self._flow_between(ts, "create", src.track, track)
                elif st.old is CoroState.WAITING and st.reason == "coroutine":
                    self._flow_between(ts, "wake", src.track, track)
        elif new is CoroState.WAITING:
            args = {"reason": st.reason}
            if st.stack:
                args["stack"] = format_frames(st.stack)
            track.begin(ts, "state", f"waiting: {st.reason or '?'}", "coroutine", args)
        elif new is CoroState.NOT_EXIST:
            track.end_all(ts)
            track.instant(ts, f"end: {st.reason}", "coroutine", {"reason": st.reason})
            self._name_coro(c)

    def _loop_transition(self, st: StateTransition, ts: float) -> None:
        loop = st.resource.id
        track = self._loop(loop)
        if st.new is LoopState.RUNNING:
            if not track.is_open("run"):
                track.begin(ts, "run", "running", "loop")
        elif st.new is LoopState.IDLE:
            track.end(ts, "run")
        elif st.new is LoopState.NOT_EXIST:
            track.end_all(ts)

    def _range_key(self, ev: Event) -> tuple[str, int, int, int]:
        r = ev.range
        where = ev.thread if r.scope.kind is ResourceKind.NONE else 0
        return (r.name, int(r.scope.kind), r.scope.id, where)

    def _range_begin(self, ev: Event, ts: float) -> None:
        key = self._range_key(ev)
        if key in self._ranges:
            return  # RANGE_ACTIVE of a range already open
        r = ev.range
        kind, rid = r.scope
        if kind is ResourceKind.LOOP:
            track = self._loop(rid)
        elif kind is ResourceKind.THREAD:
            track = self._thread(rid)
        elif kind is ResourceKind.COROUTINE:
            track = self._coro(rid).track
        else:
            track = self._context(ev)
        self._ranges[key] = track
        name = r.name
        if ev.stack and r.name == "executor":
            name = f"executor: {ev.stack.frames[0].func}"
        args: dict[str, Any] = {}
        if ev.stack:
            args["stack"] = format_frames(ev.stack)
        if ev.kind is EventKind.RANGE_ACTIVE:
            args["active at trace start"] = True
        if r.name == "loop stall" and kind is ResourceKind.LOOP:
            self._stall_samples[rid] = Counter()
        track.begin(ts, ("range", key), name, "range", args)

    def _range_end(self, ev: Event, ts: float) -> None:
        key = self._range_key(ev)
        track = self._ranges.pop(key, None)
        if track is None:
            return
        args: dict[str, Any] | None = None
        r = ev.range
        if r.name == "loop stall" and r.scope.kind is ResourceKind.LOOP:
            samples = self._stall_samples.pop(r.scope.id, Counter())
            args = {
                "samples": sum(samples.values()),
                "stacks": [
                    {"count": n, "frames": format_frames(s)}
                    for s, n in samples.most_common(MAX_STALL_STACKS)
                ],
            }
        track.end(ts, ("range", key), args)

    def _sample(self, ev: Event, ts: float) -> None:
        samples = self._stall_samples.get(ev.loop)
        if samples is not None:
            samples[ev.stack] += 1
        args: dict[str, Any] = {"thread": ev.thread, "stack": format_frames(ev.stack)}
        if ev.coroutine != NO_COROUTINE:
            args["coroutine"] = ev.coroutine
        self._context(ev).instant(ts, "stack sample", "sample", args)

    def finish(self) -> None:
        """Ends every slice still open at the end of the trace."""
        ts = self._ts
        unfinished = {"unfinished": True}
        for c in self._coros.values():
            c.track.end_all(ts, unfinished)
            self._name_coro(c)
        for tracks in (self._loops, self._threads, self._tasks, self._background):
            for track in tracks.values():
                track.end_all(ts, unfinished)
        for loop, track in self._loops.items():
            name = self._loop_names.get(loop, "")
            self._meta(
                "thread_name",
                PROCESS_PID,
                track.tid,
                {"name": f"loop {loop}" + (f": {name}" if name else "")},
            )
        for thread in self._threads:
            name = self._thread_names.get(thread, "")
            self._meta(
                "thread_name",
                PROCESS_PID,
                thread,
                {"name": f"thread {thread}" + (f": {name}" if name else "")},
            )
        self._coros.clear()
        self._tasks.clear()
        self._background.clear()
        self._ranges.clear()


def write_perfetto(
    source: Source,
    out: str | os.PathLike[str] | TextIO,
    *,
    coroutine_tracks: bool = True,
) -> PerfettoResult:
    """Writes a trace as Perfetto / Chrome trace-event JSON, streaming.

    The output opens in ui.perfetto.dev and chrome://tracing. Events are
    converted as they are read, so memory does not grow with the trace.
    A malformed or truncated trace is exported up to the fault; the error
    is returned in the result, not raised.

    Args:
        source: a trace path, a binary file object, or an iterable of events.
        out: the path to write, or a text file object.
        coroutine_tracks: give every coroutine a track of its states, with
            flow arrows; False keeps only the steps on the loop tracks,
            which makes the output about 40% smaller.

    Returns:
        what was read and written.

    Raises:
        OSError: the source or the output cannot be opened.
    """
    stream = EventStream(source)
    if isinstance(out, str | os.PathLike):
        with open(out, "w", encoding="utf-8") as f:
            return _write(stream, f, coroutine_tracks)
    return _write(stream, out, coroutine_tracks)


def _write(stream: EventStream, out: TextIO, coroutine_tracks: bool) -> PerfettoResult:
    writer = JsonWriter(out)
    exporter = PerfettoExporter(writer, coroutine_tracks=coroutine_tracks)
    for ev in stream:
        exporter(ev)
    exporter.finish()
    other: dict[str, Any] = {
        "generator": "aiotrace",
        "events": stream.events,
        "lost_events": exporter.lost_events,
    }
    if exporter.wall_time_ns is not None:
        other["wall_time_ns_at_start"] = exporter.wall_time_ns
    if stream.error is not None:
        other["error"] = str(stream.error)
    writer.close(other)
    return PerfettoResult(stream.events, writer.count, stream.error)
