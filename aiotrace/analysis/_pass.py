"""What analyze() and profile() share: reading a source, progress, truncation,
the trace's time span and the loop stall events."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Generic, Protocol, TypeVar

from ..reader import (
    LOST_METRIC,
    NO_COROUTINE,
    Event,
    EventKind,
    Reader,
    ResourceKind,
    TraceError,
)
from ._loops import LOOP_CPU, LOOP_RUNQUEUE, LoopAccounting
from ._records import usable
from ._stalls import GC_PREFIX, STALL, STALL_METRICS, StallTracker

Progress = Callable[[int, "int | None"], None]
"""progress(done, total), called at each generation and at the end: bytes
read of a file (total its size, when known), or events read of an iterable
of events (total None)."""

ByBytes = tuple[Callable[[], int], "int | None"]
"""(bytes read so far, the input's size or None), for progress by bytes."""

_TRUNCATED = "the trace is truncated"

_STACK_SAMPLE, _METRIC = EventKind.STACK_SAMPLE, EventKind.METRIC
_RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END = (
    EventKind.RANGE_BEGIN,
    EventKind.RANGE_ACTIVE,
    EventKind.RANGE_END,
)
_LOOP = ResourceKind.LOOP


class Result(Protocol):
    """Result is what every pass's result records of the trace read."""

    start_ns: int
    end_ns: int
    events: int
    lost_events: int
    truncated: str | None


R = TypeVar("R", bound=Result)


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


def read_source(
    source: str | os.PathLike[str] | IO[bytes] | Iterable[Event],
    what: str,
    progress: Progress | None,
    run: Callable[[Iterable[Event], ByBytes | None], R],
) -> R:
    """Runs ``run(events, by_bytes)`` over a path, binary file or iterable of
    events; ``what`` names the caller in the error for bytes."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return read_source(f, what, progress, run)
    if callable(getattr(source, "read", None)):
        total = _size(source)
        counting = _CountingStream(source)
        reader = Reader(counting)
        result = run(reader, (lambda: counting.done, total) if progress else None)
        result.lost_events = max(result.lost_events, reader.lost_events)
        return result
    if isinstance(source, bytes | bytearray | memoryview):
        raise TypeError(f"{what}() takes a path or a binary file, not the bytes")
    return run(iter(source), None)  # type: ignore[arg-type]


class StreamPass(Generic[R]):
    """StreamPass is one run over a stream of events into ``result``.

    A subclass's ``_consume`` reads the events; ``_span`` runs it and
    records the counts, the time span and a truncation in ``result``.
    A reader error before the first event is raised at once.
    """

    def __init__(
        self,
        events: Iterable[Event],
        by_bytes: ByBytes | None,
        progress: Progress | None,
        result: R,
        name: Callable[[int], str],
    ) -> None:
        self.events = events
        self.by_bytes = by_bytes
        self.progress = progress
        self.result = result
        self.loops = LoopAccounting()
        self.stalls = StallTracker(name)
        self.error: TraceError | None = None
        self._gc_open: dict[str, int] = {}  # GC range name -> its begin

    def _report(self, n: int) -> None:
        assert self.progress is not None
        if self.by_bytes is not None:
            done, total = self.by_bytes
            self.progress(done(), total)
        else:
            self.progress(n, None)

    def _consume(self, events: Iterator[Event], last: int) -> tuple[int, int]:
        """Reads ``events`` (``last`` is the first one's time); returns the
        number of events and the last time.

        A TraceError from the reader ends the pass: it is kept in ``error``
        and the counts so far are returned.
        """
        raise NotImplementedError

    def _consume_records(self, reader: Reader) -> tuple[int, int | None, int]:
        """Reads ``reader``'s records (see ``_records``); returns the number
        of events, the first time (None if none) and the last.

        A TraceError from the reader ends the pass, as in ``_consume``.
        """
        raise NotImplementedError

    def _span(self) -> int:
        """Runs ``_consume`` and records what it read; returns the end time.

        Raises the reader's error unless it is a truncation after at least
        one event (the result then covers what was read).
        """
        r = self.result
        first: int | None = None
        reader = usable(self.events)
        if reader is not None:
            n, first, last = self._consume_records(reader)
        else:
            events: Iterator[Event] = iter(self.events)
            for ev in events:  # the first event, for the start time
                first = ev[1]
                events = itertools.chain((ev,), events)
                break
            n, last = self._consume(events, first if first is not None else 0)
        if self.error is not None:
            if not self.error.reason.startswith(_TRUNCATED) or n == 0:
                raise self.error
            r.truncated = str(self.error)
        if self.progress is not None:
            self._report(n)
        r.events = n
        r.start_ns = first if first is not None else 0
        r.end_ns = max(last, r.start_ns)
        return r.end_ns

    def _stall_event(self, ev: Event) -> None:
        """Handles stack samples, loop stall ranges and lost-event metrics."""
        kind, t, coro, loop, thread, stack, d = ev
        stalls = self.stalls
        if kind is _STACK_SAMPLE:
            stalls.sample(loop, thread, coro, stack)
        elif kind is _RANGE_BEGIN or kind is _RANGE_ACTIVE:
            if d[0].startswith(GC_PREFIX):
                self._gc_open[d[0]] = t
            elif d[0] == STALL and d[1][0] is _LOOP:
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
            elif d[0].startswith(GC_PREFIX):
                t0 = self._gc_open.pop(d[0], None)
                if t0 is not None and stalls.open:
                    stalls.gc(d[0], t0, t)
        elif kind is _METRIC and d[0] in STALL_METRICS:
            if math.isfinite(d[1]):
                stalls.metric(loop, thread, d[0], d[1])
        elif kind is _METRIC and (d[0] == LOOP_CPU or d[0] == LOOP_RUNQUEUE):
            if math.isfinite(d[1]):
                self.loops.metric(loop, thread, t, d[0], d[1])
        elif kind is _METRIC and d[0] == LOST_METRIC:
            lost = d[1]
            # Any number is a valid metric; only a finite count says how
            # many were lost (NaN or inf say nothing, and int() of them raises).
            if lost > 0 and math.isfinite(lost):
                r = self.result
                r.lost_events = max(r.lost_events, int(lost))
