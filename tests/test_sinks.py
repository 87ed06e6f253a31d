"""Sinks: every kind of sink, their failures, and the memory bound.

Sinks here are real: files in tmp_path, pipes, and sockets on 127.0.0.1 with
a real peer. The few hand-written sink classes are the objects a user might
pass (a file-like with ``write``, an object with ``async def send``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.abc
import pytest
from helpers import MIN_BUFFER, StuckFile, wait_until

import aiotrace
from aiotrace import reader
from aiotrace.reader import EventKind
from aiotrace.sinks import MemorySink


def parse(data: bytes) -> list[reader.Event]:
    """Reads a complete trace from bytes."""
    return list(reader.Reader(io.BytesIO(data)))


def messages(events: list[reader.Event], category: str) -> list[str]:
    """The messages of the LOG events of ``category``, in trace order."""
    return [
        ev.log.message
        for ev in events
        if ev.kind is EventKind.LOG and ev.log.category == category
    ]


def log_numbered(category: str, n: int, first: int = 0) -> list[str]:
    """Logs ``n`` numbered messages (from ``first``) and returns them."""
    sent = [f"{category} {i}" for i in range(first, first + n)]
    for m in sent:
        aiotrace.log(category, m)
    return sent


def log_until_tracing_stops(category: str, timeout: float = 20.0) -> int:
    """Keeps logging, as a traced program would, until tracing turns itself
    off (the sink failed); returns how many events were logged."""
    deadline = time.monotonic() + timeout
    n = 0
    while aiotrace.is_enabled():
        aiotrace.log(category, f"{category} {n}")
        n += 1
        if n % 500 == 0:
            if time.monotonic() > deadline:
                pytest.fail("tracing did not stop after its sink failed")
            time.sleep(0.001)
    return n


def trace_until_the_sink_fails(
    sink: object, on_start: Callable[[aiotrace.Tracer], None] | None = None
) -> tuple[aiotrace.Tracer, aiotrace.TracingError]:
    """Traces into ``sink`` until it fails, as a program that goes on logging
    would, then stops; returns the tracer and the TracingError stop() raised.
    ``on_start`` runs right after start()."""
    tracer = aiotrace.start(sink)
    if on_start is not None:
        on_start(tracer)
    log_until_tracing_stops("failing")
    assert not aiotrace.is_enabled()
    log_numbered("after failure", 1000)  # the program goes on
    aiotrace.logf("after failure", "%s", "x")
    with pytest.raises(aiotrace.TracingError) as exc:
        aiotrace.stop()
    return tracer, exc.value


class PeerReader(threading.Thread):
    """The peer of a TCP connection on 127.0.0.1: accepts one connection and
    collects every byte until EOF."""

    def __init__(self, rcvbuf: int | None = None) -> None:
        super().__init__(name="peer-reader", daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        if rcvbuf is not None:
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.address = self.server.getsockname()
        self.data = bytearray()

    def run(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                self.data += chunk
        self.server.close()


@pytest.fixture
def peer() -> Iterator[PeerReader]:
    """A started PeerReader; joined at the end of the test."""
    p = PeerReader()
    p.start()
    yield p
    p.join(20)
    p.server.close()


# --- every kind of sink ---------------------------------------------------------


@pytest.mark.parametrize("as_type", [str, Path])
def test_path_sink(tmp_path: Path, as_type: Callable[[Path], Any]) -> None:
    """A path (str or pathlib.Path) is created, written and closed by aiotrace;
    an existing file there is replaced by the trace."""
    path = tmp_path / "out.trace"
    path.write_bytes(b"old content that must go away")
    with aiotrace.tracing(as_type(path)):
        sent = log_numbered("path", 100)
    assert messages(reader.read_events(path), "path") == sent


def test_path_in_a_missing_directory_raises_oserror(tmp_path: Path) -> None:
    """A path that cannot be opened raises the OSError, and tracing stays off."""
    with pytest.raises(FileNotFoundError):
        aiotrace.start(tmp_path / "no such dir" / "t.trace")
    assert not aiotrace.is_enabled()
    aiotrace.start(MemorySink())
    aiotrace.stop()


def test_open_binary_file_is_flushed_and_left_open(tmp_path: Path) -> None:
    """An open binary file is written from where it stands, flushed by stop(),
    and not closed: the caller can keep writing to it afterwards."""
    path = tmp_path / "mine.bin"
    with open(path, "wb") as f:
        f.write(b"PREFIX")
        with aiotrace.tracing(f):
            sent = log_numbered("file", 100)
        assert not f.closed
        on_disk = path.read_bytes()  # flushed by stop(), before f is closed
        f.write(b"TAIL")
    data = path.read_bytes()
    assert data == on_disk + b"TAIL"
    assert data.startswith(b"PREFIX")
    assert messages(parse(data[len(b"PREFIX") : -len(b"TAIL")]), "file") == sent


@pytest.mark.parametrize("mode", ["w", "a", "r+"])
def test_text_file_is_refused(tmp_path: Path, mode: str) -> None:
    """A file opened in text mode is a TypeError that says to open it in binary
    mode; nothing is written to it and tracing stays off."""
    path = tmp_path / "t.txt"
    path.write_text("")
    with open(path, mode) as f, pytest.raises(TypeError, match="binary mode"):
        aiotrace.start(f)
    assert not aiotrace.is_enabled()
    assert path.read_bytes() == b""


def test_string_io_is_refused() -> None:
    """An in-memory text stream (io.StringIO) is refused like a text file."""
    with pytest.raises(TypeError, match="binary mode"):
        aiotrace.start(io.StringIO())
    assert not aiotrace.is_enabled()


class SyncSend:
    """Has a synchronous send(): neither a file nor an async stream."""

    def send(self, data: bytes) -> int:
        return len(data)


class NotCallableWrite:
    write = b"not a method"


@pytest.mark.parametrize("sink", [None, 42, object(), SyncSend(), NotCallableWrite()])
def test_unsuitable_object_is_a_type_error(sink: object) -> None:
    """An object that is no kind of sink raises TypeError naming its type and
    listing what is accepted; tracing stays off."""
    with pytest.raises(TypeError, match="must be a path") as exc:
        aiotrace.start(sink)
    assert type(sink).__name__ in str(exc.value)
    assert not aiotrace.is_enabled()


def test_memory_sink() -> None:
    """MemorySink keeps the trace in memory: getvalue() is the whole trace,
    len() its size, and events() reads it back."""
    sink = MemorySink()
    assert len(sink) == 0
    with aiotrace.tracing(sink) as tracer:
        sent = log_numbered("mem", 100)
    assert len(sink) == len(sink.getvalue()) == tracer.bytes_written
    events = sink.events()
    assert messages(events, "mem") == sent
    assert [str(ev) for ev in parse(sink.getvalue())] == [str(ev) for ev in events]


def test_connected_socket(peer: PeerReader) -> None:
    """A connected socket.socket is a sink: the peer receives the whole trace,
    and the socket is left open for the caller."""
    sock = socket.create_connection(peer.address)
    with sock:
        with aiotrace.tracing(sock) as tracer:
            sent = log_numbered("sock", 2000)
        sock.sendall(b"TAIL")  # still open
        sock.shutdown(socket.SHUT_WR)
        peer.join(20)
    data = bytes(peer.data)
    assert data.endswith(b"TAIL")
    assert len(data) == tracer.bytes_written + len(b"TAIL")
    assert messages(parse(data[: -len(b"TAIL")]), "sock") == sent


def test_raw_socket_file_with_partial_writes() -> None:
    """A raw (unbuffered) binary file may accept only part of a write and say
    so in its return value, as io.RawIOBase allows; aiotrace writes the rest,
    so the peer gets the whole trace. Here: sock.makefile("wb", buffering=0)
    on a socket with a timeout and small buffers."""
    peer = PeerReader(rcvbuf=4096)
    peer.start()
    sock = socket.create_connection(peer.address, timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    raw = sock.makefile("wb", buffering=0)
    try:
        with aiotrace.tracing(raw):
            sent = log_numbered("raw", 20_000)
    finally:
        raw.close()
        sock.close()
        peer.join(20)
        peer.server.close()
    assert messages(parse(bytes(peer.data)), "raw") == sent


@pytest.mark.anyio
async def test_anyio_tcp_stream(anyio_backend: str) -> None:
    """An anyio TCP stream is an async sink: `async with aiotrace.tracing(stream)`
    sends the trace from a task on the loop, and the listener reads it live
    with reader.AsyncReader. aiotrace does not close the stream."""
    received: list[reader.Event] = []
    done = anyio.Event()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            async for ev in reader.AsyncReader(stream):
                received.append(ev)
        done.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            async with aiotrace.tracing(stream) as tracer:
                assert tracer.is_async
                sent = []
                for i in range(300):
                    sent.append(f"anyio {i}")
                    aiotrace.log("anyio", sent[-1])
                    if i % 50 == 0:
                        await anyio.sleep(0.01)
            assert not aiotrace.is_enabled()
            await stream.send(b"")  # zero bytes: still open, trace unchanged
        with anyio.fail_after(20):
            await done.wait()
        tg.cancel_scope.cancel()
    assert messages(received, "anyio") == sent
    assert {ev.thread for ev in received if ev.kind is EventKind.LOG} == {
        threading.get_native_id()
    }


@pytest.mark.asyncio
async def test_asyncio_stream_writer() -> None:
    """An asyncio StreamWriter (asyncio.open_connection) is an async sink: it
    is written with write() and drain(), and left open for the caller."""
    got = bytearray()
    finished = asyncio.Event()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got.extend(await r.read())
        w.close()
        await w.wait_closed()
        finished.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        async with aiotrace.tracing(writer) as tracer:
            assert tracer.is_async
            sent = log_numbered("writer", 1000)
            await asyncio.sleep(0.06)  # let the writer task send a first part
            sent += log_numbered("writer", 1000, first=1000)
        writer.write(b"TAIL")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(finished.wait(), 20)
    data = bytes(got)
    assert data.endswith(b"TAIL")
    events = parse(data[: -len(b"TAIL")])
    assert messages(events, "writer") == sent


class AsyncSend:
    """A user's async byte stream: an object with `async def send(data)`."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def send(self, data: bytes) -> None:
        await anyio.sleep(0)
        self.chunks.append(bytes(data))


@pytest.mark.anyio
async def test_custom_async_send(anyio_backend: str) -> None:
    """Any object with `async def send(bytes)` is an async sink, on asyncio and
    on trio; it receives the whole trace, in order."""
    sink = AsyncSend()
    async with aiotrace.tracing(sink) as tracer:
        assert tracer.is_async
        sent = log_numbered("custom", 500)
        await anyio.sleep(0.06)  # let the writer task send a first part
        sent += log_numbered("custom", 500, first=500)
    data = b"".join(sink.chunks)
    assert len(data) == tracer.bytes_written
    assert messages(parse(data), "custom") == sent


# --- sink failures ---------------------------------------------------------------


class FullDisk:
    """A binary file on a disk that fills up after ``capacity`` bytes: like
    write(2), it writes what fits, then raises OSError(ENOSPC)."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115
        self.capacity = capacity
        self.written = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        room = self.capacity - self.written
        if len(data) > room:
            self.file.write(data[:room])
            self.written += room
            self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise self.error
        self.written += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def test_file_that_runs_out_of_space(tmp_path: Path) -> None:
    """A file whose write raises ENOSPC stops tracing, not the program: logging
    goes on without exceptions, a TracingWarning names the error, is_enabled()
    turns False, and stop() raises TracingError naming the sink, caused by the
    OSError. The partial trace reads as truncated. A new trace can start."""
    path = tmp_path / "full.trace"
    sink = FullDisk(path, capacity=4096)
    try:
        with pytest.warns(aiotrace.TracingWarning, match="FullDisk") as record:
            tracer, err = trace_until_the_sink_fails(sink)
    finally:
        sink.file.close()
    assert sink.error is not None
    assert err.__cause__ is sink.error
    assert tracer.error is sink.error
    assert "FullDisk" in str(err)
    assert "No space left" in str(err)
    assert any("No space left" in str(w.message) for w in record)
    assert tracer.bytes_written <= 4096
    with pytest.raises(aiotrace.TraceError):
        reader.read_events(path)
    assert not aiotrace.is_enabled()
    aiotrace.stop()  # already stopped: no-op, does not raise again
    with aiotrace.tracing(MemorySink()):
        pass


def test_socket_whose_peer_goes_away() -> None:
    """A socket whose peer resets the connection mid-trace fails with
    BrokenPipeError or ConnectionResetError: the program goes on, a
    TracingWarning is issued, tracing turns off, and stop() raises
    TracingError naming the socket, caused by the connection error."""
    server = socket.create_server(("127.0.0.1", 0))
    sock = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    server.close()

    def reset_the_peer(tracer: aiotrace.Tracer) -> None:
        wait_until(lambda: tracer.bytes_written > 0, "the trace to begin")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # abortive close: the peer resets the connection

    with sock, pytest.warns(aiotrace.TracingWarning, match="socket") as record:
        tracer, err = trace_until_the_sink_fails(sock, reset_the_peer)
    cause = err.__cause__
    assert isinstance(cause, BrokenPipeError | ConnectionResetError)
    assert tracer.error is cause
    assert "socket" in str(err)
    assert type(cause).__name__ in str(err)
    assert any(type(cause).__name__ in str(w.message) for w in record)
    assert not aiotrace.is_enabled()


class BrokenFile:
    """A binary file whose every write fails, e.g. a closed pipe."""

    def __init__(self) -> None:
        self.error = BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    def write(self, data: bytes) -> int:
        raise self.error


def test_sink_that_fails_on_its_first_write() -> None:
    """A sink that fails on its very first write (while start() is still
    returning) stops tracing all the same: is_enabled() turns False, so events
    are not piled up in memory with no one to drain them, and stop() raises
    the error. Tried 20 times, as the failure races with start()."""

    def start_and_stop(sink: BrokenFile) -> tuple[bool, aiotrace.TracingError]:
        tracer = aiotrace.start(sink)
        wait_until(lambda: tracer.error is not None, "the sink to fail")
        aiotrace.log("early", "after the failure")
        enabled = aiotrace.is_enabled()
        with pytest.raises(aiotrace.TracingError, match="BrokenFile") as exc:
            aiotrace.stop()
        return enabled, exc.value

    for attempt in range(20):
        sink = BrokenFile()
        with pytest.warns(aiotrace.TracingWarning, match="BrokenFile"):
            enabled, err = start_and_stop(sink)
        assert err.__cause__ is sink.error
        assert not enabled, f"tracing still on after its sink failed (try {attempt})"


class FailingSend:
    """An async stream that accepts ``ok`` sends, then fails."""

    def __init__(self, ok: int) -> None:
        self.ok = ok
        self.data = bytearray()
        self.error = ConnectionAbortedError("the stream's peer went away")

    async def send(self, data: bytes) -> None:
        await anyio.sleep(0)
        if self.ok == 0:
            raise self.error
        self.ok -= 1
        self.data += data


@pytest.mark.anyio
async def test_async_sink_whose_send_raises(anyio_backend: str) -> None:
    """An async sink whose send() raises stops tracing, not the program: the
    coroutines keep logging, a TracingWarning is issued, is_enabled() turns
    False, and astop() raises TracingError naming the sink, caused by the
    original error."""

    async def trace_until_it_fails() -> tuple[aiotrace.Tracer, aiotrace.TracingError]:
        tracer = aiotrace.start(sink)
        with anyio.fail_after(20):
            n = 0
            while aiotrace.is_enabled():
                aiotrace.log("async", str(n))
                n += 1
                await anyio.sleep(0.001)
        log_numbered("after failure", 100)
        with pytest.raises(aiotrace.TracingError) as exc:
            await aiotrace.astop()
        return tracer, exc.value

    sink = FailingSend(ok=1)
    with pytest.warns(aiotrace.TracingWarning, match="FailingSend"):
        tracer, err = await trace_until_it_fails()
    assert err.__cause__ is sink.error
    assert tracer.error is sink.error
    assert "FailingSend" in str(err)
    assert "ConnectionAbortedError" in str(err)
    assert not aiotrace.is_enabled()


def test_failing_sink_does_not_mask_the_blocks_own_error(tmp_path: Path) -> None:
    """When the traced block raises and the sink has failed too, `with
    tracing()` lets the block's exception through and reports the sink's
    failure as a TracingWarning instead of replacing the exception."""
    sink = FullDisk(tmp_path / "full.trace", capacity=2048)

    def traced_block_that_raises() -> None:
        with aiotrace.tracing(sink):
            log_until_tracing_stops("masked")
            raise KeyError("the block's own error")

    try:
        with (
            pytest.warns(aiotrace.TracingWarning) as record,
            pytest.raises(KeyError, match="the block's own error"),
        ):
            traced_block_that_raises()
    finally:
        sink.file.close()
    assert any(
        "FullDisk" in str(w.message) and "No space left" in str(w.message)
        for w in record
    )
    assert not aiotrace.is_enabled()
    with aiotrace.tracing(MemorySink()):
        pass


def test_sync_stop_after_the_writer_loop_closed() -> None:
    """If asyncio.run() returns without astop(), the loop writing the async
    sink is gone: tracing stops with a TracingWarning, and a later sync stop()
    ends the trace for good (raising TracingError, as the trace could not be
    finished) so that a new trace can start."""
    sink = AsyncSend()

    async def main() -> None:
        aiotrace.start(sink)
        aiotrace.log("orphan", "x")
        await asyncio.sleep(0.01)

    with pytest.warns(aiotrace.TracingWarning):
        asyncio.run(main())
    assert not aiotrace.is_enabled()
    try:
        with pytest.raises(aiotrace.TracingError):
            aiotrace.stop()
        with aiotrace.tracing(MemorySink()):  # tracing is really off now
            pass
    finally:
        # Put the tracer out of its misery, whatever happened above.
        with contextlib.suppress(aiotrace.TracingError):
            asyncio.run(aiotrace.astop())


# --- memory bound and loss accounting ----------------------------------------


def test_slow_sink_drops_whole_batches_and_counts_them(tmp_path: Path) -> None:
    """When the sink blocks (a pipe nobody reads yet), memory stays bounded:
    the tracer drops batches and counts them, the program is never blocked,
    and once the sink drains and tracing stops the trace reports the loss:
    the reader's lost_events equals the tracer's, a LOST_METRIC event is in
    the trace, and every logged event was either read back once or counted
    lost."""
    rfd, wfd = os.pipe()
    sink = open(wfd, "wb")  # noqa: SIM115
    got = bytearray()

    def read_pipe() -> None:
        with open(rfd, "rb") as r:
            while chunk := r.read(1 << 16):
                got.extend(chunk)

    pipe_reader = threading.Thread(target=read_pipe, daemon=True)
    sent: list[str] = []
    # Annotations only: the accounting below counts every event.
    tracer = aiotrace.start(sink, max_buffer_bytes=MIN_BUFFER, runtime_events=False)
    try:
        while tracer.lost_events == 0 and len(sent) < 1_000_000:
            for _ in range(20_000):
                sent.append(f"load {len(sent)}")
                aiotrace.log("load", sent[-1])
            total = len(sent)
            wait_until(
                lambda n=total: tracer.events + tracer.lost_events >= n,
                "the drainer to encode or drop every event",
            )
        assert tracer.lost_events > 0
    finally:
        pipe_reader.start()  # the sink drains from now on
    sent += log_numbered("load tail", 10)  # not dropped: few, with room
    aiotrace.stop()
    sink.close()
    pipe_reader.join(20)

    r = reader.Reader(io.BytesIO(bytes(got)))
    events = list(r)
    back = messages(events, "load")
    assert len(back) == len(set(back))
    assert set(back) <= set(sent)
    assert messages(events, "load tail") == [f"load tail {i}" for i in range(10)]
    assert r.lost_events == tracer.lost_events
    assert len(back) + 10 + r.lost_events == len(sent)
    lost_metrics = [
        ev.metric.value
        for ev in events
        if ev.kind is EventKind.METRIC and ev.metric.name == reader.LOST_METRIC
    ]
    assert lost_metrics
    assert lost_metrics == sorted(lost_metrics)
    assert lost_metrics[-1] == tracer.lost_events  # every loss is in the trace
    syncs = [ev.sync.lost_events for ev in events if ev.kind is EventKind.SYNC]
    assert syncs == sorted(syncs)
    assert syncs[-1] <= tracer.lost_events
    assert back == sorted(back, key=lambda m: int(m.split()[1]))


def test_loss_reported_after_a_generation_boundary_is_counted_once() -> None:
    """Events dropped while the buffer is full, whose loss can only be written
    after the generation has rotated (the sink stalled across a boundary), are
    counted once: the reader's lost_events and its last LOST_METRIC equal the
    tracer's count."""
    sink = StuckFile()
    tracer = aiotrace.start(sink, max_buffer_bytes=MIN_BUFFER, runtime_events=False)
    try:
        assert sink.writing.wait(20)  # the writer is stuck on the header
        aiotrace.log("big", "z" * MIN_BUFFER)  # fills the whole buffer
        wait_until(lambda: tracer.events == 1, "the big event to be encoded")
        log_numbered("small", 10)
        wait_until(lambda: tracer.lost_events == 10, "the small events to drop")
        # A generation rotates while the sink is still stuck: the rotation
        # the drainer does after a second, asked for now (white-box), so
        # that the test does not depend on how long a second of work takes.
        tracer._drainer.at_boundary()
    finally:
        sink.released.set()
    aiotrace.stop()

    r = reader.Reader(io.BytesIO(bytes(sink.data)))
    events = list(r)
    assert messages(events, "big") == ["z" * MIN_BUFFER]
    assert messages(events, "small") == []
    assert tracer.lost_events == 10
    assert r.lost_events == tracer.lost_events
    lost_metrics = [
        ev.metric.value
        for ev in events
        if ev.kind is EventKind.METRIC and ev.metric.name == reader.LOST_METRIC
    ]
    assert lost_metrics[-1] == tracer.lost_events
    assert len([ev for ev in events if ev.kind is EventKind.SYNC]) >= 2


# --- sinks that take nothing, and stops that give up on a slow sink -----------


class ZeroFile:
    """A file-like sink whose write() takes nothing: it returns 0."""

    def __init__(self) -> None:
        self.calls = 0

    def write(self, data: bytes) -> int:
        self.calls += 1
        return 0


def test_sink_whose_write_returns_zero_fails_instead_of_spinning() -> None:
    """write() returning 0 forever is a failure after ZERO_WRITES tries, not
    an endless spin: tracing stops with a TracingWarning and stop() returns,
    raising a TracingError that says write() returned 0."""
    from aiotrace._sinks import ZERO_WRITES

    sink = ZeroFile()
    with pytest.warns(aiotrace.TracingWarning, match="returned 0"):  # noqa: PT031
        tracer = aiotrace.start(sink)
        wait_until(lambda: tracer.error is not None, "the sink to be given up")
    with pytest.raises(aiotrace.TracingError, match=r"write\(\) returned 0") as exc:
        aiotrace.stop(timeout=None)
    assert isinstance(exc.value.__cause__, OSError)
    assert sink.calls == ZERO_WRITES
    assert not aiotrace.is_enabled()


def test_stop_gives_up_on_a_stuck_sink_and_says_how_much_is_dropped() -> None:
    """stop(timeout) returns although the sink takes nothing: a
    TracingWarning says how many bytes were written and dropped, and
    dropped_bytes counts them. The writer, released later, writes nothing
    more than the piece it held."""
    sink = StuckFile()
    tracer = aiotrace.start(sink, runtime_events=False)
    wait_until(sink.writing.is_set, "the first write")
    log_numbered("load", 2000)
    with pytest.warns(aiotrace.TracingWarning, match="did not take the trace within"):
        aiotrace.stop(timeout=0.05)
    assert not aiotrace.is_enabled()
    assert tracer.dropped_bytes > 0
    assert tracer.bytes_written == 0
    sink.released.set()
    wait_until(tracer._writer_done.is_set, "the writer to leave")
    # The piece the writer held when it was given up on is written, no more.
    assert tracer.bytes_written == len(sink.data) > 0
    assert tracer.error is None


def test_stop_gives_up_on_a_socket_peer_that_never_reads() -> None:
    """A socket sink whose peer on 127.0.0.1 stops reading: stop(timeout)
    returns, the warning names the socket, and what the peer receives once
    it reads is exactly bytes_written: the start of the trace, cut short."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    server.close()
    # Small kernel buffers: the trace is far larger than they hold.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        tracer = aiotrace.start(client, runtime_events=False)
        for _ in range(20):
            log_numbered("load", 5000)
        wait_until(lambda: tracer.events >= 100_000, "the events to be encoded")
        assert tracer._outbox.bytes > 100_000  # more than the socket can hold
        with pytest.warns(aiotrace.TracingWarning, match="socket"):
            aiotrace.stop(timeout=0.1)
        assert tracer.dropped_bytes > 0
        client.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := peer.recv(1 << 16):
            got += chunk
        wait_until(tracer._writer_done.is_set, "the writer to leave")
        assert len(got) == tracer.bytes_written
        assert got.startswith(b"AIOTRACE")
    finally:
        client.close()
        peer.close()


class NeverSends:
    """An async stream whose send() never completes."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()

    async def send(self, data: bytes) -> None:
        self.sending.set()
        await asyncio.Event().wait()


@pytest.mark.asyncio
async def test_astop_gives_up_on_an_async_sink_that_never_sends() -> None:
    """astop(timeout) cancels a send that never completes: it returns with a
    TracingWarning, the writer task is done, and dropped_bytes counts the
    whole trace."""
    sink = NeverSends()
    tracer = aiotrace.start(sink, runtime_events=False)
    await sink.sending.wait()
    log_numbered("load", 100)
    with pytest.warns(aiotrace.TracingWarning, match="did not take the trace within"):
        await aiotrace.astop(timeout=0.05)
    assert tracer._writer_done.is_set()
    assert tracer.bytes_written == 0
    assert tracer.dropped_bytes > 0
    assert tracer.error is None


def test_exit_gives_up_on_a_stuck_sink(tmp_path: Path) -> None:
    """A program that exits with tracing on and its sink stuck still exits:
    the exit handler waits DEFAULT_STOP_TIMEOUT (shortened here), then warns
    on stderr and the process ends with status 0."""
    program = tmp_path / "stuck.py"
    program.write_text(
        "import threading, aiotrace, aiotrace._tracer\n"
        "aiotrace._tracer.DEFAULT_STOP_TIMEOUT = 0.2\n"
        "class Stuck:\n"
        "    def write(self, data):\n"
        "        threading.Event().wait()\n"
        "aiotrace.start(Stuck())\n"
        "aiotrace.log('x', 'y')\n"
    )
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, str(program)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "did not take the trace within 0.2 s" in r.stderr


@pytest.mark.parametrize("timeout", [-1, float("nan"), "1", True])
def test_bad_stop_timeouts_are_refused(timeout: object) -> None:
    """stop(timeout=...) takes None or seconds >= 0, and says what it got."""
    aiotrace.start(MemorySink())
    try:
        with pytest.raises((TypeError, ValueError), match="timeout"):
            aiotrace.stop(timeout=timeout)  # type: ignore[arg-type]
    finally:
        aiotrace.stop()
