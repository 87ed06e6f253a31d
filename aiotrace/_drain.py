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

from ._encode import Encoder
from ._errors import TracingWarning
from ._format.framing import HEADER
from ._format.spec import EVENTS_LOST
from ._recorder import Recorder, clock

EVENT_COST = 120
"""Approximate bytes one undrained event holds in memory (tuple and ints)."""

BATCH_EVENTS = 4096
"""Most events per BATCH frame; the drainer lets go of the GIL between them."""


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


class Drainer:
    """Drainer moves events from a Recorder into an Outbox in a background thread."""

    def __init__(
        self,
        recorder: Recorder,
        outbox: Outbox,
        *,
        max_buffer_bytes: int,
        interval: float = 0.05,
        generation_bytes: int = 1 << 20,
        generation_seconds: float = 1.0,
    ) -> None:
        self.recorder = recorder
        self.outbox = outbox
        self.max_buffer_bytes = max_buffer_bytes
        self.interval = interval
        self.generation_bytes = generation_bytes
        self.generation_ns = int(generation_seconds * 1e9)
        self.encoder = Encoder()
        self.events = 0
        self.lost_events = 0
        self._unreported_lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="aiotrace-drain", daemon=True
        )
        self.error: BaseException | None = None
        self.on_error: Callable[[BaseException], None] | None = None

    def start(self) -> None:
        """Writes the trace header and first generation, and starts the thread."""
        self.outbox.put(HEADER + self.encoder.begin_generation(0))
        self._thread.start()

    def stop(self) -> None:
        """Drains everything, ends the trace and waits for the thread."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def abandon(self) -> None:
        """Stops the thread without writing anything more (the sink failed)."""
        self.outbox.close()  # wakes a writer waiting for data
        self._stop.set()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                if self.outbox.closed:
                    return
                self.drain_once()
            if not self.outbox.closed:
                self.drain_once()
                self._report_lost(force=True)
                self.outbox.put(self.encoder.end_generation())
                self.outbox.put(self.encoder.end_trace(self.lost_events))
        except BaseException as exc:  # report, never take the program down
            self.error = exc
            _warn(f"aiotrace: the drain thread failed and tracing stopped: {exc!r}")
            if self.on_error is not None:
                self.on_error(exc)
        finally:
            self.outbox.close()

    def drain_once(self) -> None:
        """Takes every thread's pending events and encodes or drops them."""
        encoder = self.encoder
        for buf, events in self.recorder.take():
            for i in range(0, len(events), BATCH_EVENTS):
                chunk = events[i : i + BATCH_EVENTS]
                # Decided per batch against what the sink has not yet taken,
                # so a burst goes through while the writer keeps up.
                if len(chunk) * EVENT_COST > self.max_buffer_bytes - self.outbox.bytes:
                    self._drop(len(chunk))
                    continue
                self._report_lost()
                try:
                    data = encoder.encode_batch(buf.thread_id, buf.name, chunk)
                except ValueError as exc:
                    self._drop(len(chunk))
                    _warn(f"aiotrace: dropped {len(chunk)} malformed events: {exc}")
                    continue
                self.events += len(chunk)
                self.outbox.put(data)
                if encoder.bytes >= self.generation_bytes:
                    self._rotate()  # a burst must not make one huge generation
                if len(events) > BATCH_EVENTS:
                    time.sleep(0)  # let the traced threads have the GIL
        self._report_lost()
        if clock() - encoder.started_ns >= self.generation_ns:
            self._rotate()

    def _rotate(self) -> None:
        self.outbox.put(self.encoder.end_generation())
        reported = self.lost_events - self._unreported_lost
        self.outbox.put(self.encoder.begin_generation(reported))

    def _drop(self, n: int) -> None:
        self.lost_events += n
        self._unreported_lost += n

    def _report_lost(self, *, force: bool = False) -> None:
        if not self._unreported_lost:
            return
        if not force and self.max_buffer_bytes - self.outbox.bytes < 256:
            return
        record = (EVENTS_LOST, clock(), self._unreported_lost)
        self._unreported_lost = 0
        me = threading.current_thread()
        self.outbox.put(
            self.encoder.encode_batch(threading.get_native_id(), me.name, [record])
        )


def _warn(message: str) -> None:
    # Warnings configured as errors must not kill the thread.
    with contextlib.suppress(Exception):
        warnings.warn(message, TracingWarning, stacklevel=2)
