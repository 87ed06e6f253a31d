"""The hot path: append events to per-thread lists.

An event in memory is a tuple ``(code, time_ns, *args)`` laid out as the spec
table says (``_format.spec``). String arguments are any ``str`` and stack
arguments are ``None`` or a tuple of frames, innermost first, each
``(code_object, lasti)`` (the frame's ``f_lasti``: reading it is cheaper than
``f_lineno``) or ``(func, file, lineno)``; the encoder interns both later, off
the hot path, and turns ``lasti`` into a line there.

Recording is ``events.append((code, clock(), ...))``: one clock read and one
append to a list owned by the recording thread. The drainer takes a prefix of
each list with ``lst[:n]`` then ``del lst[:n]``; appends only ever add at the
end, so the two steps never lose or repeat an event, with or without the GIL.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

clock: Final[Callable[[], int]] = time.perf_counter_ns
"""The trace clock: monotonic nanoseconds (``time.perf_counter_ns``)."""

Event = tuple[Any, ...]

active: Recorder | None = None
"""The recorder of the running tracer; None when tracing is off."""


MAX_STACK_DEPTH: Final = 32
"""Most frames kept in a recorded stack, innermost first."""


def capture_stack(skip: int) -> tuple[tuple[Any, int], ...]:
    """Returns the caller's stack, ``skip`` frames up, as (code, lasti) pairs.

    Code objects are interned to names and files by the encoder, off the hot
    path. Costs 0.5-2.5 us on the traced thread (3-30 frames): annotations
    record stacks only when tracing was started with ``annotation_stacks``.
    """
    return stack_of(sys._getframe(skip + 1), MAX_STACK_DEPTH)


def stack_of(frame: FrameType | None, depth: int) -> tuple[tuple[Any, int], ...]:
    """Returns up to ``depth`` frames from ``frame`` outwards, as (code, lasti)."""
    frames: list[tuple[Any, int]] = []
    append = frames.append
    while frame is not None and depth:
        append((frame.f_code, frame.f_lasti))
        frame = frame.f_back
        depth -= 1
    return tuple(frames)


class ThreadBuffer:
    """ThreadBuffer holds the events one OS thread has recorded and not yet drained."""

    __slots__ = ("events", "name", "thread", "thread_id")

    def __init__(self, thread: threading.Thread) -> None:
        # Invariant: only the owning thread appends to events; only the
        # drainer removes from it, and only from the front.
        self.events: list[Event] = []
        self.thread = thread
        self.thread_id: int = threading.get_native_id()
        self.name: str = thread.name


class Recorder:
    """Recorder collects events from every thread into per-thread buffers."""

    def __init__(self, *, stacks: bool = False) -> None:
        self.stacks = stacks
        """Whether annotations record the caller's stack."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._buffers: list[ThreadBuffer] = []

    def events(self) -> list[Event]:
        """Returns the calling thread's event list; hooks append to it directly."""
        try:
            events: list[Event] = self._local.events
        except AttributeError:
            events = self._register()
        return events

    def _register(self) -> list[Event]:
        buf = ThreadBuffer(threading.current_thread())
        with self._lock:
            self._buffers.append(buf)
        self._local.events = buf.events
        return buf.events

    def take(self) -> list[tuple[ThreadBuffer, list[Event]]]:
        """Removes and returns every pending event, grouped by thread.

        Buffers of threads that have exited and hold nothing are forgotten.
        """
        with self._lock:
            buffers = list(self._buffers)
        taken: list[tuple[ThreadBuffer, list[Event]]] = []
        dead: list[ThreadBuffer] = []
        for buf in buffers:
            alive = buf.thread.is_alive()
            events = buf.events
            n = len(events)
            if n:
                chunk = events[:n]
                del events[:n]
                taken.append((buf, chunk))
            elif not alive:
                dead.append(buf)
        if dead:
            with self._lock:
                self._buffers = [b for b in self._buffers if b not in dead]
        return taken
