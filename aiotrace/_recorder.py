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

from ._format.spec import C

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


def _thread_object(ident: int) -> threading.Thread | None:
    """The Thread object of thread ``ident``, or None while it is starting
    (or for a thread the threading module does not know).

    ``threading.current_thread()`` would make a dummy Thread there: a GC
    callback can record while a new thread is still starting.
    """
    thread: threading.Thread | None = threading._active.get(ident)  # type: ignore[attr-defined]
    if thread is None:
        # A starting Thread waits in _limbo until it is active.
        for t in list(threading._limbo):  # type: ignore[attr-defined]
            if getattr(t, "_ident", None) == ident:
                return t  # type: ignore[no-any-return]
    return thread


class ThreadBuffer:
    """ThreadBuffer holds the events one OS thread has recorded and not yet drained."""

    __slots__ = ("_thread", "events", "ident", "in_flight", "stuck", "thread_id")

    def __init__(self) -> None:
        # Invariant: only the owning thread appends to events; only the
        # drainer removes from it, and only from the front.
        self.events: list[Event] = []
        self.ident = threading.get_ident()
        self.thread_id: int = threading.get_native_id()
        self._thread = _thread_object(self.ident)
        self.stuck = 0  # a coroutine whose step's end never came (cut_point)
        self.in_flight: tuple[int, int] | None = None
        """The (coroutine, start) of the step running at the last ``take``
        of this buffer, whose record was not yet in it; or None."""

    @property
    def thread(self) -> threading.Thread | None:
        """The thread's Thread object, once the threading module has it."""
        if self._thread is None:
            self._thread = _thread_object(self.ident)
        return self._thread

    @property
    def name(self) -> str:
        """The thread's name."""
        thread = self.thread
        return f"thread {self.thread_id}" if thread is None else thread.name

    def is_alive(self) -> bool:
        """Whether the thread may still record (unknown threads count as alive)."""
        thread = self.thread
        return thread is None or thread.is_alive()


class Recorder:
    """Recorder collects events from every thread into per-thread buffers."""

    def __init__(self, *, stacks: bool = False) -> None:
        self.stacks = stacks
        """Whether annotations record the caller's stack."""
        self._local = threading.local()
        # Invariant: any thread appends to _new (atomically, under the GIL);
        # only take() moves buffers from _new to _buffers, its own list.
        self._new: list[ThreadBuffer] = []
        self._buffers: list[ThreadBuffer] = []

    def events(self) -> list[Event]:
        """Returns the calling thread's event list; hooks append to it directly."""
        try:
            events: list[Event] = self._local.events
        except AttributeError:
            events = self._register()
        return events

    def _register(self) -> list[Event]:
        # No lock: a GC callback records, so this can run inside any
        # allocation, including one made while some lock is held.
        buf = ThreadBuffer()
        self._new.append(buf)
        self._local.events = buf.events
        return buf.events

    def take(
        self, states: dict[int, Any] | None = None
    ) -> list[tuple[ThreadBuffer, list[Event]]]:
        """Removes and returns every pending event, grouped by thread.

        ``states`` maps ``id(events list)`` to the loop hooks' ThreadState of
        that thread: for those, each cut is placed where the hooks' state
        says which step runs (``cut_point``), and the buffer's ``in_flight``
        tells it. Called by one thread at a time (the drainer's). Buffers of
        threads that have exited and hold nothing are forgotten.
        """
        new = self._new
        if new:
            n = len(new)
            self._buffers += new[:n]
            del new[:n]
        taken: list[tuple[ThreadBuffer, list[Event]]] = []
        dead = False
        for buf in self._buffers:
            alive = buf.is_alive()
            events = buf.events
            ts = None if states is None else states.get(id(events))
            if ts is None:  # no loop hooks on it (any more: it exited)
                n = len(events)
                buf.in_flight = None
            elif events:
                n, buf.in_flight = cut_point(events, ts, buf)
            else:
                n = 0
            if n:
                chunk = events[:n]
                del events[:n]
                taken.append((buf, chunk))
            elif not alive:
                dead = True
        if dead:
            self._buffers = [b for b in self._buffers if b.events or b.is_alive()]
        return taken


_STEP_RECORDS: Final = frozenset(
    (C["CoroRunYield"], C["CoroRunBlock"], C["CoroRunEnd"])
)

CUT_WAIT: Final = 500
"""Most 0.1 ms waits for a step that is beginning or ending (about 50 ms)."""


def cut_point(
    events: list[Event], ts: Any, buf: ThreadBuffer | None = None
) -> tuple[int, tuple[int, int] | None]:
    """Returns where to cut ``events`` now, and the step in flight there.

    ``ts`` is the thread's loop-hook state: ``cur`` is the coroutine whose
    step runs (0 between steps), ``t0`` its start, ``pending`` the step that
    started tracing (already restated as RUNNING). The hooks set ``cur``
    before ``t0`` when a step begins, and clear ``cur`` only after appending
    the step's record when it ends; so ``cur`` set with ``t0`` clear means
    the step's record is a few bytecodes away: wait for it.

    The three reads and ``len`` form one consistent view: under the GIL no
    other thread runs between two attribute loads, and a switch after
    ``len`` is caught by reading ``cur`` and ``t0`` again. A thread left in
    that state (its hook failed mid-step) is waited for once (``buf``
    remembers it), not at every cut.
    """
    for _ in range(CUT_WAIT):
        cur = ts.cur
        t0 = ts.t0
        pending = ts.pending
        n = len(events)
        if ts.cur != cur or ts.t0 != t0:
            continue
        if not cur or pending is not None:
            return n, None
        if t0:
            return n, None if _recorded(events, n, cur, t0) else (cur, t0)
        if buf is not None and buf.stuck == cur:
            return n, None
        time.sleep(0.0001)
    if buf is not None:
        buf.stuck = ts.cur
    return len(events), None


def _recorded(events: list[Event], n: int, cid: int, t0: int) -> bool:
    """Whether the record of ``cid``'s step begun at ``t0`` is already in
    ``events[:n]`` (trio records a task's last step before its hooks clear
    the step). Only the step's own events, the tail from ``t0`` on, are
    looked at."""
    i = n - 1
    while i >= 0:
        ev = events[i]
        if ev[1] < t0:
            return False
        if ev[0] in _STEP_RECORDS and ev[2] == cid:
            return True
        i -= 1
    return False
