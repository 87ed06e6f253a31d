"""Sink adapters: where a trace's bytes go.

``aiotrace.start`` takes any of these and adapts it with ``adapt``:

- a path (``str`` or ``os.PathLike``): a file aiotrace creates and closes;
- a binary file object (anything with ``write(bytes)``), or a socket;
- an async byte stream: anything with ``async send(bytes)`` (anyio's
  ``ByteSendStream``), or with ``write(bytes)`` and ``async drain()``
  (asyncio's ``StreamWriter``);
- a ``MemorySink``.

Sync sinks are written from a background thread, async ones from a task on
the event loop that started tracing. aiotrace closes only what it opened.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .reader import Event


class MemorySink:
    """MemorySink keeps a trace in memory, for tests and small programs."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        """Appends ``data``."""
        with self._lock:
            self._data += data
        return len(data)

    def getvalue(self) -> bytes:
        """Returns every byte written so far."""
        with self._lock:
            return bytes(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def events(self) -> list[Event]:
        """Reads back the trace written so far (it must be complete)."""
        from .reader import Reader

        return list(Reader(io.BytesIO(self.getvalue())))


PIECE = 1 << 20
"""Most bytes handed to a sink in one call, so that a stop can give up between
calls (a socket gets at most ``SOCKET_PIECE``)."""

SOCKET_PIECE = 64 << 10
"""Most bytes handed to a socket's ``send`` in one call."""

ZERO_WRITES = 100
"""Consecutive ``write()`` calls returning 0 after which a sink has failed
(with short sleeps in between: about half a second)."""


class SyncSink:
    """SyncSink writes to a path, a binary file or a socket from a thread."""

    is_async = False

    def __init__(
        self,
        write: Callable[[bytes], object],
        *,
        flush: Callable[[], object] | None = None,
        close: Callable[[], object] | None = None,
        raw: bool = False,
        description: str,
    ) -> None:
        self._write = write
        self._raw = raw
        self._flush = flush
        self._close = close
        self.description = description
        self.written = 0
        """Bytes the sink has taken so far."""

    def write(self, data: bytes, cancel: threading.Event | None = None) -> int:
        """Writes ``data``, however many calls the sink needs; returns the
        bytes written, fewer than ``len(data)`` only once ``cancel`` is set.

        The data goes in pieces of at most ``PIECE`` bytes, so that a stop
        that gives up on a slow sink (``cancel``) is heard between pieces. A
        raw file may take part of a write (its ``write`` returns the count)
        or, if non-blocking, none of it for now (it returns ``None``).

        Raises:
            OSError: the sink's ``write`` returned 0 (took nothing)
                ``ZERO_WRITES`` times in a row: it would spin forever.
        """
        done = 0
        zeros = 0
        size = len(data)
        while done < size:
            if cancel is not None and cancel.is_set():
                return done
            piece = data[done : done + PIECE] if done or size > PIECE else data
            n = self._write(piece)
            if n is None and self._raw:
                time.sleep(0.001)  # a non-blocking raw file would block
                continue
            if type(n) is not int or not 0 <= n < len(piece):
                done += len(piece)  # all taken (buffered files return None)
                self.written += len(piece)
                zeros = 0
                continue
            if n == 0:
                zeros += 1
                if zeros >= ZERO_WRITES:
                    raise OSError(
                        f"the sink's write() returned 0 (took no bytes) {zeros} "
                        "times in a row; a sink must take at least one byte, "
                        "return None when it takes everything, or raise"
                    )
                time.sleep(0.001 * min(zeros, 10))
                continue
            zeros = 0
            done += n
            self.written += n
        return done

    def finish(self) -> None:
        """Flushes, and closes what aiotrace opened."""
        try:
            if self._flush is not None:
                self._flush()
        finally:
            if self._close is not None:
                self._close()

    def abort(self) -> None:
        """Closes what aiotrace opened, ignoring errors (the sink failed)."""
        if self._close is not None:
            with contextlib.suppress(Exception):
                self._close()


class AsyncSink:
    """AsyncSink writes to an async byte stream from a task on the event loop."""

    is_async = True

    def __init__(
        self, send: Callable[[bytes], Awaitable[object]], *, description: str
    ) -> None:
        self.send = send
        self.description = description


def adapt(sink: object) -> SyncSink | AsyncSink:
    """Returns the adapter for any kind of sink ``aiotrace.start`` accepts.

    Raises:
        TypeError: ``sink`` is none of the accepted kinds, or a text file.
        OSError: a path could not be opened for writing.
    """
    if isinstance(sink, MemorySink):
        return SyncSink(sink.write, description="MemorySink")
    if isinstance(sink, str | os.PathLike):
        path = os.fspath(sink)
        f = open(path, "wb")  # noqa: SIM115 - closed by SyncSink.finish
        return SyncSink(f.write, flush=f.flush, close=f.close, description=repr(path))
    if isinstance(sink, socket.socket):
        sock = sink
        # send(), not sendall(): a stop that gives up on a slow peer is heard
        # between two sends, where sendall() of the backlog could take hours.
        return SyncSink(
            lambda data: sock.send(data[:SOCKET_PIECE]),
            raw=True,
            description=f"socket {sink.fileno()}",
        )
    if isinstance(sink, io.TextIOBase):
        raise TypeError(
            "aiotrace: the sink is a text file; open it in binary mode ('wb')"
        )
    drain = getattr(sink, "drain", None)
    write = getattr(sink, "write", None)
    if callable(write) and drain is not None and inspect.iscoroutinefunction(drain):
        writer: Any = sink

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        return AsyncSink(send, description=type(sink).__name__)
    send_fn = getattr(sink, "send", None)
    if callable(send_fn) and _is_async_callable(send_fn):
        return AsyncSink(send_fn, description=type(sink).__name__)
    if callable(write):
        flush = getattr(sink, "flush", None)
        return SyncSink(
            write,
            flush=flush if callable(flush) else None,
            raw=isinstance(sink, io.RawIOBase),
            description=type(sink).__name__,
        )
    raise TypeError(
        "aiotrace: the sink must be a path, a binary file, an async byte stream "
        "(with async send(), or write() and async drain()) or a MemorySink; "
        f"got {type(sink).__name__}"
    )


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - looking for async __call__
    return call is not None and inspect.iscoroutinefunction(call)
