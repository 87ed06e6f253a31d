"""The flight recorder: the last seconds of the trace, kept in memory.

As Go 1.25's ``runtime/trace.FlightRecorder``, it keeps whole generations of
the trace in a ring and writes them out on demand: after a stall, an error,
a slow request. Each generation restates what was alive at its start, so a
snapshot that begins at any generation reads on its own.

It records through the same session as ``aiotrace.start`` (``_session``):
with both running there is one set of hooks and one encoding.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import warnings
from collections import deque
from typing import Final

import anyio
import anyio.to_thread
import msgpack

from . import _session
from ._drain import GENERATION_BYTES, Generation
from ._errors import TracingError, TracingWarning
from ._format.framing import HEADER, FrameKind, frame
from ._session import Options, Session
from ._sinks import AsyncSink, SyncSink, adapt
from ._tracer import DEFAULT_METRICS_INTERVAL, _check_bools, _positive_or_none

DEFAULT_MAX_BYTES: Final = 10 << 20
DEFAULT_MIN_AGE: Final = 10.0
DEFAULT_STALL_INTERVAL: Final = 60.0
MIN_MAX_BYTES: Final = 64 << 10
_SEND_CHUNK: Final = 1 << 20

_active: FlightRecorder | None = None


class FlightRecorder:
    """FlightRecorder keeps the most recent part of the trace in memory and
    writes it out on demand, as Go's ``trace.FlightRecorder``.

    ``rec = aiotrace.FlightRecorder(max_bytes=10 << 20, min_age=10.0)``, then
    ``rec.start()``; when something goes wrong, ``rec.write_to("t.trace")``
    writes the last ``min_age`` seconds or so (a whole trace, readable with
    ``aiotrace.reader``) while the recorder keeps running.

    The recorder keeps whole generations (about one second each). It drops
    the oldest while the kept ones exceed ``max_bytes``, or when it ends more
    than ``min_age`` seconds ago; ``max_bytes`` wins over ``min_age``. Both
    are hints: memory stays within ``max_bytes`` plus the generation being
    recorded.

    From a coroutine, snapshot with ``n = await rec.awrite_to(sink)``: the
    cut and any file I/O run in a worker thread, and an async sink (an
    asyncio ``StreamWriter``, an anyio ``ByteSendStream``) is written on the
    loop, so the event loop is never blocked. ``write_to`` blocks until the
    snapshot is written: call it from a thread, or from sync code.

    A flight recorder and a trace (``aiotrace.start``) can run at the same
    time, in either order, with the same recording options; stopping one
    leaves the other running. One flight recorder runs at a time.

    Args:
        max_bytes: the most bytes of whole generations to keep (a hint).
        min_age: seconds of recent trace to keep, if ``max_bytes`` allows.
        on_stall: a path pattern; after each loop stall the recorder writes
            a snapshot there, from a background thread, at most once per
            ``on_stall_interval`` seconds. ``{time}`` (local time,
            ``20261122-064501``), ``{n}`` (1, 2, ...) and ``{pid}`` are
            replaced.
        on_stall_interval: the fewest seconds between two stall snapshots.
        stall_threshold, metrics_interval, annotation_stacks, block_stacks,
            runtime_events: as for ``aiotrace.start``.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        min_age: float = DEFAULT_MIN_AGE,
        *,
        on_stall: str | os.PathLike[str] | None = None,
        on_stall_interval: float = DEFAULT_STALL_INTERVAL,
        stall_threshold: float | None = 0.1,
        metrics_interval: float | None = DEFAULT_METRICS_INTERVAL,
        annotation_stacks: bool = False,
        block_stacks: bool = False,
        runtime_events: bool = True,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(
                f"aiotrace: max_bytes must be an int, got {type(max_bytes).__name__}"
            )
        if max_bytes < MIN_MAX_BYTES:
            raise ValueError(
                f"aiotrace: max_bytes must be at least {MIN_MAX_BYTES}, got {max_bytes}"
            )
        if isinstance(min_age, bool) or not isinstance(min_age, int | float):
            raise TypeError(
                "aiotrace: min_age must be a number of seconds, "
                f"got {type(min_age).__name__}"
            )
        if not (min_age >= 0 and math.isfinite(min_age)):
            raise ValueError(
                f"aiotrace: min_age must be a finite number of seconds >= 0, "
                f"got {min_age!r}"
            )
        _check_bools(
            annotation_stacks=annotation_stacks,
            block_stacks=block_stacks,
            runtime_events=runtime_events,
        )
        self.max_bytes = max_bytes
        self.min_age = float(min_age)
        interval = _positive_or_none("on_stall_interval", on_stall_interval)
        if interval is None:
            raise TypeError("aiotrace: on_stall_interval must be a number of seconds")
        self.on_stall_interval = interval
        self._options = Options(
            stall_threshold=_positive_or_none("stall_threshold", stall_threshold),
            metrics_interval=_positive_or_none("metrics_interval", metrics_interval),
            annotation_stacks=annotation_stacks,
            block_stacks=block_stacks,
            runtime_events=runtime_events,
        )
        self.on_stall = _stall_pattern(on_stall, self._options)
        self.generation_bytes = max(
            MIN_MAX_BYTES, min(GENERATION_BYTES, max_bytes // 8)
        )
        """The size at which the recorder asks for a new generation."""
        self._gens: deque[Generation] = deque()
        self._bytes = 0
        self._ring_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._session: Session | None = None
        self._running = False
        self._error: BaseException | None = None
        self._last_dump: float | None = None
        self._dumps = 0
        self._dumper: threading.Thread | None = None
        self._stall_dumps: deque[str] = deque(maxlen=100)
        self.dump_error: BaseException | None = None
        """The failure of the last stall snapshot, if it failed."""

    @property
    def enabled(self) -> bool:
        """Whether the recorder is running."""
        return self._running

    @property
    def memory_bytes(self) -> int:
        """Bytes held now: the kept generations and the one being recorded."""
        session = self._session
        if self._running and session is not None:
            return session.drainer.held_bytes(lambda: self._bytes)
        return self._bytes

    @property
    def stall_dumps(self) -> tuple[str, ...]:
        """The paths of the stall snapshots written, oldest first (the last 100)."""
        return tuple(self._stall_dumps)

    def start(self) -> None:
        """Starts recording; joins a trace already running, if any.

        Raises:
            TracingError: it is already running, another flight recorder is,
                or a running trace records with other options.
        """
        global _active
        with _session.lock:
            if self._running:
                raise TracingError("aiotrace: this flight recorder is already running")
            if _active is not None:
                raise TracingError(
                    "aiotrace: another flight recorder is running; stop it first "
                    "(one runs at a time)"
                )
            session = _session.current()
            if session is not None:
                _session.check(session, self._options, "FlightRecorder.start")
            fresh = session is None
            if session is None:
                session = _session.new(self._options, max_buffer_bytes=MIN_MAX_BYTES)
                self._hook(session)
            with self._ring_lock:
                self._gens.clear()
                self._bytes = 0
            self._error = None
            self._session = session
            self._running = True
            _active = self
            session.consumers.append(self)
            session.reset_generation_size()
            error = session.start() if fresh else None
        if error is not None:
            self.stop()
            raise TracingError(
                f"aiotrace: the flight recorder could not start the execution "
                f"tracer: {type(error).__name__}: {error}"
            ) from error
        if not fresh:
            try:
                session.drainer.at_boundary(lambda: self._hook(session))
            except TracingError:
                self.stop()
                raise

    def _hook(self, session: Session) -> None:
        drainer = session.drainer
        drainer.on_generation = self._add
        if self.on_stall is not None:
            drainer.on_stall_end = self._stall_ended

    def _unhook(self) -> None:
        session = self._session
        if session is None:
            return
        drainer = session.drainer
        if drainer.on_generation == self._add:
            drainer.on_generation = None
        if drainer.on_stall_end == self._stall_ended:
            drainer.on_stall_end = None

    def stop(self) -> None:
        """Stops recording. What was kept stays, for ``write_to``; a stall
        snapshot being written is finished first. Does nothing if stopped."""
        global _active
        with _session.lock:
            if not self._running:
                return
            self._running = False
            if _active is self:
                _active = None
            session = self._session
            mode = "gone"
            if session is not None and self in session.consumers:
                session.consumers.remove(self)
                mode = "shared" if session.consumers else "last"
                if mode == "last":
                    session.close()
                else:
                    session.reset_generation_size()
        if session is not None and mode == "last":
            session.drainer.stop()
        elif mode == "shared":
            with contextlib.suppress(TracingError):
                session.drainer.at_boundary(self._unhook)  # type: ignore[union-attr]
        dumper = self._dumper
        if dumper is not None and dumper is not threading.current_thread():
            dumper.join()

    def _fail(self, exc: BaseException) -> None:
        """The drain thread failed: the recorder stops, keeping what it has."""
        global _active
        self._error = exc
        with _session.lock:
            self._running = False
            if _active is self:
                _active = None
            session = self._session
            if session is None or self not in session.consumers:
                return
            session.consumers.remove(self)
            if not session.consumers:
                session.close(join=False)
                session.drainer.abandon()

    def _add(self, gen: Generation) -> None:
        """Keeps a whole generation (on the drain thread) and trims the ring."""
        with self._ring_lock:
            gens = self._gens
            gens.append(gen)
            self._bytes += len(gen.data)
            oldest_end = gen.end_ns - int(self.min_age * 1e9)
            while len(gens) > 1 and (
                self._bytes > self.max_bytes or gens[0].end_ns < oldest_end
            ):
                self._bytes -= len(gens.popleft().data)

    def _cut(self) -> list[bytes]:
        """Closes the generation being recorded, so that it is kept too, and
        returns the snapshot's bytes, in parts."""
        session = self._session
        if session is None:
            raise TracingError(
                "aiotrace: the flight recorder was never started: nothing to write"
            )
        if self._running:
            with contextlib.suppress(TracingError):  # stopped meanwhile
                session.drainer.at_boundary()
        with self._ring_lock:
            datas = [g.data for g in self._gens]
        lost = session.drainer.lost_events
        end = frame(FrameKind.TRACE_END, msgpack.packb([lost]))
        return [HEADER, *datas, end]

    def _claim(self) -> None:
        if not self._snapshot_lock.acquire(blocking=False):
            raise TracingError(
                "aiotrace: a snapshot of this flight recorder is already being "
                "written; try again when it is done"
            )

    def write_to(self, sink: object) -> int:
        """Writes a snapshot of the recent trace to a sync sink and returns
        its size in bytes; the recorder keeps running.

        ``sink`` is a path, a binary file, a socket or a ``MemorySink``; the
        snapshot ends with what was recorded just before this call. Blocks
        until it is written: from a coroutine, use ``await awrite_to(sink)``.

        Raises:
            TypeError: an async sink (use ``awrite_to``), or not a sink.
            TracingError: another snapshot is being written, the recorder
                was never started, or the sink failed (the cause is chained).
        """
        self._claim()
        try:
            # A path is opened only once there is a snapshot: a recorder that
            # was never started leaves no empty file (and no open handle).
            parts = self._cut() if isinstance(sink, str | os.PathLike) else None
            adapted = adapt(sink)
            if isinstance(adapted, AsyncSink):
                raise TypeError(
                    f"aiotrace: {adapted.description} is an async sink; use "
                    "`await recorder.awrite_to(sink)`"
                )
            return _write_sync(adapted, self._cut() if parts is None else parts)
        finally:
            self._snapshot_lock.release()

    async def awrite_to(self, sink: object) -> int:
        """Writes a snapshot to any sink without blocking the event loop;
        returns its size in bytes.

        The cut and a sync sink's I/O run in a worker thread; an async sink
        (``StreamWriter``, ``ByteSendStream``) is written from this task.
        Works under asyncio and trio.

        Raises:
            TypeError: not a sink.
            TracingError: as ``write_to``.
        """
        self._claim()
        try:
            if isinstance(sink, str | os.PathLike):
                parts = await anyio.to_thread.run_sync(self._cut)  # then open
                adapted: SyncSink | AsyncSink = await anyio.to_thread.run_sync(
                    adapt, sink
                )
            else:
                adapted = adapt(sink)
                parts = await anyio.to_thread.run_sync(self._cut)
            if isinstance(adapted, SyncSink):
                return await anyio.to_thread.run_sync(_write_sync, adapted, parts)
            data = b"".join(parts)
            try:
                for i in range(0, len(data), _SEND_CHUNK):
                    await adapted.send(data[i : i + _SEND_CHUNK])
            except Exception as exc:
                raise _sink_failed(adapted.description, exc) from exc
            return len(data)
        finally:
            self._snapshot_lock.release()

    def _stall_ended(self) -> None:
        """Starts a stall snapshot, unless one ran too recently (drain thread)."""
        now = time.monotonic()
        last = self._last_dump
        if last is not None and now - last < self.on_stall_interval:
            return
        dumper = self._dumper
        if dumper is not None and dumper.is_alive():
            return
        self._last_dump = now
        self._dumps += 1
        self._dumper = threading.Thread(
            target=self._dump_stall,
            args=(self._dumps,),
            name="aiotrace-flight-dump",
            daemon=True,
        )
        self._dumper.start()

    def _dump_stall(self, n: int) -> None:
        pattern = self.on_stall
        assert pattern is not None
        path = pattern.format(time=time.strftime("%Y%m%d-%H%M%S"), n=n, pid=os.getpid())
        try:
            with self._snapshot_lock:  # waits for a snapshot being written
                sink = adapt(path)
                assert isinstance(sink, SyncSink)  # a path always is
                _write_sync(sink, self._cut())
        except Exception as exc:
            self.dump_error = exc
            with contextlib.suppress(Exception):
                warnings.warn(
                    f"aiotrace: the flight recorder could not write a stall "
                    f"snapshot to {path!r}: {type(exc).__name__}: {exc}",
                    TracingWarning,
                    stacklevel=1,
                )
        else:
            self._stall_dumps.append(path)


def _write_sync(sink: SyncSink, parts: list[bytes]) -> int:
    try:
        n = 0
        for part in parts:
            sink.write(part)
            n += len(part)
        sink.finish()
    except Exception as exc:
        sink.abort()
        raise _sink_failed(sink.description, exc) from exc
    return n


def _sink_failed(description: str, exc: BaseException) -> TracingError:
    return TracingError(
        f"aiotrace: writing the flight recorder's snapshot to {description} "
        f"failed: {type(exc).__name__}: {exc}"
    )


def _stall_pattern(
    pattern: str | os.PathLike[str] | None, options: Options
) -> str | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str | os.PathLike):
        raise TypeError(
            "aiotrace: on_stall must be a path pattern such as "
            f"'stall-{{time}}-{{n}}.trace', got {type(pattern).__name__}"
        )
    text = os.path.abspath(os.fspath(pattern))
    try:
        text.format(time="t", n=1, pid=1)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"aiotrace: on_stall pattern {os.fspath(pattern)!r} is malformed "
            f"({type(exc).__name__}: {exc}); it may use {{time}}, {{n}} and {{pid}}"
        ) from None
    if options.stall_threshold is None or not options.runtime_events:
        raise ValueError(
            "aiotrace: on_stall needs stall detection: a stall_threshold and "
            "runtime_events=True"
        )
    return text


def _forget_in_child() -> None:
    """In a forked child, the parent's recorder does not run (its threads
    did not survive the fork); another may be started."""
    global _active
    recorder, _active = _active, None
    if recorder is not None:
        recorder._running = False
        recorder._session = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
