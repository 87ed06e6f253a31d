"""Streaming: AsyncReader over real sockets, and memory that does not grow."""

from __future__ import annotations

import asyncio
import io
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from tracegen import encode_trace, sample_trace

import aiotrace
from aiotrace._format.spec import C
from aiotrace.analysis import analyze
from aiotrace.export import write_perfetto
from aiotrace.reader import AsyncReader, EventKind, Reader, TraceError

SAMPLE = sample_trace()
WANT = [str(ev) for ev in Reader(io.BytesIO(SAMPLE))]


@pytest.mark.anyio
@pytest.mark.parametrize("chunk", [1, 7, 4096])
async def test_async_reader_over_anyio_tcp(chunk: int) -> None:
    """AsyncReader on an anyio TCP stream yields what Reader yields on the
    same bytes, however the bytes are split on the wire."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            for i in range(0, len(SAMPLE), chunk):
                await stream.send(SAMPLE[i : i + chunk])

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            got = [str(ev) async for ev in AsyncReader(stream)]
        tg.cancel_scope.cancel()
    assert got == WANT


@pytest.mark.asyncio
async def test_async_reader_over_asyncio_stream_reader() -> None:
    """AsyncReader accepts an asyncio StreamReader, and on a trace the peer
    cut short reads up to the cut, as Reader does, then raises TraceError."""

    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(SAMPLE[:-20])
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = []
        with pytest.raises(TraceError, match="truncated"):
            async for ev in AsyncReader(reader):
                got.append(str(ev))
        writer.close()
        await writer.wait_closed()
    # The first generation whole, then the whole batches of the second,
    # which the cut left without its GENERATION_END: as Reader reads them.
    sync_got: list[str] = []
    with pytest.raises(TraceError, match="read up to its last whole batch"):
        for ev in Reader(io.BytesIO(SAMPLE[:-20])):
            sync_got.append(str(ev))
    first_gen = WANT[: [i for i, s in enumerate(WANT) if " SYNC " in s][1]]
    assert got == sync_got
    assert got[: len(first_gen)] == first_gen and len(got) > len(first_gen)


def test_reader_rejects_text_streams_and_non_streams() -> None:
    """A text-mode file or a non-stream gets a TypeError that says what to do."""
    with pytest.raises(TypeError, match="binary mode"):
        list(Reader(io.StringIO("AIOTRACE")))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="read"):
        Reader(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="receive"):
        AsyncReader(42)


def _big_trace(generations: int) -> bytes:
    gens = []
    for g in range(generations):
        t0 = (g + 1) * 10**9
        evs = [
            (C["Log"], t0 + i, 0, "cat", f"message {g}:{i}", None) for i in range(5000)
        ]
        gens.append([(1, "main", evs)])
    return encode_trace(gens)


def _peak_while_reading(data: bytes) -> tuple[int, int]:
    stream = io.BytesIO(data)
    tracemalloc.start()
    try:
        n = sum(1 for ev in Reader(stream) if ev.kind is EventKind.LOG)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return n, peak


def test_memory_does_not_grow_with_trace_length() -> None:
    """Reading 16 generations peaks at about the memory of reading 2: the
    reader holds one generation at a time."""
    short, long = _big_trace(2), _big_trace(16)
    n_short, peak_short = _peak_while_reading(short)
    n_long, peak_long = _peak_while_reading(long)
    assert (n_short, n_long) == (10_000, 80_000)
    assert peak_long < 1.5 * peak_short, (peak_short, peak_long)


def test_a_trace_file_opened_in_text_mode_gets_the_promised_type_error(
    tmp_path: Path,
) -> None:
    """A real trace file opened with ``open(path)`` (text mode): Reader,
    analysis.analyze and export.write_perfetto raise TypeError saying to
    open it in binary mode, not UnicodeDecodeError."""
    path = tmp_path / "app.trace"
    with aiotrace.tracing(path):
        asyncio.run(asyncio.sleep(0))
    calls: list[Callable[[Any], object]] = [
        lambda f: list(Reader(f)),
        analyze,
        lambda f: write_perfetto(f, tmp_path / "out.json"),
    ]
    for call in calls:
        with open(path) as f, pytest.raises(TypeError, match=r"binary mode \('rb'\)"):
            call(f)
