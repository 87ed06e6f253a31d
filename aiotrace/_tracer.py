"""The tracer's lifecycle: start, stop, and the ``tracing`` context manager.

One tracer runs at a time. It joins the recording session (``_session``:
the Recorder, the Drainer thread and the execution tracer), which a flight
recorder may share, and owns a writer: a thread for sync sinks, a task on
the starting event loop for async sinks.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import math
import os
import sys
import threading
import warnings
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.to_thread

from . import _recorder, _session
from ._drain import Drainer, Outbox
from ._errors import TracingError, TracingWarning
from ._format.framing import HEADER
from ._recorder import Recorder
from ._session import Options, Session
from ._sinks import PIECE, AsyncSink, SyncSink, adapt

DEFAULT_MAX_BUFFER_BYTES: Final = 64 << 20
DEFAULT_METRICS_INTERVAL: Final = 0.1
DEFAULT_STOP_TIMEOUT: Final = 10.0
"""Seconds ``stop()``, ``astop()`` and interpreter exit wait for the sink to
take the rest of the trace before they give up on it."""
MIN_MAX_BUFFER_BYTES: Final = 64 << 10
_POLL: Final = 0.02

_lock = threading.Lock()
_current: Tracer | None = None


class Tracer:
    """Tracer is one running trace, from ``start`` to ``stop``.

    Attributes:
        stall_threshold: seconds a step may hold a loop before it is a stall,
            or None when stall detection is off.
        max_buffer_bytes: the memory bound for undrained and unwritten events.
        metrics_interval: seconds between metric samples, or None.

    ``annotation_stacks=True`` records the caller's stack on every task,
    region and log event (3-7 us each, all told; off by default).
    ``block_stacks=True`` records a coroutine's await stack each time it
    blocks (off by default; creation stacks are always recorded).
    ``runtime_events=False`` records annotations only: no coroutines, loops,
    stalls, GC or metrics.
    """

    def __init__(
        self,
        sink: object,
        *,
        stall_threshold: float | None = 0.1,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        metrics_interval: float | None = DEFAULT_METRICS_INTERVAL,
        annotation_stacks: bool = False,
        block_stacks: bool = False,
        runtime_events: bool = True,
    ) -> None:
        _check_bools(
            annotation_stacks=annotation_stacks,
            block_stacks=block_stacks,
            runtime_events=runtime_events,
        )
        self.block_stacks = block_stacks
        self.runtime_events = runtime_events
        self.stall_threshold = _positive_or_none("stall_threshold", stall_threshold)
        self.metrics_interval = _positive_or_none("metrics_interval", metrics_interval)
        if isinstance(max_buffer_bytes, bool) or not isinstance(max_buffer_bytes, int):
            raise TypeError(
                "aiotrace: max_buffer_bytes must be an int, "
                f"got {type(max_buffer_bytes).__name__}"
            )
        if max_buffer_bytes < MIN_MAX_BUFFER_BYTES:
            raise ValueError(
                f"aiotrace: max_buffer_bytes must be at least {MIN_MAX_BUFFER_BYTES}, "
                f"got {max_buffer_bytes}"
            )
        self.max_buffer_bytes = max_buffer_bytes
        self._options = Options(
            stall_threshold=self.stall_threshold,
            metrics_interval=self.metrics_interval,
            annotation_stacks=annotation_stacks,
            block_stacks=block_stacks,
            runtime_events=runtime_events,
        )
        self._sink = adapt(sink)
        self._outbox = Outbox()
        self._session: Session | None = None
        self.recorder: Recorder
        self._drainer: Drainer
        self._events0 = self._lost0 = 0
        self._error: BaseException | None = None
        self._stopped = False
        self._written = 0
        self._dropped = 0
        # Set when a stop gave up on the sink: the writer drops what is left.
        self._cancel = threading.Event()
        self._cancel_async: Any = None  # cancels the async writer, on its loop
        self._scope: anyio.CancelScope | None = None  # the async writer's
        self._writer_done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._writer_task: asyncio.Task[None] | None = None

    @property
    def is_async(self) -> bool:
        """Whether the sink is async (stop it with ``await astop()``)."""
        return self._sink.is_async

    @property
    def lost_events(self) -> int:
        """Events dropped because the sink fell behind."""
        return self._drainer.lost_events - self._lost0

    @property
    def events(self) -> int:
        """Events encoded so far."""
        return self._drainer.events - self._events0

    @property
    def bytes_written(self) -> int:
        """Bytes the sink has accepted so far."""
        if isinstance(self._sink, SyncSink):
            return self._sink.written
        return self._written

    @property
    def dropped_bytes(self) -> int:
        """Bytes of the trace never written because a stop gave up waiting
        for the sink (see ``stop(timeout=...)``); the trace is then cut short."""
        return self._dropped

    @property
    def error(self) -> BaseException | None:
        """The sink's or the drainer's failure, if tracing stopped because of one."""
        return self._error

    def _start(self) -> None:
        with _session.lock:
            session = _session.current()
            if session is not None:
                _session.check(session, self._options, "aiotrace.start")
            # Recording turns on before the writer can fail, so that a
            # failure, however early, finds it on and turns it off.
            if isinstance(self._sink, AsyncSink):
                self._start_async_writer(self._sink)  # may refuse: no loop
            else:
                threading.Thread(
                    target=self._write_sync,
                    args=(self._sink,),
                    name="aiotrace-write",
                    daemon=True,
                ).start()
            fresh = session is None
            if session is None:
                session = _session.new(
                    self._options, max_buffer_bytes=self.max_buffer_bytes
                )
                session.drainer.outbox = self._outbox
            self._session = session
            self.recorder = session.recorder
            self._drainer = session.drainer
            self._events0 = session.drainer.events
            self._lost0 = session.drainer.lost_events
            session.consumers.append(self)
            error = session.start() if fresh else None
        if not fresh:
            try:
                self._drainer.at_boundary(self._attach)
            except TracingError as exc:
                self._fail(exc)
        if error is not None:
            # The annotations still work; the failure is in the trace and stop().
            self._fail(error)

    def _attach(self) -> None:
        """Starts the trace at a generation boundary (on the drain thread)."""
        drainer = self._drainer
        self._events0 = drainer.events
        self._lost0 = drainer.lost_events
        self._outbox.put(HEADER)
        drainer.max_buffer_bytes = self.max_buffer_bytes
        drainer.outbox = self._outbox

    def _detach(self) -> None:
        """Ends the trace at a generation boundary (on the drain thread)."""
        drainer = self._drainer
        if drainer.outbox is self._outbox:
            drainer.outbox = None
        self._outbox.put(drainer.encoder.end_trace(drainer.lost_events))
        self._outbox.close()

    def _start_async_writer(self, sink: AsyncSink) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop = loop
            self._loop_thread = threading.get_ident()
            # Held: the loop keeps only a weak reference to its tasks.
            task = loop.create_task(self._write_async(sink), name="aiotrace-write")
            self._writer_task = task
            self._cancel_async = lambda: loop.call_soon_threadsafe(self._cancel_writer)
            return
        trio = _running_trio()
        if trio is None:
            raise TracingError(
                f"aiotrace: {sink.description} is an async sink; start tracing "
                "inside a running event loop, e.g. `async with aiotrace.tracing(...)`"
            )
        self._loop_thread = threading.get_ident()
        token = trio.lowlevel.current_trio_token()
        self._cancel_async = lambda: token.run_sync_soon(self._cancel_writer)
        trio.lowlevel.spawn_system_task(self._write_async, sink, name="aiotrace-write")

    def _write_sync(self, sink: SyncSink) -> None:
        outbox = self._outbox
        try:
            while True:
                data, closed = outbox.get_all(None)
                if data:
                    n = sink.write(data, self._cancel)
                    self._dropped += len(data) - n
                    outbox.done(len(data))
                if closed or self._cancel.is_set():
                    break
            sink.finish()
        except BaseException as exc:
            sink.abort()
            self._fail(exc)
        finally:
            self._writer_done.set()

    async def _write_async(self, sink: AsyncSink) -> None:
        outbox = self._outbox
        pending = 0  # bytes taken from the outbox and not yet sent
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                while not self._cancel.is_set():
                    data, closed = outbox.get_all(0)
                    if data:
                        pending = len(data)
                        for at in range(0, len(data), PIECE):
                            if self._cancel.is_set():
                                break
                            piece = data[at : at + PIECE] if len(data) > PIECE else data
                            await sink.send(piece)
                            self._written += len(piece)
                            pending -= len(piece)
                        self._dropped += pending
                        outbox.done(len(data))
                        pending = 0
                    elif closed:
                        break
                    else:
                        await anyio.sleep(_POLL)
            if pending:  # cancelled by a stop that gave up during a send
                self._dropped += pending
                outbox.done(pending)
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._writer_done.set()

    def _cancel_writer(self) -> None:
        """Cancels the async writer's send in progress (on its loop)."""
        if self._scope is not None:
            self._scope.cancel()

    def _give_up(self, timeout: float, *, on_loop: bool) -> None:
        """Stops waiting for the sink after ``timeout``: the writer drops
        what is left, and a warning says how much."""
        self._cancel.set()
        if self.is_async:
            if on_loop:
                self._cancel_writer()
            elif self._cancel_async is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._cancel_async()
        outbox = self._outbox
        data, _ = outbox.get_all(0)  # what the writer has not taken yet
        if data:
            self._dropped += len(data)
            outbox.done(len(data))
        left = outbox.bytes + self._dropped
        with contextlib.suppress(Exception):  # warnings as errors: stop() goes on
            warnings.warn(
                f"aiotrace: the sink {self._sink.description} did not take the "
                f"trace within {timeout:g} s of stop(): {self.bytes_written} bytes "
                f"written, {left} bytes dropped; the trace is cut short there "
                "(readers read it up to the cut). Pass stop(timeout=None) to wait "
                "for a slow sink",
                TracingWarning,
                stacklevel=3,
            )

    def _fail(self, exc: BaseException) -> None:
        alone = False
        with _session.lock:
            if self._error is not None:
                return
            session = self._session
            if session is not None and self in session.consumers:
                session.consumers.remove(self)
                alone = not session.consumers
                if alone:
                    session.close(join=False)
            self._error = exc  # set last: a waiter then finds recording off
        if alone and session is not None:
            session.drainer.abandon()
        else:
            # A flight recorder shares the recording: only this trace stops.
            self._outbox.close()
        if isinstance(exc, Exception):
            what = f"the sink {self._sink.description} failed"
        else:
            what = f"the writer for {self._sink.description} was interrupted"
        # With warnings as errors this would raise; stop() still raises the error.
        with contextlib.suppress(Exception):
            warnings.warn(
                f"aiotrace: {what} ({type(exc).__name__}: {exc}); tracing stopped "
                "and the program goes on; stop() will raise the error",
                TracingWarning,
                stacklevel=2,
            )

    def _deactivate(self) -> str | None:
        """Leaves the session: returns None if already stopped, else "last"
        (the session closed: stop its drainer), "shared" (detach from it) or
        "gone" (the trace had already failed)."""
        global _current
        with _lock:
            if self._stopped:
                return None
            self._stopped = True
            if _current is self:
                _current = None
        with _session.lock:
            session = self._session
            if session is None or self not in session.consumers:
                return "gone"
            session.consumers.remove(self)
            if session.consumers:
                return "shared"
            session.close()
            return "last"

    def _finish_drain(self, mode: str) -> None:
        if mode == "last":
            self._drainer.stop()
        elif mode == "shared":
            try:
                self._drainer.at_boundary(self._detach)
            except TracingError:
                self._outbox.close()

    def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        """Stops tracing and returns once every event is written.

        ``timeout`` bounds the wait for the sink, in seconds (None: no
        bound). A sink that has not taken the rest of the trace by then is
        given up on: what it has not taken is dropped (``dropped_bytes``),
        a TracingWarning says so, and the trace ends cut short.

        Raises:
            TracingError: the sink failed (the cause is chained), or the sink is
                async and this is the event loop's own thread (use ``astop``).
        """
        if (
            self.is_async
            and self._loop_thread == threading.get_ident()
            and not self._writer_done.is_set()
            and _loop_alive(self._loop)
        ):
            raise TracingError(
                "aiotrace: this trace writes to an async sink; stop it with "
                "`await aiotrace.astop()` or use `async with aiotrace.tracing(...)`"
            )
        timeout = _timeout(timeout)
        mode = self._deactivate()
        if mode is None:
            return
        self._finish_drain(mode)
        if self.is_async and not _loop_alive(self._loop):
            self._outbox.close()
            self._fail(TracingError("the event loop running the async writer closed"))
        if not self._writer_done.wait(timeout):
            assert timeout is not None
            self._give_up(timeout, on_loop=False)
        self._raise_error()

    async def astop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        """Stops tracing without blocking the event loop; ``stop`` for async code.

        ``timeout`` bounds the wait for the sink as in ``stop``.

        Raises:
            TracingError: the sink failed (the cause is chained), or the writer
                runs on another event loop.
        """
        if self.is_async and self._loop_thread != threading.get_ident():
            raise TracingError(
                "aiotrace: astop() must run on the event loop that started tracing"
            )
        timeout = _timeout(timeout)
        mode = self._deactivate()
        if mode is None:
            return
        await anyio.to_thread.run_sync(self._finish_drain, mode)
        if self.is_async:
            with anyio.move_on_after(timeout):
                while not self._writer_done.is_set():
                    await anyio.sleep(_POLL)
            done = self._writer_done.is_set()
        else:
            done = await anyio.to_thread.run_sync(self._writer_done.wait, timeout)
        if not done:
            assert timeout is not None
            self._give_up(timeout, on_loop=True)
            if self.is_async:  # the writer ends at its next await
                with anyio.move_on_after(1):
                    while not self._writer_done.is_set():
                        await anyio.sleep(0.001)
        self._raise_error()

    def _raise_error(self) -> None:
        exc = self._error
        if exc is not None:
            raise TracingError(
                f"aiotrace: tracing to {self._sink.description} failed: "
                f"{type(exc).__name__}: {exc}; "
                f"{self.events} events were encoded, {self.bytes_written} bytes written"
            ) from exc


def start(
    sink: object,
    *,
    stall_threshold: float | None = 0.1,
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
    metrics_interval: float | None = DEFAULT_METRICS_INTERVAL,
    annotation_stacks: bool = False,
    block_stacks: bool = False,
    runtime_events: bool = True,
) -> Tracer:
    """Starts tracing the whole process into ``sink`` and returns the Tracer.

    ``sink`` is a path, a binary file or socket, an async byte stream or an
    ``aiotrace.sinks.MemorySink``. An async sink must be started inside a
    running event loop and stopped with ``await aiotrace.astop()``.

    Raises:
        TracingError: tracing is already on, or an async sink has no loop.
        TypeError, ValueError: a bad sink or option.
        OSError: a path could not be opened.
    """
    global _current
    with _lock:
        if _current is not None:
            if _current.error is not None:
                raise TracingError(
                    "aiotrace: the previous trace stopped because its sink failed "
                    f"({type(_current.error).__name__}: {_current.error}); call "
                    "aiotrace.stop() to collect that error before starting again"
                )
            raise TracingError(
                "aiotrace: tracing is already on; stop it before starting again"
            )
        tracer = Tracer(
            sink,
            stall_threshold=stall_threshold,
            max_buffer_bytes=max_buffer_bytes,
            metrics_interval=metrics_interval,
            annotation_stacks=annotation_stacks,
            block_stacks=block_stacks,
            runtime_events=runtime_events,
        )
        tracer._start()
        _current = tracer
    return tracer


def stop(timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
    """Stops tracing, if it is on, once every event is written.

    ``timeout`` bounds the wait for a slow sink (see ``Tracer.stop``).

    Raises:
        TracingError: see ``Tracer.stop``.
    """
    tracer = _current
    if tracer is not None:
        tracer.stop(timeout)


async def astop(timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
    """Stops tracing, if it is on, without blocking the event loop.

    ``timeout`` bounds the wait for a slow sink (see ``Tracer.stop``).

    Raises:
        TracingError: see ``Tracer.astop``.
    """
    tracer = _current
    if tracer is not None:
        await tracer.astop(timeout)


def is_enabled() -> bool:
    """Reports whether events are being recorded: a trace or a flight
    recorder is running (as Go's ``trace.IsEnabled``)."""
    return _recorder.active is not None


class tracing:
    """tracing traces the body of a ``with`` or ``async with`` block.

    ``with aiotrace.tracing("t.trace"): asyncio.run(main())`` traces ``main``
    whole; async sinks need ``async with``. The options are ``start``'s.
    """

    def __init__(self, sink: object, **options: Any) -> None:
        self._sink = sink
        self._options = options
        self._tracer: Tracer | None = None

    def __enter__(self) -> Tracer:
        self._tracer = start(self._sink, **self._options)
        return self._tracer

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tracer is not None
        _finish(self._tracer.stop, exc)

    async def __aenter__(self) -> Tracer:
        self._tracer = start(self._sink, **self._options)
        return self._tracer

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tracer is not None
        try:
            await self._tracer.astop()
        except TracingError as err:
            if exc is None:
                raise
            _warn_masked(err)


def _finish(stop: Any, exc: BaseException | None) -> None:
    try:
        stop()
    except TracingError as err:
        if exc is None:
            raise
        _warn_masked(err)


def _warn_masked(err: TracingError) -> None:
    warnings.warn(
        f"{err} (raised while the traced block was already failing)",
        TracingWarning,
        stacklevel=3,
    )


def _stop_at_exit() -> None:
    """Finishes a sync trace the program never stopped, so the file is whole."""
    tracer = _current
    if tracer is None or tracer.is_async:
        return
    try:
        tracer.stop(DEFAULT_STOP_TIMEOUT)  # read now: a test may shorten it
    except TracingError as exc:
        print(f"aiotrace: at exit: {exc}", file=sys.stderr)


def _forget_in_child() -> None:
    """In a forked child, the parent's trace is not ours: its threads did not
    survive the fork, and recording into it would only fill memory."""
    global _current, _lock
    _lock = threading.Lock()
    _current = None
    _recorder.active = None


atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _check_bools(**flags: object) -> None:
    """Raises TypeError naming the first of ``flags`` that is not a bool."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(
                f"aiotrace: {name} must be True or False, got {type(flag).__name__}"
            )


def _positive_or_none(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"aiotrace: {name} must be a number of seconds or None, "
            f"got {type(value).__name__}"
        )
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"aiotrace: {name} must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def _timeout(timeout: float | None) -> float | None:
    """Checks a stop timeout: None, or a non-negative number of seconds."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            "aiotrace: timeout must be a number of seconds or None, "
            f"got {type(timeout).__name__}"
        )
    if not timeout >= 0:  # also NaN
        raise ValueError(
            f"aiotrace: timeout must be 0 or more seconds, got {timeout!r}"
        )
    return float(timeout) if math.isfinite(timeout) else None


def _loop_alive(loop: asyncio.AbstractEventLoop | None) -> bool:
    return loop is None or not loop.is_closed()


def _running_trio() -> Any:
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        trio.lowlevel.current_root_task()
    except RuntimeError:
        return None
    return trio
