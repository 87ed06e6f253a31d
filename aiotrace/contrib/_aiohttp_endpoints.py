"""The debug endpoints: a live trace, and the flight recorder's snapshot.

Like Go's ``net/http/pprof``, they exist only if the program installs them.
Streaming a trace never holds the event loop: the tracer encodes in its
drain thread, and a task on the loop writes the bytes to the response,
awaiting the client as it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import time
from typing import Final

from aiohttp import web

import aiotrace

from ._aiohttp_access import Access, _error

DEFAULT_PREFIX: Final = "/debug/aiotrace"
DEFAULT_SECONDS: Final = 1.0
DEFAULT_MAX_SECONDS: Final = 60.0
DEFAULT_SEND_TIMEOUT: Final = 30.0
MAX_FLIGHT_SENDS: Final = 2
"""Most flight snapshots held in memory for clients at once."""
_POLL: Final = 0.1  # how often a streaming trace checks that its client is there
_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def add_debug_routes(
    app: web.Application,
    *,
    prefix: str = DEFAULT_PREFIX,
    token: str | None = None,
    allow_remote: bool = False,
    flight_recorder: aiotrace.FlightRecorder | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
) -> None:
    """Adds the live trace and flight recorder endpoints to ``app``.

    - ``GET {prefix}/trace?seconds=N`` traces the process for N seconds
      (default 1, at most ``max_seconds``) and streams the trace as it is
      written, as ``application/octet-stream``. One at a time: while this
      or any other trace runs in the process it answers 409. A client that
      goes away stops the trace.
    - ``GET {prefix}/flight`` returns ``flight_recorder``'s snapshot (an
      ``aiotrace.FlightRecorder``; the last seconds of the trace, written
      off the event loop), 404 if there is none, 503 saying why if it
      cannot write one now (never started, another snapshot being written,
      or ``MAX_FLIGHT_SENDS`` snapshots already on their way to clients).

    A client gets ``send_timeout`` seconds to take what it asked for: the
    rest of a trace once its seconds are over, or a whole snapshot. A
    client that does not is cut off (its connection is aborted, so it sees
    an incomplete transfer) and what it held is freed; a trace's busy state
    lasts until then, so stuck clients never pile traces up.

    Only loopback clients (and Unix sockets) are served unless
    ``allow_remote`` is True, which requires a ``token``; with a token, a
    request must carry ``Authorization: Bearer <token>`` (401 without it,
    403 if wrong). The client's address is the connection's, never a
    header's.

    Raises:
        TypeError, ValueError: a bad option (see docs/aiohttp.md).
    """
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ValueError(
            f"aiotrace: prefix must be a path starting with '/', got {prefix!r}"
        )
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, int | float):
        raise TypeError(
            f"aiotrace: max_seconds must be a number, got {type(max_seconds).__name__}"
        )
    if not (max_seconds > 0 and math.isfinite(max_seconds)):
        raise ValueError(f"aiotrace: max_seconds must be positive, got {max_seconds!r}")
    if isinstance(send_timeout, bool) or not isinstance(send_timeout, int | float):
        raise TypeError(
            "aiotrace: send_timeout must be a number, "
            f"got {type(send_timeout).__name__}"
        )
    if not (send_timeout > 0 and math.isfinite(send_timeout)):
        raise ValueError(
            f"aiotrace: send_timeout must be positive, got {send_timeout!r}"
        )
    if flight_recorder is not None and not isinstance(
        flight_recorder, aiotrace.FlightRecorder
    ):
        raise TypeError(
            "aiotrace: flight_recorder must be an aiotrace.FlightRecorder, "
            f"got {type(flight_recorder).__name__}"
        )
    access = Access(token=token, allow_remote=allow_remote)
    endpoints = _Endpoints(
        access, flight_recorder, float(max_seconds), float(send_timeout)
    )
    base = prefix.rstrip("/")
    app.router.add_get(f"{base}/trace", endpoints.trace, allow_head=False)
    app.router.add_get(f"{base}/flight", endpoints.flight, allow_head=False)


class _ResponseSink:
    """_ResponseSink is an async sink writing a trace into an HTTP response.

    Bytes wait until the response's headers are sent. Once the client has
    gone, it drops what it is given, so that the trace still stops cleanly
    and the program sees no error: ``gone`` tells the handler to stop.
    """

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.ready = asyncio.Event()
        self.gone = asyncio.Event()

    async def send(self, data: bytes) -> None:
        """Writes ``data`` to the response, awaiting the client."""
        if self.gone.is_set():
            return
        await self.ready.wait()
        try:
            await self.response.write(data)
        except (OSError, RuntimeError):  # reset, closed, or EOF already sent
            self.gone.set()


class _Endpoints:
    """_Endpoints serves one application's debug routes.

    Invariant: ``busy`` is True from the start of one of its traces until
    that trace has stopped (sent, or given up on); a second request finds
    it, or finds another trace by the TracingError of start. ``flights`` is
    the number of snapshots held for clients, at most ``MAX_FLIGHT_SENDS``.
    """

    def __init__(
        self,
        access: Access,
        flight_recorder: aiotrace.FlightRecorder | None,
        max_seconds: float,
        send_timeout: float,
    ) -> None:
        self.access = access
        self.flight_recorder = flight_recorder
        self.max_seconds = max_seconds
        self.send_timeout = send_timeout
        self.busy = False
        self.flights = 0
        self.snapshot_lock = asyncio.Lock()

    def _seconds(self, request: web.Request) -> float | web.Response:
        raw = request.query.get("seconds")
        if raw is None:
            return min(DEFAULT_SECONDS, self.max_seconds)
        try:
            seconds = float(raw)
        except ValueError:
            return _error(400, f"seconds must be a number, got {raw[:40]!r}")
        if not (seconds > 0 and math.isfinite(seconds)):
            return _error(400, f"seconds must be positive, got {raw[:40]!r}")
        if seconds > self.max_seconds:
            return _error(
                400, f"seconds must be at most {self.max_seconds:g}, got {raw[:40]!r}"
            )
        return seconds

    async def trace(self, request: web.Request) -> web.StreamResponse:
        """Streams a live trace of the whole process for ``seconds``."""
        refused = self.access.refuse(request)
        if refused is not None:
            return refused
        seconds = self._seconds(request)
        if isinstance(seconds, web.Response):
            return seconds
        if self.busy:
            return _error(409, "a trace is already being streamed; try again later")
        response = web.StreamResponse(
            headers={
                **_HEADERS,
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{_filename("trace")}"',
            }
        )
        sink = _ResponseSink(response)
        try:
            tracer = aiotrace.start(sink)
        except aiotrace.TracingError as exc:
            return _error(409, f"tracing is already on in this process ({exc})")
        self.busy = True
        failed = False
        try:
            await response.prepare(request)
            sink.ready.set()
            await _wait(request, sink.gone, seconds)
        finally:
            sink.ready.set()  # a writer still waiting must not wait forever
            # Not busy until the trace has stopped: a client that does not
            # read holds the endpoint for at most send_timeout.
            stopping = asyncio.ensure_future(tracer.astop(self.send_timeout))
            stopping.add_done_callback(self._stopped)
            try:
                # Shielded: a handler cancelled here still stops its trace.
                await asyncio.shield(stopping)
            except aiotrace.TracingError:
                failed = True
        if failed or tracer.dropped_bytes:
            # The trace was cut short: drop the connection before the last
            # chunk, so that the client sees an incomplete transfer rather
            # than a trace that looks finished.
            transport = request.transport
            if transport is not None:
                transport.abort()
            return response
        if not sink.gone.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                await response.write_eof()
        return response

    def _stopped(self, stopping: asyncio.Future[None]) -> None:
        self.busy = False
        if not stopping.cancelled():
            stopping.exception()  # retrieved: the handler reports it

    async def flight(self, request: web.Request) -> web.StreamResponse:
        """Returns the flight recorder's snapshot."""
        refused = self.access.refuse(request)
        if refused is not None:
            return refused
        recorder = self.flight_recorder
        if recorder is None:
            return _error(
                404,
                "no flight recorder: pass flight_recorder=aiotrace.FlightRecorder(...) "
                "to add_debug_routes",
            )
        if self.flights >= MAX_FLIGHT_SENDS:
            return _error(
                503,
                f"{self.flights} snapshots are already on their way to clients; "
                "try again later",
            )
        self.flights += 1
        try:
            buffer = io.BytesIO()
            try:
                async with self.snapshot_lock:  # one at a time, in turn
                    await recorder.awrite_to(buffer)
            except aiotrace.TracingError as exc:  # never started, or busy
                return _error(503, str(exc).removeprefix("aiotrace: "))
            body = buffer.getvalue()
            del buffer
            response = web.StreamResponse(
                headers={
                    **_HEADERS,
                    "Content-Type": "application/octet-stream",
                    "Content-Disposition": (
                        f'attachment; filename="{_filename("flight")}"'
                    ),
                }
            )
            response.content_length = len(body)
            try:
                async with asyncio.timeout(self.send_timeout):
                    await response.prepare(request)
                    await response.write(body)
                    await response.write_eof()
            except (TimeoutError, OSError, RuntimeError):
                # Too slow, or gone: cut it off, so the snapshot is freed.
                transport = request.transport
                if transport is not None:
                    transport.abort()
            return response
        finally:
            self.flights -= 1


async def _wait(request: web.Request, gone: asyncio.Event, seconds: float) -> None:
    """Sleeps ``seconds``, or until the client goes away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not gone.is_set():
        remaining = deadline - loop.time()
        transport = request.transport
        if remaining <= 0 or transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(remaining, _POLL))


def _filename(kind: str) -> str:
    return f"aiotrace-{kind}-{time.strftime('%Y%m%d-%H%M%S')}.trace"
