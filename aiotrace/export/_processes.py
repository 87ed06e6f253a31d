"""Perfetto export of several traces, one per process, on one timeline.

Each trace is exported as ``write_perfetto`` would export it alone, through
a sink that moves it: its two processes ("aiotrace" and "coroutines") get
pids of their own and names saying which process they show, its times are
shifted so that every trace lies where its wall-clock sync puts it, and its
flow arrows and counters are kept apart from the other traces'. The
alignment is ``analysis._multi``'s: the offset of each trace's first sync.
"""

from __future__ import annotations

import heapq
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ..reader import Event, EventKind, Reader, ResourceID, ResourceKind, TraceError
from ._chrome import JsonWriter
from ._perfetto import Format, PerfettoExporter
from ._pftrace import ProtoWriter
from ._source import EventStream
from ._tracks import Args, Flow, Sink


@dataclass
class ProcessExport:
    """What the export of one process's trace read.

    ``shift_ns`` is where its first event lies on the common timeline (ns
    after the earliest trace's first event); ``aligned`` is False for a
    trace without a clock sync (placed at 0).
    """

    file: str
    name: str
    events: int
    error: TraceError | None
    shift_ns: int
    aligned: bool


@dataclass
class ProcessesResult:
    """What ``write_perfetto_processes`` read and wrote."""

    processes: list[ProcessExport]
    written: int
    format: Format


class _Moved:
    """A Sink that puts one trace's tracks in processes of their own and
    shifts its times onto the common timeline."""

    def __init__(self, sink: Sink, index: int, name: str, shift_ns: int) -> None:
        self._sink = sink
        self._base = 2 * index  # the exporter uses pids 1 and 2
        self._name = name
        self._shift = shift_ns
        self._flows = (index + 1) << 40

    def _flow(self, flow: Flow | None) -> Flow | None:
        if flow is None:
            return None
        return Flow(flow.id + self._flows, flow.name, flow.src)

    def process(self, pid: int, name: str, sort_index: int) -> None:
        self._sink.process(
            pid + self._base, f"{self._name}: {name}", sort_index + self._base
        )

    def thread_track(self, pid: int, tid: int, sort_index: int | None) -> Any:
        return self._sink.thread_track(pid + self._base, tid, sort_index)

    def async_track(self, pid: int, async_id: int, name: str) -> Any:
        return self._sink.async_track(pid + self._base, async_id, name)

    def name_thread(self, track: Any, name: str) -> None:
        self._sink.name_thread(track, name)

    def begin(
        self,
        track: Any,
        ts: int,
        name: str,
        cat: str,
        args: Args | None,
        flow: Flow | None,
    ) -> None:
        self._sink.begin(track, ts + self._shift, name, cat, args, self._flow(flow))

    def end(self, track: Any, ts: int, name: str, cat: str, args: Args | None) -> None:
        self._sink.end(track, ts + self._shift, name, cat, args)

    def switch(
        self,
        track: Any,
        ts: int,
        old_name: str,
        old_cat: str,
        name: str,
        cat: str,
        args: Args | None,
        flow: Flow | None,
    ) -> None:
        self._sink.switch(
            track,
            ts + self._shift,
            old_name,
            old_cat,
            name,
            cat,
            args,
            self._flow(flow),
        )

    def instant(self, track: Any, ts: int, name: str, cat: str, args: Args) -> None:
        self._sink.instant(track, ts + self._shift, name, cat, args)

    def counter(self, ts: int, name: str, value: float) -> None:
        self._sink.counter(ts + self._shift, f"{self._name} {name}", value)


def _placement(path: str) -> tuple[int | None, int | None]:
    """(the trace's first event time, its wall clock minus trace clock at
    its first sync), each None if the trace has none."""
    first: int | None = None
    with open(path, "rb") as f:
        try:
            for ev in Reader(f):
                if first is None:
                    first = ev.time
                if ev.kind == EventKind.SYNC:
                    return first, ev.sync.wall_time_ns - ev.time
        except TraceError:
            pass
    return first, None


def write_perfetto_processes(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    coroutine_tracks: bool = True,
    format: Format | None = None,
) -> ProcessesResult:
    """Writes several traces (one per process) into one Perfetto file, each
    trace as its processes, lined up by their wall-clock syncs.

    As ``write_perfetto`` otherwise: a trace cut short or malformed is
    exported up to its fault, said in its ``ProcessExport.error``.

    Raises:
        OSError: a trace or the output cannot be opened.
        ValueError: an unknown format.
    """
    files = [os.fspath(p) for p in paths]
    placed = [_placement(f) for f in files]
    walls = [
        first + offset
        for first, offset in placed
        if first is not None and offset is not None
    ]
    origin = min(walls, default=0)
    if format is None:
        if isinstance(out, str | os.PathLike):
            format = "json" if os.fspath(out).endswith(".json") else "proto"
        else:
            format = "json" if isinstance(out, io.TextIOBase) else "proto"
    if format not in ("proto", "json"):
        raise ValueError(f"unknown format {format!r}: use 'proto' or 'json'")
    if isinstance(out, str | os.PathLike):
        mode = "w" if format == "json" else "wb"
        encoding = "utf-8" if format == "json" else None
        with open(out, mode, encoding=encoding) as f:
            return _write(files, placed, origin, f, coroutine_tracks, format)
    return _write(files, placed, origin, out, coroutine_tracks, format)


def _write(
    files: list[str],
    placed: list[tuple[int | None, int | None]],
    origin: int,
    out: IO[Any],
    coroutine_tracks: bool,
    format: Format,
) -> ProcessesResult:
    from ..analysis._multi import pid_of

    writer: JsonWriter | ProtoWriter
    writer = JsonWriter(out) if format == "json" else ProtoWriter(out)
    done: list[ProcessExport] = []
    for i, (file, (first, offset)) in enumerate(zip(files, placed, strict=True)):
        pid = pid_of(file)
        name = f"pid {pid}" if pid is not None else os.path.basename(file)
        aligned = first is not None and offset is not None
        shift = (
            first + offset - origin if first is not None and offset is not None else 0
        )
        stream = EventStream(file)
        exporter = PerfettoExporter(
            _Moved(writer, i, name, shift), coroutine_tracks=coroutine_tracks
        )
        for ev in stream:
            exporter(ev)
        exporter.finish()
        done.append(
            ProcessExport(file, name, stream.events, stream.error, shift, aligned)
        )
    writer.close(
        {
            "generator": "aiotrace",
            "processes": [
                {"file": p.file, "name": p.name, "shift_ns": p.shift_ns} for p in done
            ],
            "wall_time_ns_at_start": origin,
        }
    )
    return ProcessesResult(done, writer.count, format)


COROUTINE_STRIDE = 1 << 32
"""The i-th trace's coroutine and task ids are moved up by i times this."""
LOOP_STRIDE = 1000
"""The i-th trace's loop ids are moved up by i times this."""


def merged_events(
    paths: Sequence[str | os.PathLike[str]],
    errors: list[tuple[str, TraceError]] | None = None,
) -> Iterator[Event]:
    """The events of several traces (one per process) as one stream, in
    time order on the first trace's clock, lined up by their clock syncs.

    Ids are kept apart: the i-th trace's coroutines and user tasks are moved
    up by ``i * COROUTINE_STRIDE``, its loops by ``i * LOOP_STRIDE`` (OS
    thread ids are already unique on one machine), and its loops' labels
    name its process (``pid 4830: ...``). This is how one HTML report shows
    every process on one timeline.

    A trace cut short or malformed ends its own stream at the fault, the
    others go on; (file, error) is appended to ``errors`` (if given, else
    the error is raised).

    Raises:
        OSError: a trace cannot be opened.
        reader.TraceError: a trace is malformed and ``errors`` is None.
    """
    from ..analysis._multi import pid_of

    files = [os.fspath(p) for p in paths]
    placed = [_placement(f) for f in files]
    base = next((o for _, o in placed if o is not None), 0)
    streams = []
    for i, (file, (_, offset)) in enumerate(zip(files, placed, strict=True)):
        pid = pid_of(file)
        name = f"pid {pid}" if pid is not None else os.path.basename(file)
        shift = 0 if offset is None else offset - base
        streams.append(_moved_events(file, i, name, shift, errors))
    return heapq.merge(*streams, key=lambda ev: ev[1])


def _moved_events(
    file: str,
    i: int,
    name: str,
    shift: int,
    errors: list[tuple[str, TraceError]] | None,
) -> Iterator[Event]:
    cs, ls = i * COROUTINE_STRIDE, i * LOOP_STRIDE

    def coro(c: int) -> int:
        return c + cs if c >= 0 else c

    def task(t: int) -> int:
        return t + cs if t > 0 else t  # BACKGROUND_TASK and NO_TASK stay

    def res(r: ResourceID) -> ResourceID:
        if r.kind is ResourceKind.COROUTINE:
            return ResourceID(r.kind, coro(r.id))
        if r.kind is ResourceKind.LOOP:
            return ResourceID(r.kind, r.id + ls if r.id >= 0 else r.id)
        if r.kind is ResourceKind.NONE:  # process-wide (GC): one per process
            return ResourceID(r.kind, r.id + i)
        return r

    with open(file, "rb") as f:
        try:
            yield from _moved(Reader(f), i, name, shift, coro, task, res)
        except TraceError as exc:
            if errors is None:
                raise
            errors.append((file, exc))


def _moved(
    events: Iterable[Event],
    i: int,
    name: str,
    shift: int,
    coro: Callable[[int], int],
    task: Callable[[int], int],
    res: Callable[[ResourceID], ResourceID],
) -> Iterator[Event]:
    ls = i * LOOP_STRIDE
    for ev in events:
        kind, t, c, loop, thread, stack, d = ev
        if i:
            if kind is EventKind.STATE_TRANSITION:
                d = d._replace(resource=res(d.resource))
            elif kind in (EventKind.TASK_BEGIN, EventKind.TASK_END):
                d = d._replace(id=task(d.id), parent=task(d.parent))
            elif kind in (
                EventKind.REGION_BEGIN,
                EventKind.REGION_END,
                EventKind.LOG,
            ):
                d = d._replace(task=task(d.task))
            elif kind in (
                EventKind.RANGE_BEGIN,
                EventKind.RANGE_ACTIVE,
                EventKind.RANGE_END,
            ):
                d = d._replace(scope=res(d.scope))
            c = coro(c)
            loop = loop + ls if loop >= 0 else loop
        if kind is EventKind.LABEL:
            d = d._replace(resource=res(d.resource))
            if d.resource.kind is ResourceKind.LOOP:
                d = d._replace(label=f"{name}: {d.label}")
        yield Event(kind, t + shift, c, loop, thread, stack, d)
