"""The tracer's lifecycle: start, stop, and the ``tracing`` context manager.

One tracer runs at a time. It owns a Recorder (the hot path), a Drainer
thread (encoding) and a writer: a thread for sync sinks, a task on the
starting event loop for async sinks.
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

from . import _recorder
from ._drain import Drainer, Outbox
from ._errors import TracingError, TracingWarning
from ._loop import Runtime
from ._recorder import Recorder
from ._sinks import AsyncSink, SyncSink, adapt

DEFAULT_MAX_BUFFER_BYTES: Final = 64 << 20
DEFAULT_METRICS_INTERVAL: Final = 0.1
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
        for name, flag in (
            ("annotation_stacks", annotation_stacks),
            ("block_stacks", block_stacks),
            ("runtime_events", runtime_events),
        ):
            if not isinstance(flag, bool):
                raise TypeError(
                    f"aiotrace: {name} must be True or False, got {type(flag).__name__}"
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
        self._sink = adapt(sink)
        self.recorder = Recorder(stacks=annotation_stacks)
        self._outbox = Outbox()
        self._drainer = Drainer(
            self.recorder, self._outbox, max_buffer_bytes=max_buffer_bytes
        )
        self._drainer.on_error = self._fail
        self._error: BaseException | None = None
        self._stopped = False
        self._written = 0
        self._writer_done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._runtime: Runtime | None = None

    @property
    def is_async(self) -> bool:
        """Whether the sink is async (stop it with ``await astop()``)."""
        return self._sink.is_async

    @property
    def lost_events(self) -> int:
        """Events dropped because the sink fell behind."""
        return self._drainer.lost_events

    @property
    def events(self) -> int:
        """Events encoded so far."""
        return self._drainer.events

    @property
    def bytes_written(self) -> int:
        """Bytes the sink has accepted so far."""
        return self._written

    @property
    def error(self) -> BaseException | None:
        """The sink's or the drainer's failure, if tracing stopped because of one."""
        return self._error

    def _start(self) -> None:
        # Recording turns on before the writer can fail, so that a failure,
        # however early, finds it on and turns it off.
        if isinstance(self._sink, AsyncSink):
            self._start_async_writer(self._sink)  # may refuse: no loop
            _recorder.active = self.recorder
        else:
            _recorder.active = self.recorder
            threading.Thread(
                target=self._write_sync,
                args=(self._sink,),
                name="aiotrace-write",
                daemon=True,
            ).start()
        self._drainer.start()
        if not self.runtime_events:
            return
        try:
            runtime = Runtime(
                self.recorder,
                stall_threshold=self.stall_threshold,
                metrics_interval=self.metrics_interval,
                block_stacks=self.block_stacks,
            )
        except Exception as exc:
            # The annotations still work; the failure is in the trace and stop().
            self._fail(exc)
        else:
            self._runtime = runtime
            if self._error is not None:  # the sink failed while it started
                self._stop_runtime(join=False)

    def _stop_runtime(self, *, join: bool = True) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.stop(join=join)

    def _start_async_writer(self, sink: AsyncSink) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop = loop
            self._loop_thread = threading.get_ident()
            # Held: the loop keeps only a weak reference to its tasks.
            self._writer_task = loop.create_task(
                self._write_async(sink), name="aiotrace-write"
            )
            return
        trio = _running_trio()
        if trio is None:
            raise TracingError(
                f"aiotrace: {sink.description} is an async sink; start tracing "
                "inside a running event loop, e.g. `async with aiotrace.tracing(...)`"
            )
        self._loop_thread = threading.get_ident()
        trio.lowlevel.spawn_system_task(self._write_async, sink, name="aiotrace-write")

    def _write_sync(self, sink: SyncSink) -> None:
        outbox = self._outbox
        try:
            while True:
                data, closed = outbox.get_all(None)
                if data:
                    sink.write(data)
                    self._written += len(data)
                    outbox.done(len(data))
                if closed:
                    break
            sink.finish()
        except BaseException as exc:
            sink.abort()
            self._fail(exc)
        finally:
            self._writer_done.set()

    async def _write_async(self, sink: AsyncSink) -> None:
        outbox = self._outbox
        try:
            while True:
                data, closed = outbox.get_all(0)
                if data:
                    await sink.send(data)
                    self._written += len(data)
                    outbox.done(len(data))
                elif closed:
                    break
                else:
                    await anyio.sleep(_POLL)
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._writer_done.set()

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        if _recorder.active is self.recorder:
            _recorder.active = None
        self._stop_runtime(join=False)
        self._drainer.abandon()
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

    def _deactivate(self) -> bool:
        global _current
        with _lock:
            if self._stopped:
                return False
            self._stopped = True
            self._stop_runtime()
            if _recorder.active is self.recorder:
                _recorder.active = None
            if _current is self:
                _current = None
            return True

    def stop(self) -> None:
        """Stops tracing and returns once every event is written.

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
        if not self._deactivate():
            return
        self._drainer.stop()
        if self.is_async and not _loop_alive(self._loop):
            self._drainer.abandon()
            self._fail(TracingError("the event loop running the async writer closed"))
        self._writer_done.wait()
        self._raise_error()

    async def astop(self) -> None:
        """Stops tracing without blocking the event loop; ``stop`` for async code.

        Raises:
            TracingError: the sink failed (the cause is chained), or the writer
                runs on another event loop.
        """
        if self.is_async and self._loop_thread != threading.get_ident():
            raise TracingError(
                "aiotrace: astop() must run on the event loop that started tracing"
            )
        if not self._deactivate():
            return
        await anyio.to_thread.run_sync(self._drainer.stop)
        if self.is_async:
            while not self._writer_done.is_set():
                await anyio.sleep(_POLL)
        else:
            await anyio.to_thread.run_sync(self._writer_done.wait)
        self._raise_error()

    def _raise_error(self) -> None:
        exc = self._error
        if exc is not None:
            raise TracingError(
                f"aiotrace: tracing to {self._sink.description} failed: "
                f"{type(exc).__name__}: {exc}; "
                f"{self.events} events were encoded, {self._written} bytes written"
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


def stop() -> None:
    """Stops tracing, if it is on, once every event is written.

    Raises:
        TracingError: see ``Tracer.stop``.
    """
    tracer = _current
    if tracer is not None:
        tracer.stop()


async def astop() -> None:
    """Stops tracing, if it is on, without blocking the event loop.

    Raises:
        TracingError: see ``Tracer.astop``.
    """
    tracer = _current
    if tracer is not None:
        await tracer.astop()


def is_enabled() -> bool:
    """Reports whether tracing is on."""
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
        tracer.stop()
    except TracingError as exc:
        print(f"aiotrace: at exit: {exc}", file=sys.stderr)


def _forget_in_child() -> None:
    """In a forked child, the parent's trace is not ours: its threads did not
    survive the fork, and recording into it would only fill memory."""
    global _current, _lock
    if _current is not None:
        _current._stop_runtime(join=False)  # the patches survived the fork
    _lock = threading.Lock()
    _current = None
    _recorder.active = None


atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


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
