"""A trace cut short (a live trace whose client left, a file cut anywhere,
even inside its first generation) reads up to where it was cut."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import msgpack

import aiotrace
from aiotrace import _session
from aiotrace._format.framing import FRAME_HEAD, HEADER, FrameKind, frame
from aiotrace.reader import Event, EventKind, Reader, TraceError, validate

ROUNDS = 20_000


async def ping_pong() -> None:
    """Two coroutines passing a token back and forth through two queues."""
    a: asyncio.Queue[int] = asyncio.Queue()
    b: asyncio.Queue[int] = asyncio.Queue()

    async def pong() -> None:
        for _ in range(ROUNDS):
            b.put_nowait(await a.get())

    task = asyncio.create_task(pong())
    for i in range(ROUNDS):
        a.put_nowait(i)
        await b.get()
    await task


def frames(data: bytes) -> list[tuple[int, FrameKind, int]]:
    """(offset, kind, end) of each whole frame of ``data``."""
    out = []
    pos = len(HEADER)
    while pos + FRAME_HEAD.size <= len(data):
        kind, length, _ = FRAME_HEAD.unpack_from(data, pos)
        end = pos + FRAME_HEAD.size + length
        if end > len(data):
            break
        out.append((pos, FrameKind(kind), end))
        pos = end
    return out


def one_generation_trace(path: Path) -> bytes:
    """Traces the ping-pong into ``path`` with generations that never close
    (private knobs) but the first, which closes soon: returns the bytes."""
    with aiotrace.tracing(path):
        session = _session.current()
        assert session is not None
        session.drainer.first_generation_bytes = 1 << 40
        session.drainer.generation_bytes = 1 << 40
        session.drainer.generation_ns = 1 << 62
        asyncio.run(ping_pong())
    return path.read_bytes()


class SmallReads(io.BytesIO):
    """A binary stream whose reads return at most ``size`` bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        super().__init__(data)
        self.size = size

    def read(self, n: int | None = -1, /) -> bytes:
        return super().read(self.size if n is None or n < 0 else min(n, self.size))


def closed_at(data: bytes) -> list[Event]:
    """Reads ``data`` (cut inside its last generation) closed at its last
    whole frame by a GENERATION_END counting its whole batches."""
    found = frames(data)
    gen = batches = events = 0
    for offset, kind, end in found:
        payload = msgpack.unpackb(data[offset + FRAME_HEAD.size : end])
        if kind is FrameKind.GENERATION:
            gen, batches, events = payload[0], 0, 0
        elif kind is FrameKind.BATCH:
            batches += 1
            events += len(payload) - 2
    closed = (
        data[: found[-1][2]]
        + frame(FrameKind.GENERATION_END, msgpack.packb([gen, batches, events]))
        + frame(FrameKind.TRACE_END, msgpack.packb([0]))
    )
    return list(Reader(io.BytesIO(closed)))


def read_until_error(
    data: bytes, size: int = 1 << 16
) -> tuple[list[Event], TraceError | None]:
    """The events read from ``data`` (in reads of at most ``size`` bytes)
    before the reader's error, and the error."""
    got: list[Event] = []
    try:
        for ev in Reader(SmallReads(data, size)):
            got.append(ev)
    except TraceError as exc:
        return got, exc
    return got, None


def test_a_trace_cut_inside_its_first_generation_reads_up_to_the_cut(
    tmp_path: Path,
) -> None:
    """A real trace of one long generation, cut in its middle: the reader
    yields every event of its whole batches (as many as the raw reader
    reads), they validate, and the error says where it was cut;
    `aiotrace stats` gives a summary with a warning and `aiotrace dump`
    prints the events (both exit 1, as docs/cli.md says)."""
    data = one_generation_trace(tmp_path / "whole.trace")
    found = frames(data)
    # The first generation closes soon; the second runs to the end.
    last = max(o for o, k, _ in found if k is FrameKind.GENERATION)
    number = sum(1 for _, k, _ in found if k is FrameKind.GENERATION) - 1
    assert number <= 1 and len(data) - last > 200_000
    cut = (last + len(data)) // 2
    cut_data = data[:cut]
    events, exc = read_until_error(cut_data)
    assert exc is not None
    assert "truncated" in str(exc) and f"generation {number}" in str(exc)
    assert "read up to its last whole batch" in str(exc)
    assert validate(events) == []
    # Exactly what the trace would read as had the generation ended at its
    # last whole frame before the cut.
    assert [str(ev) for ev in events] == [str(ev) for ev in closed_at(cut_data)]
    batches = [
        len(msgpack.unpackb(cut_data[o + FRAME_HEAD.size : e])) - 2
        for o, k, e in frames(cut_data)
        if k is FrameKind.BATCH and o > last
    ]
    assert sum(batches) > 10_000
    path = tmp_path / "cut.trace"
    path.write_bytes(cut_data)
    stats = subprocess.run(
        [sys.executable, "-m", "aiotrace", "stats", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert stats.returncode == 1, stats.stderr
    assert "truncated" in stats.stderr and "of generation 0" in stats.stderr
    assert "coroutine" in stats.stdout.lower()
    dump = subprocess.run(
        [sys.executable, "-m", "aiotrace", "dump", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert dump.returncode == 1
    assert len(dump.stdout.splitlines()) == len(events)
    assert "read up to its last whole batch" in dump.stderr


def test_the_first_generation_closes_soon(tmp_path: Path) -> None:
    """With generations that would otherwise never close (private knobs),
    the first generation still closes at its first drain past 64 KiB, so a
    live reader soon has a whole generation: the trace has two, and the
    first is whole and small."""
    path = tmp_path / "t.trace"
    with aiotrace.tracing(path):
        session = _session.current()
        assert session is not None
        session.drainer.generation_bytes = 1 << 40
        session.drainer.generation_ns = 1 << 62
        asyncio.run(ping_pong())
    data = path.read_bytes()
    found = frames(data)
    gens = [o for o, k, _ in found if k is FrameKind.GENERATION]
    ends = [e for _, k, e in found if k is FrameKind.GENERATION_END]
    assert len(gens) == 2 and len(ends) == 2
    assert ends[0] - gens[0] < (1 << 20) <= len(data) or len(data) < (1 << 20)
    with path.open("rb") as f:
        events = list(Reader(f))
    assert validate(events) == []


def test_a_damaged_trace_yields_each_whole_generation_whatever_the_read_size(
    tmp_path: Path,
) -> None:
    """One flipped bit in a batch of a real trace, in the same 64 KiB read as
    the end of the generation before: with 1 KiB reads as with 64 KiB ones,
    the reader yields every generation before the damaged one, whole, and
    nothing of it, then raises the CRC error naming the damaged frame."""
    block = 1 << 16  # the reader's read size, counted from the file's start
    # How the drain thread batches the events decides where frames fall; a
    # loaded machine can batch so that no frame suits: record again.
    for attempt in range(5):
        path = tmp_path / f"t{attempt}.trace"
        with aiotrace.tracing(path):
            session = _session.current()
            assert session is not None
            session.drainer.generation_bytes = 16 << 10
            asyncio.run(ping_pong())
        data = path.read_bytes()
        picked = pick_damage(frames(data), block)
        if picked is not None:
            break
    assert picked is not None, "no batch shares a read with a generation's end"
    damaged_gen, batch = picked
    damaged = bytearray(data)
    damaged[(batch[0] + batch[1]) // 2] ^= 0x10
    whole = list(Reader(io.BytesIO(data)))
    syncs = [i for i, ev in enumerate(whole) if ev.kind is EventKind.SYNC]
    before = [str(ev) for ev in whole[: syncs[damaged_gen]]]
    assert damaged_gen >= 1 and before
    for size in (1 << 10, block):
        events, exc = read_until_error(bytes(damaged), size)
        assert exc is not None and "CRC-32" in str(exc), size
        assert exc.offset == batch[0], size
        assert [str(ev) for ev in events] == before, size


def pick_damage(
    found: list[tuple[int, FrameKind, int]], block: int
) -> tuple[int, tuple[int, int]] | None:
    """(generation, (offset, end) of a BATCH frame of it) such that the frame
    lies whole in the same ``block``-aligned read as the end of the
    generation before it; None if no frame does."""
    gen = -1
    prev_end: int | None = None
    for offset, kind, end in found:
        if kind is FrameKind.GENERATION:
            gen += 1
        elif kind is FrameKind.GENERATION_END:
            prev_end = end
        elif (
            kind is FrameKind.BATCH
            and prev_end is not None
            and gen >= 1
            and (prev_end - 1) // block == (end - 1) // block
        ):
            return gen, (offset, end)
    return None
