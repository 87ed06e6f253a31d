"""Reader, AsyncReader and read_events: bytes in, validated events out."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import anyio

from ._decode import Decoder, Generation, RawEvent
from ._frames import Frame, FrameParser
from ._model import Event, TraceError
from ._typed import Typer

CHUNK = 1 << 16

_TEXT_MODE = (
    "aiotrace: the trace file was opened in text mode; open it in binary mode ('rb')"
)


class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class _Pipeline:
    """_Pipeline feeds bytes through the frame parser and decoder."""

    def __init__(self) -> None:
        self.parser = FrameParser()
        self.decoder = Decoder()

    def frames(self, data: bytes) -> list[Frame]:
        """Parses ``data`` into frames; nothing may follow the trace's end."""
        if self.decoder.ended and data:
            raise TraceError("data after the end of the trace", self.parser.offset)
        return self.parser.feed(data)

    def feed(self, data: bytes) -> Iterator[Generation]:
        for fr in self.frames(data):
            gen = self.decoder.feed(fr)
            if gen is not None:
                yield gen

    def partial(self) -> Generation | None:
        """At the end of the data: the whole batches of a generation the
        trace was cut inside, unless the trace is damaged."""
        self.parser.check()
        return self.decoder.partial()

    def eof(self) -> None:
        """Raises TraceError unless the trace ended cleanly."""
        parser, decoder = self.parser, self.decoder
        parser.check()
        end = parser.offset + parser.pending()
        if decoder.ended:
            if parser.pending():
                raise TraceError("data after the end of the trace", parser.offset)
            return
        if parser.version is None:
            if end == 0:
                raise TraceError("the trace is empty", 0)
            raise TraceError(
                f"the trace is truncated inside its header ({end} bytes)", 0
            )
        if parser.pending():
            where = f"inside a frame at byte {parser.offset}"
            if decoder.in_generation() is not None:
                where += (
                    f" of generation {decoder.in_generation()} (read up to its "
                    "last whole batch)"
                )
        elif decoder.in_generation() is not None:
            where = (
                f"inside generation {decoder.in_generation()}, which began at byte "
                f"{decoder.generation_offset} (read up to its last whole batch)"
            )
        elif decoder.generations:
            where = f"after {decoder.generations} complete generations (no TRACE_END)"
        else:
            where = "before its first generation"
        raise TraceError(f"the trace is truncated {where}; it ends at byte {end}", end)


class Reader:
    """Reader reads a byte stream, validates it, and produces trace events.

    Events come generation by generation, each generation's SYNC first and
    the rest ordered by time; memory holds one generation at a time. A
    truncated trace yields the events of its complete generations and the
    whole batches of the generation it was cut inside, then raises
    TraceError. A damaged trace yields every generation whole before the
    fault, however the bytes were read, then raises TraceError.

    Args:
        stream: a binary file object (anything with ``read(n)``).
    """

    def __init__(self, stream: _Readable) -> None:
        if not callable(getattr(stream, "read", None)):
            raise TypeError(
                "Reader needs a binary stream with read(n), "
                f"got {type(stream).__name__}"
            )
        if isinstance(stream, io.TextIOBase):
            raise TypeError(_TEXT_MODE)
        self._stream = stream
        self._pipeline = _Pipeline()
        self._typer = Typer()

    @property
    def lost_events(self) -> int:
        """Events the writer dropped, as far as the trace has been read."""
        return max(self._typer.lost_events, self._pipeline.decoder.lost_events)

    def __iter__(self) -> Iterator[Event]:
        typer = self._typer
        for gen in self._generations():
            yield from typer.events(gen)
            del gen  # or it stays alive while the next generation is decoded

    def raw(self) -> Iterator[RawEvent]:
        """Yields raw events in file order, as written: the fast path.

        Frames, checksums, generations and event types are checked, but
        arguments are not: they stay as written, with string and stack table
        ids unresolved, as in Go's raw reader. Events stream batch by batch,
        so a truncated trace yields events up to its last whole batch before
        TraceError. Use one Reader for either this or iteration, not both.
        """
        pipeline = self._pipeline
        decoder = pipeline.decoder = Decoder(validate=False)
        for data in self._chunks():
            for fr in pipeline.frames(data):
                decoder.feed(fr)
                yield from decoder.take()
        pipeline.eof()

    def _generations(self) -> Iterator[Generation]:
        pipeline = self._pipeline
        for data in self._chunks():
            yield from pipeline.feed(data)
        partial = pipeline.partial()
        if partial is not None:
            yield partial
            del partial
        pipeline.eof()

    def _chunks(self) -> Iterator[bytes]:
        read = self._stream.read
        while True:
            try:
                data = read(CHUNK)
            except UnicodeDecodeError:  # a text stream of our own kind
                raise TypeError(_TEXT_MODE) from None
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(
                    f"Reader: read() returned {type(data).__name__}; "
                    "open the trace in binary mode ('rb')"
                )
            if not data:
                return
            yield bytes(data)


class AsyncReader:
    """AsyncReader reads events from an async byte stream, as Reader does.

    Args:
        stream: an anyio ``ByteReceiveStream`` (``await receive()``), an
            asyncio ``StreamReader`` or anything with ``await read(n)``.
    """

    def __init__(self, stream: Any) -> None:
        if callable(getattr(stream, "receive", None)):
            self._receive = self._anyio_receive
        elif callable(getattr(stream, "read", None)):
            self._receive = self._read
        else:
            raise TypeError(
                "AsyncReader needs an async stream with receive() or read(n), "
                f"got {type(stream).__name__}"
            )
        self._stream = stream
        self._pipeline = _Pipeline()
        self._typer = Typer()

    @property
    def lost_events(self) -> int:
        """Events the writer dropped, as far as the trace has been read."""
        return max(self._typer.lost_events, self._pipeline.decoder.lost_events)

    async def _anyio_receive(self) -> bytes:
        try:
            data: bytes = await self._stream.receive()
        except anyio.EndOfStream:
            return b""
        return data

    async def _read(self) -> bytes:
        data: bytes = await self._stream.read(CHUNK)
        return data

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        pipeline = self._pipeline
        typer = self._typer
        while True:
            data = await self._receive()
            if not data:
                break
            for gen in pipeline.feed(bytes(data)):
                for ev in typer.events(gen):
                    yield ev
                del gen  # or it stays alive while the next one is decoded
        partial = pipeline.partial()
        if partial is not None:
            for ev in typer.events(partial):
                yield ev
            del partial
        pipeline.eof()


def read_events(path: str | os.PathLike[str]) -> list[Event]:
    """Reads every event of the trace file at ``path``.

    Raises:
        TraceError: the trace is malformed or truncated.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        return list(Reader(f))
