"""Perfetto export: a trace as Perfetto's protobuf or as Chrome trace-event
JSON, streamed event by event.

Layout (see docs/views.md):

- process 1, "aiotrace": one thread track per loop (the loop running,
  coroutine steps nested in it, loop stalls, GC, stack samples), one per OS
  thread that did something off a loop (executor work, GC, logs), the user
  tasks as async tracks with their regions nested, and the metrics as
  counters;
- process 2, "coroutines": one thread track per coroutine, showing its
  states (runnable, running, waiting: reason), with flow arrows from the
  creator to the coroutine it created and from a waker to the coroutine it
  woke.

The exporter decides what is drawn where; a Sink (``_pftrace.ProtoWriter``
or ``_chrome.JsonWriter``) encodes it.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal

from ..reader import (
    BACKGROUND_TASK,
    NO_COROUTINE,
    NO_LOOP,
    NO_TASK,
    CoroState,
    Event,
    EventKind,
    Label,
    Log,
    LoopState,
    Metric,
    Range,
    Region,
    ResourceKind,
    Stack,
    StateTransition,
    Sync,
    Task,
    TraceError,
)
from ._chrome import JsonWriter
from ._pftrace import ProtoWriter
from ._source import EventStream, Source
from ._tracks import Flow, Sink, Track

Format = Literal["proto", "json"]
_RUNNING = CoroState.RUNNING
_RUNNABLE = CoroState.RUNNABLE
_WAITING = CoroState.WAITING
_NOT_EXIST = CoroState.NOT_EXIST
_STATE_TRANSITION = EventKind.STATE_TRANSITION
_COROUTINE = ResourceKind.COROUTINE

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
        written: what was written: TracePackets of track events and track
            descriptors (protobuf), or trace-event JSON objects.
        error: the TraceError that ended reading early, or None.
        format: ``"proto"`` or ``"json"``.
    """

    events: int
    written: int
    error: TraceError | None
    format: Format = "json"


class _Coro:
    """What the exporter keeps about one live coroutine."""

    __slots__ = ("id", "label", "step_track", "track")

    def __init__(self, cid: int) -> None:
        self.id = cid
        self.track: Track | None = None  # made when first drawn on
        self.label = ""
        self.step_track: Track | None = None


class PerfettoExporter:
    """PerfettoExporter turns events into tracks and slices, one at a time.

    Feed it events in the reader's order with ``__call__``, then call
    ``finish``; it draws through ``sink``. Memory holds only what is open:
    live coroutines, open slices, open tasks and the stack samples of open
    stalls. Times given to the sink are nanoseconds since the first event.
    """

    def __init__(self, sink: Sink, *, coroutine_tracks: bool = True) -> None:
        self._out = sink
        self._coroutine_tracks = coroutine_tracks
        self._origin: int | None = None
        self._now = 0
        self._ts = 0
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
        self._waiting: dict[str, str] = {}  # reason -> slice name
        self._handlers: dict[EventKind, Callable[[Event, Any, int], None]] = {
            EventKind.RANGE_BEGIN: self._range_begin,
            EventKind.RANGE_ACTIVE: self._range_begin,
            EventKind.RANGE_END: self._range_end,
            EventKind.STACK_SAMPLE: self._sample,
            EventKind.TASK_BEGIN: self._task_begin,
            EventKind.TASK_END: self._task_end,
            EventKind.REGION_BEGIN: self._region_begin,
            EventKind.REGION_END: self._region_end,
            EventKind.LOG: self._log,
            EventKind.METRIC: self._metric,
            EventKind.LABEL: self._label,
            EventKind.SYNC: self._sync,
        }
        self.wall_time_ns: int | None = None
        self.lost_events = 0
        sink.process(PROCESS_PID, "aiotrace", 1)
        sink.process(COROUTINES_PID, "coroutines", 2)

    # -- tracks ----------------------------------------------------------

    def _loop(self, loop: int) -> Track:
        track = self._loops.get(loop)
        if track is None:
            handle = self._out.thread_track(PROCESS_PID, LOOP_TID_BASE + loop, loop)
            track = self._loops[loop] = Track(self._out, handle)
        return track

    def _thread(self, thread: int) -> Track:
        track = self._threads.get(thread)
        if track is None:
            handle = self._out.thread_track(
                PROCESS_PID, thread, 1_000_000 + len(self._threads) + 1
            )
            track = self._threads[thread] = Track(self._out, handle)
        return track

    def _context(self, ev: Event) -> Track:
        """The loop's track if the event happened on a loop, else its thread's."""
        if ev.loop != NO_LOOP:
            return self._loop(ev.loop)
        return self._thread(ev.thread)

    def _coro(self, cid: int) -> _Coro:
        c = self._coros.get(cid)
        if c is None:
            c = self._coros[cid] = _Coro(cid)
        return c

    def _coro_track(self, c: _Coro) -> Track:
        track = c.track
        if track is None:
            sort = c.id if self._coroutine_tracks else None
            handle = self._out.thread_track(
                COROUTINES_PID, COROUTINE_TID_BASE + c.id, sort
            )
            track = c.track = Track(self._out, handle)
        return track

    def _name_coro(self, c: _Coro) -> None:
        """Names a coroutine's track, once, when the coroutine is done with."""
        if not self._coroutine_tracks or c.track is None:
            return
        name = f"C{c.id} {c.label}" if c.label else f"coroutine {c.id}"
        self._out.name_thread(c.track.handle, name)

    def _async(self, async_id: int, name: str) -> Track:
        handle = self._out.async_track(PROCESS_PID, async_id, name)
        return Track(self._out, handle, is_async=True)

    def _task(self, task: int, ts: int) -> Track:
        track = self._tasks.get(task)
        if track is None:
            # A task begun before the trace, or the background task.
            name = f"task {task}"
            track = self._tasks[task] = self._async(task, name)
            track.begin(0, "task", name, "task", {"task": task})
        return track

    def _region_track(self, ev: Event, ts: int, *, create: bool) -> Track | None:
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
            track = self._background[key] = self._async(
                BACKGROUND_ASYNC_BASE + self._async_ids, ev.region.type
            )
        return track

    # -- events ----------------------------------------------------------

    def __call__(self, ev: Event) -> None:
        """Converts one event."""
        # An Event is a tuple underneath: unpacking it is quickest.
        kind, t, _, _, _, _, d = ev
        # Invariant: timestamps never go backwards, so each track is in order.
        # Only the first events of a generation can be older than the last of
        # the one before; they are moved forward by at most that overlap.
        if t > self._now:
            if self._origin is None:
                self._origin = t
            self._now = t
            self._ts = t - self._origin
        ts = self._ts
        if kind is _STATE_TRANSITION:
            if d.resource.kind is _COROUTINE:
                self._coro_transition(ev, d, ts)
            elif d.resource.kind is ResourceKind.LOOP:
                self._loop_transition(d, ts)
            return
        handle = self._handlers.get(kind)
        if handle is not None:
            handle(ev, d, ts)

    def _task_begin(self, ev: Event, task: Task, ts: int) -> None:
        track = self._tasks.get(task.id)
        if track is None:
            track = self._tasks[task.id] = self._async(task.id, task.type)
            args: dict[str, Any] = {"task": task.id}
            if task.parent not in (NO_TASK, 0):
                args["parent"] = task.parent
            track.begin(ts, "task", task.type, "task", args)

    def _task_end(self, ev: Event, task: Task, ts: int) -> None:
        track = self._task(task.id, ts)
        track.end_all(ts)
        del self._tasks[task.id]

    def _region_begin(self, ev: Event, region: Region, ts: int) -> None:
        self._region_track(ev, ts, create=True).begin(  # type: ignore[union-attr]
            ts, ("region", region.type), region.type, "region", self._where(ev)
        )

    def _region_end(self, ev: Event, region: Region, ts: int) -> None:
        track = self._region_track(ev, ts, create=False)
        if track is not None:
            track.end(ts, ("region", region.type))
            if not track and region.task in (BACKGROUND_TASK, NO_TASK):
                del self._background[_context_key(ev)]

    def _log(self, ev: Event, log: Log, ts: int) -> None:
        c = self._coros.get(ev.coroutine) if self._coroutine_tracks else None
        track = self._coro_track(c) if c is not None else self._context(ev)
        args: dict[str, Any] = {"category": log.category, "message": log.message}
        if log.task != NO_TASK:
            args["task"] = log.task
        if ev.stack:
            args["stack"] = format_frames(ev.stack)
        track.instant(ts, log.category or "log", "log", args)

    def _metric(self, ev: Event, m: Metric, ts: int) -> None:
        name = m.name
        if ev.loop != NO_LOOP and name.startswith("/loop/"):
            name = f"{name} loop {ev.loop}"  # one counter track per loop
        if m.name == "/aiotrace/lost:events" and math.isfinite(m.value):
            self.lost_events = max(self.lost_events, int(m.value))
        self._out.counter(ts, name, m.value)

    def _sync(self, ev: Event, sync: Sync, ts: int) -> None:
        if self.wall_time_ns is None:
            self.wall_time_ns = sync.wall_time_ns
        self.lost_events = max(self.lost_events, sync.lost_events)

    @staticmethod
    def _where(ev: Event) -> dict[str, Any]:
        args: dict[str, Any] = {"thread": ev.thread}
        if ev.coroutine != NO_COROUTINE:
            args["coroutine"] = ev.coroutine
        if ev.stack:
            args["stack"] = format_frames(ev.stack)
        return args

    def _label(self, ev: Event, label: Label, ts: int) -> None:
        # Track names are written at the end (a coroutine's when it ends):
        # a LABEL comes after the resource's first event, and once is enough.
        kind, rid = label.resource
        if kind is ResourceKind.COROUTINE:
            c = self._coro(rid)
            if not c.label:
                c.label = label.label
        elif kind is ResourceKind.THREAD:
            self._thread_names.setdefault(rid, label.label)
        elif kind is ResourceKind.LOOP:
            self._loop_names.setdefault(rid, label.label)

    def _coro_transition(self, ev: Event, st: StateTransition, ts: int) -> None:
        (_, cid), reason, stack, old, new = st
        c = self._coros.get(cid)
        if c is None:
            c = self._coros[cid] = _Coro(cid)
        # A step's key on its loop's track is the _Coro: unique, and quick.
        if old is _RUNNING:
            step_track = c.step_track
            if step_track is not None:
                step_track.end(ts, c)
                c.step_track = None
        if new is _RUNNING:
            loop = ev[3]
            step = self._loops.get(loop)
            if step is None:
                step = self._context(ev)
            step.begin(ts, c, c.label or f"C{cid}", "step", {"coroutine": cid})
            c.step_track = step
        if self._coroutine_tracks:
            track = c.track
            if track is None:
                track = self._coro_track(c)
            if new is _RUNNING:
                track.switch(ts, "state", "running", "coroutine")
            elif new is _WAITING:
                args: dict[str, Any] = {"reason": reason}
                if stack:
                    args["stack"] = format_frames(stack)
                name = self._waiting.get(reason)
                if name is None:
                    name = f"waiting: {reason or '?'}"
                    if len(self._waiting) < 10_000:
                        self._waiting[reason] = name
                track.switch(ts, "state", name, "coroutine", args)
            else:
                self._coro_states(ev, st, ts, c, track)
        if new is _NOT_EXIST:
            del self._coros[cid]

    def _coro_states(
        self, ev: Event, st: StateTransition, ts: int, c: _Coro, track: Track
    ) -> None:
        """Draws a coroutine's state on its own track, with flow arrows, but
        for running and waiting (in ``_coro_transition``, for speed)."""
        new = st.new
        if new is _RUNNABLE:
            old = st.old
            args: dict[str, Any] = {}
            if old is _NOT_EXIST:
                if ev.coroutine != NO_COROUTINE:
                    args["created by"] = ev.coroutine
                if ev.stack:
                    args["stack"] = format_frames(ev.stack)
            elif st.reason:
                args["reason"] = st.reason
            flow = None
            src = self._coros.get(ev.coroutine)
            # An arrow from the slice open on the creator's or waker's track.
            if src is not None and src is not c and src.track:
                if old is _NOT_EXIST:
                    self._flow += 1
                    flow = Flow(self._flow, "create", src.track.handle)
                elif old is _WAITING and st.reason == "coroutine":
                    self._flow += 1
                    flow = Flow(self._flow, "wake", src.track.handle)
            track.switch(ts, "state", "runnable", "coroutine", args, flow)
        elif new is _NOT_EXIST:
            track.end(ts, "state")
            track.end_all(ts)
            track.instant(ts, f"end: {st.reason}", "coroutine", {"reason": st.reason})
            self._name_coro(c)
        else:
            track.end(ts, "state")

    def _loop_transition(self, st: StateTransition, ts: int) -> None:
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

    def _range_begin(self, ev: Event, r: Range, ts: int) -> None:
        key = self._range_key(ev)
        if key in self._ranges:
            return  # RANGE_ACTIVE of a range already open
        kind, rid = r.scope
        if kind is ResourceKind.LOOP:
            track = self._loop(rid)
        elif kind is ResourceKind.THREAD:
            track = self._thread(rid)
        elif kind is ResourceKind.COROUTINE:
            track = self._coro_track(self._coro(rid))
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

    def _range_end(self, ev: Event, r: Range, ts: int) -> None:
        key = self._range_key(ev)
        track = self._ranges.pop(key, None)
        if track is None:
            return
        args: dict[str, Any] | None = None
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

    def _sample(self, ev: Event, d: None, ts: int) -> None:
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
            if c.track is not None:
                c.track.end_all(ts, unfinished)
                self._name_coro(c)
        for tracks in (self._loops, self._threads, self._tasks, self._background):
            for track in tracks.values():
                track.end_all(ts, unfinished)
        for loop, track in self._loops.items():
            name = self._loop_names.get(loop, "")
            self._out.name_thread(
                track.handle, f"loop {loop}" + (f": {name}" if name else "")
            )
        for thread, track in self._threads.items():
            name = self._thread_names.get(thread, "")
            self._out.name_thread(
                track.handle, f"thread {thread}" + (f": {name}" if name else "")
            )
        self._coros.clear()
        self._tasks.clear()
        self._background.clear()
        self._ranges.clear()


def write_perfetto(
    source: Source,
    out: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    coroutine_tracks: bool = True,
    format: Format | None = None,
) -> PerfettoResult:
    """Writes a trace for Perfetto, streaming: its protobuf format, or JSON.

    ``"proto"`` is Perfetto's own TracePacket / TrackEvent protobuf
    (``.pftrace``), which ui.perfetto.dev and trace processor open; it is a
    tenth of the JSON's size or less. ``"json"`` is Chrome trace-event
    JSON, which ui.perfetto.dev and chrome://tracing open. Events are
    converted as they are read, so memory does not grow with the trace.
    A malformed or truncated trace is exported up to the fault; the error
    is returned in the result, not raised.

    Args:
        source: a trace path, a binary file object, or an iterable of events.
        out: the path to write, or a file object: binary for protobuf,
            text for JSON.
        coroutine_tracks: give every coroutine a track of its states, with
            flow arrows; False keeps only the steps on the loop tracks,
            which makes the output about 40% smaller.
        format: ``"proto"`` or ``"json"``; by default JSON for a path
            ending in ``.json`` or a text file object, else protobuf.

    Returns:
        what was read and written.

    Raises:
        OSError: the source or the output cannot be opened.
        ValueError: an unknown format.
    """
    if format is None:
        if isinstance(out, str | os.PathLike):
            format = "json" if os.fspath(out).endswith(".json") else "proto"
        else:
            format = "json" if isinstance(out, io.TextIOBase) else "proto"
    if format not in ("proto", "json"):
        raise ValueError(f"unknown format {format!r}: use 'proto' or 'json'")
    stream = EventStream(source)
    if isinstance(out, str | os.PathLike):
        if format == "json":
            with open(out, "w", encoding="utf-8") as f:
                return _write_json(stream, f, coroutine_tracks)
        with open(out, "wb") as b:
            return _write_proto(stream, b, coroutine_tracks)
    if format == "json":
        return _write_json(stream, out, coroutine_tracks)  # type: ignore[arg-type]
    return _write_proto(stream, out, coroutine_tracks)  # type: ignore[arg-type]


def _export(stream: EventStream, sink: Sink, coroutine_tracks: bool) -> dict[str, Any]:
    """Runs the exporter over the stream; returns what the trace says of itself."""
    exporter = PerfettoExporter(sink, coroutine_tracks=coroutine_tracks)
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
    return other


def _write_json(
    stream: EventStream, out: IO[str], coroutine_tracks: bool
) -> PerfettoResult:
    writer = JsonWriter(out)
    writer.close(_export(stream, writer, coroutine_tracks))
    return PerfettoResult(stream.events, writer.count, stream.error, "json")


def _write_proto(
    stream: EventStream, out: IO[bytes], coroutine_tracks: bool, compress: bool = True
) -> PerfettoResult:
    writer = ProtoWriter(out, compress=compress)
    writer.close(_export(stream, writer, coroutine_tracks))
    return PerfettoResult(stream.events, writer.count, stream.error, "proto")
