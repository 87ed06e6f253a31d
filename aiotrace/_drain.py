"""Draining: thread buffers -> encoded frames -> an outbox, off the hot path.

A ``Drainer`` thread wakes every ``interval`` seconds, takes what every
thread has recorded, encodes it and puts the frames in an ``Outbox``. A
writer (a thread for sync sinks, a task on the loop for async ones) empties
the outbox into the sink.

Memory stays bounded: when the outbox plus the events waiting in thread
buffers would pass ``max_buffer_bytes``, the drainer drops whole chunks
without encoding them, counts them, and records the count in the trace as
soon as there is room (an ``EventsLost`` event, and ``lost_events`` in every
later sync and at the end of the trace).
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from ._encode import Encoder
from ._errors import TracingError, TracingWarning
from ._format.framing import HEADER
from ._format.spec import EVENTS_LOST, C
from ._recorder import Event, Recorder, ThreadBuffer, clock
from ._restate import Snapshot, StateTracker, status_records

EVENT_COST = 120
"""Approximate bytes one undrained event holds in memory (tuple and ints)."""

BATCH_EVENTS = 4096
"""Most events per BATCH frame; the drainer lets go of the GIL between them."""

GENERATION_BYTES = 1 << 20
"""A generation closes after the drain that takes it past this many bytes."""

FIRST_GENERATION_BYTES = 64 << 10
"""The first generation a consumer gets (a new trace, one that joins a
running recording) closes after the drain that takes it past this many
bytes, so a live reader has a whole generation soon, not after 1 MiB."""


_START = C["CoroStart"]
_STEP_ENDS = {
    C["CoroRunYield"]: C["CoroYield"],
    C["CoroRunBlock"]: C["CoroBlock"],
    C["CoroRunEnd"]: C["CoroEnd"],
}
"""Each step record's code, and the code of the transition that ends it."""
_RUN_YIELD = C["CoroRunYield"]


class Outbox:
    """Outbox is a thread-safe queue of encoded frames, counted in bytes."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._cond = threading.Condition()
        self.bytes = 0
        self.closed = False

    def put(self, data: bytes) -> None:
        """Queues ``data`` for the writer."""
        with self._cond:
            self._chunks.append(data)
            self.bytes += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        """Marks the end: no more data will be put."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def get_all(self, timeout: float | None) -> tuple[bytes, bool]:
        """Waits up to ``timeout`` for data and takes all of it, joined.

        Returns:
            The data (possibly empty) and whether the outbox is now closed
            and empty.
        """
        with self._cond:
            if not self._chunks and not self.closed:
                self._cond.wait(timeout)
            data = b"".join(self._chunks)
            self._chunks.clear()
            return data, self.closed

    def done(self, nbytes: int) -> None:
        """Says ``nbytes`` taken with ``get_all`` have been written."""
        with self._cond:
            self.bytes -= nbytes


class Generation(NamedTuple):
    """Generation is one whole encoded generation, as a flight recorder keeps it."""

    number: int
    data: bytes
    start_ns: int
    end_ns: int


class _Request:
    """_Request is work for the drain thread at the next generation boundary."""

    def __init__(self, fn: Callable[[], None] | None) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.error: BaseException | None = None


class Drainer:
    """Drainer moves events from a Recorder into encoded generations, in a
    background thread, and hands them to its consumers: an Outbox (a trace
    being written) and ``on_generation`` (a flight recorder's ring).

    Invariant: generations change only between two drains, so each one holds
    what every thread recorded between two cuts (``Recorder.take``), and the
    status records that begin a generation describe the state at its cut.
    """

    def __init__(
        self,
        recorder: Recorder,
        outbox: Outbox | None,
        *,
        max_buffer_bytes: int,
        interval: float = 0.05,
        generation_bytes: int = GENERATION_BYTES,
        generation_seconds: float = 1.0,
    ) -> None:
        self.recorder = recorder
        self.outbox = outbox
        self.max_buffer_bytes = max_buffer_bytes
        self.interval = interval
        self.generation_bytes = generation_bytes
        self.generation_ns = int(generation_seconds * 1e9)
        self.first_generation_bytes = FIRST_GENERATION_BYTES
        self.tracker = StateTracker()
        self.encoder = Encoder(follow=self.tracker)
        self.on_generation: Callable[[Generation], None] | None = None
        """Called on the drain thread with each whole generation."""
        self.on_stall_end: Callable[[], None] | None = None
        """Called on the drain thread after a drain that saw a stall end."""
        self.on_batch: Callable[[int, list[Any]], None] | None = None
        """Called on the drain thread with (thread id, events) of each batch
        encoded (``aiotrace run``'s summary); must not raise."""
        self.events = 0
        self.lost_events = 0
        self._unreported_lost = 0
        self._stalls_seen = 0
        self._snapshot: Snapshot | None = None
        self._parts: list[bytes] = []
        # Odd while a whole generation moves from _parts to on_generation.
        self._handing = 0
        self._rotate_due = False
        # Whether the open generation is a consumer's first (closes sooner).
        self._first = True
        self._requests: list[_Request] = []
        self._requests_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._abandoned = False
        self.hooks: Any = None
        """The loop hooks' state (``_loop._state.Hooks``), whose per-thread
        step state places each cut (``Recorder.take``)."""
        # Buffers that held events this generation.
        self._seen: set[ThreadBuffer] = set()
        # (coroutine, start) of a step that ran across a cut and whose start
        # was written before it, by thread buffer: its record, still to come,
        # is written as the transition that ends the step.
        self._restated: dict[ThreadBuffer, tuple[int, int]] = {}
        self.steps_cut = 0
        """Steps that ran across a cut, all told (their start restated)."""
        self._thread = threading.Thread(
            target=self._run, name="aiotrace-drain", daemon=True
        )
        self.error: BaseException | None = None
        self.on_error: Callable[[BaseException], None] | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of the generation being built that a ring will receive."""
        return sum(map(len, self._parts))

    def held_bytes(self, ring: Callable[[], int]) -> int:
        """Returns ``pending_bytes`` plus ``ring()`` (the bytes of the whole
        generations a consumer keeps), read consistently: never counting a
        generation twice while it moves from one to the other."""
        while True:
            seq = self._handing
            if seq % 2 == 0:
                total = self.pending_bytes + ring()
                if self._handing == seq:
                    return total
            time.sleep(0)

    def start(self) -> None:
        """Writes the trace header and first generation, and starts the thread."""
        if self.outbox is not None:
            self.outbox.put(HEADER)
        self._begin_generation()
        self._thread.start()

    def stop(self) -> None:
        """Drains everything, ends the trace and waits for the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def abandon(self) -> None:
        """Stops the thread without writing anything more (the sink failed)."""
        self._abandoned = True
        if self.outbox is not None:
            self.outbox.close()  # wakes a writer waiting for data
        self._stop.set()
        self._wake.set()

    def at_boundary(self, fn: Callable[[], None] | None = None) -> None:
        """Drains what was recorded before this call, closes the generation,
        runs ``fn`` on the drain thread, opens the next generation, and
        returns when all that is done.

        Raises:
            TracingError: the drain thread is not running, or failed.
        """
        if threading.current_thread() is self._thread:
            self._rotate([_Request(fn)])
            return
        request = _Request(fn)
        with self._requests_lock:
            if not self._thread.is_alive() or self._stop.is_set():
                raise TracingError("aiotrace: the drain thread is not running")
            self._requests.append(request)
        self._wake.set()
        request.done.wait()
        if request.error is not None:
            raise TracingError(
                f"aiotrace: the drain thread failed: {request.error!r}"
            ) from request.error

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(self.interval)
                self._wake.clear()
                if self._stop.is_set() or self._abandoned:
                    break
                self.drain_once()
                self._serve()
            if not self._abandoned:
                self.drain_once()
                self._serve()
                self._report_lost(force=True)
                self._end_generation()
                if self.outbox is not None:
                    self.outbox.put(self.encoder.end_trace(self.lost_events))
        except BaseException as exc:  # report, never take the program down
            self.error = exc
            _warn(f"aiotrace: the drain thread failed and tracing stopped: {exc!r}")
            if self.on_error is not None:
                self.on_error(exc)
        finally:
            with self._requests_lock:
                self._stop.set()
                requests, self._requests = self._requests, []
            for request in requests:
                request.error = self.error or TracingError("tracing stopped")
                request.done.set()
            if self.outbox is not None:
                self.outbox.close()

    def _serve(self) -> None:
        with self._requests_lock:
            requests, self._requests = self._requests, []
        if requests:
            self.drain_once()  # what was recorded before the requests
            self._rotate(requests)

    def drain_once(self) -> None:
        """Takes every thread's pending events and encodes or drops them."""
        encoder = self.encoder
        hooks = self.hooks
        states = None
        if hooks is not None:
            states = {id(ts.events): ts for ts in list(hooks.threads)}
        restated = self._restated
        for buf, events in self.recorder.take(states):
            self._seen.add(buf)
            if restated and buf in restated and _end_step(events, restated[buf]):
                del restated[buf]
            for i in range(0, len(events), BATCH_EVENTS):
                chunk = events[i : i + BATCH_EVENTS]
                outbox = self.outbox
                # Decided per batch against what the sink has not yet taken,
                # so a burst goes through while the writer keeps up.
                if (
                    outbox is not None
                    and len(chunk) * EVENT_COST > self.max_buffer_bytes - outbox.bytes
                ):
                    self._drop(len(chunk))
                    continue
                self._report_lost()
                name = buf.name
                try:
                    # Follows what is alive (for the next generation's
                    # status records) in the same pass.
                    data = encoder.encode_batch(buf.thread_id, name, chunk, follow=True)
                except ValueError as exc:
                    self._drop(len(chunk))
                    _warn(f"aiotrace: dropped {len(chunk)} malformed events: {exc}")
                    continue
                self.events += len(chunk)
                if self.on_batch is not None:
                    self.on_batch(buf.thread_id, chunk)
                self._emit(data)
                if encoder.bytes >= (
                    min(self.first_generation_bytes, self.generation_bytes)
                    if self._first
                    else self.generation_bytes
                ):
                    # Rotated after this drain: a generation is a cut in time.
                    self._rotate_due = True
                if len(events) > BATCH_EVENTS:
                    time.sleep(0)  # let the traced threads have the GIL
        self._report_lost()
        tracker = self.tracker
        if tracker.stalls_ended != self._stalls_seen:
            self._stalls_seen = tracker.stalls_ended
            if self.on_stall_end is not None:
                self.on_stall_end()
        if self._rotate_due or clock() - encoder.started_ns >= self.generation_ns:
            self._rotate([])

    def _emit(self, data: bytes) -> None:
        if self.on_generation is not None:
            self._parts.append(data)
        outbox = self.outbox
        if outbox is not None:
            if outbox.closed:
                self.outbox = None  # its writer failed and left
            else:
                outbox.put(data)

    def _rotate(self, requests: list[_Request]) -> None:
        try:
            self._end_generation()
            for request in requests:
                if request.fn is not None:
                    try:
                        request.fn()
                    except Exception as exc:
                        request.error = exc
            # A consumer that joined (or took a snapshot) gets its first
            # whole generation soon.
            first = any(request.fn is not None for request in requests)
            self._begin_generation()
            self._first = first
        except BaseException as exc:
            for request in requests:
                request.error = request.error or exc
            raise
        finally:
            for request in requests:
                request.done.set()

    def _begin_generation(self) -> None:
        reported = self.lost_events - self._unreported_lost
        self._rotate_due = False
        self._first = self.encoder.generation < 0
        self._parts = []
        self._emit(self.encoder.begin_generation(reported))
        self._snapshot = self.tracker.cut()

    def _end_generation(self) -> None:
        self._restate_in_flight()
        self._restate()
        self._emit(self.encoder.end_generation())
        on_generation = self.on_generation
        if on_generation is None or not self._parts:
            self._parts = []
            return
        encoder = self.encoder
        whole = Generation(
            encoder.generation, b"".join(self._parts), encoder.started_ns, clock()
        )
        self._handing += 1
        try:
            self._parts = []
            on_generation(whole)
        finally:
            self._handing += 1

    def _restate_in_flight(self) -> None:
        """Writes the start of each step running across this cut.

        A step is recorded as one record when it ends, with its start; the
        events it records meanwhile (regions, logs, tasks) precede it. When
        a cut falls inside the step, those events are in this generation and
        the record in a later one. So the step's start is written here, as a
        ``CoroStart`` at its start time on its thread, which gives those
        events their coroutine; the tracker then restates the coroutine as
        RUNNING on that thread, and the record, when it comes, is written as
        the transition that ends the step (``_end_step``).
        """
        seen, self._seen = self._seen, set()
        restated = self._restated
        for buf in seen:
            step = buf.in_flight
            if step is None or restated.get(buf) == step:
                continue
            cid, t0 = step
            if not self.tracker.knows(cid):
                # An eager task's first step, inside its creator's: its
                # creation is recorded when that step ends. Left as it is.
                continue
            restated[buf] = step
            self.steps_cut += 1
            record: Event = (_START, t0, cid)
            self._emit(
                self.encoder.encode_batch(
                    buf.thread_id, buf.name, [record], follow=True
                )
            )
        for buf in [b for b in restated if not b.is_alive()]:
            del restated[buf]  # its thread exited inside the step

    def _restate(self) -> None:
        """Writes the status records of what was alive at the generation's start."""
        snap, self._snapshot = self._snapshot, None
        if snap is None or not (snap.coroutines or snap.loops or snap.ranges):
            return
        start = self.encoder.started_ns
        earliest = self.tracker.earliest
        now = start if earliest is None else min(start, earliest) - 1
        me = threading.get_native_id()
        names = self.tracker.names
        for thread, records in status_records(snap, now, me).items():
            name = names.get(thread) or (
                threading.current_thread().name if thread == me else f"thread {thread}"
            )
            self._emit(self.encoder.encode_batch(thread, name, records))

    def _drop(self, n: int) -> None:
        self.lost_events += n
        self._unreported_lost += n

    def _report_lost(self, *, force: bool = False) -> None:
        if not self._unreported_lost:
            return
        outbox = self.outbox
        room = self.max_buffer_bytes - (0 if outbox is None else outbox.bytes)
        if not force and room < 256:
            return
        record = (EVENTS_LOST, clock(), self._unreported_lost)
        self._unreported_lost = 0
        me = threading.current_thread()
        self._emit(
            self.encoder.encode_batch(threading.get_native_id(), me.name, [record])
        )


def _warn(message: str) -> None:
    # Warnings configured as errors must not kill the thread.
    with contextlib.suppress(Exception):
        warnings.warn(message, TracingWarning, stacklevel=2)


def _end_step(events: list[Event], step: tuple[int, int]) -> bool:
    """Rewrites, in ``events``, the record of the step ``step`` (coroutine,
    start) whose start was written in an earlier generation, as the
    transition that ends it, at its end time. Returns whether it was there.

    The record's start may be a little later than the one written (a trio
    guest run's steps run inside a host callback, whose start the hooks
    publish), never earlier.
    """
    cid, t0 = step
    for i, ev in enumerate(events):
        end = _STEP_ENDS.get(ev[0])
        if end is not None and ev[2] == cid and ev[1] >= t0:
            # (code, start, cid, duration, *rest) -> (end code, end, cid, *rest)
            rest = ev[4:] if end != _STEP_ENDS[_RUN_YIELD] else (None,)
            events[i] = (end, ev[1] + ev[3], cid, *rest)
            return True
    return False
