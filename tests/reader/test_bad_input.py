"""Malformed input: only TraceError escapes, and it says where and why."""

from __future__ import annotations

import contextlib
import io
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracegen import sample_trace

from aiotrace._format.framing import FRAME_HEAD, HEADER, MAGIC, FrameKind, frame
from aiotrace.reader import EventKind, Reader, TraceError

SAMPLE = sample_trace()


def _read(data: bytes) -> list[Any]:
    return list(Reader(io.BytesIO(data)))


def _frame_offsets(data: bytes) -> list[tuple[int, FrameKind, int]]:
    """(offset, kind, end) of every frame in a well-formed trace."""
    out = []
    pos = len(HEADER)
    while pos < len(data):
        kind, length, _ = FRAME_HEAD.unpack_from(data, pos)
        end = pos + FRAME_HEAD.size + length
        out.append((pos, FrameKind(kind), end))
        pos = end
    return out


def _events_until_error(data: bytes) -> tuple[list[Any], TraceError | None]:
    got: list[Any] = []
    try:
        for ev in Reader(io.BytesIO(data)):
            got.append(ev)
    except TraceError as exc:
        return got, exc
    return got, None


def _whole_up_to(data: bytes, cut: int) -> bytes | None:
    """The trace a reader should see when ``data`` is cut at ``cut``: its
    whole frames before the cut, with the generation cut inside closed by a
    GENERATION_END that counts its whole batches; None if the cut leaves no
    generation open."""
    frames = [f for f in _frame_offsets(data) if f[2] <= cut]
    gen = batches = events = None
    for offset, kind, end in frames:
        if kind is FrameKind.GENERATION:
            payload = msgpack.unpackb(data[offset + FRAME_HEAD.size : end])
            gen, batches, events = payload[0], 0, 0
        elif kind is FrameKind.GENERATION_END:
            gen = None
        elif kind is FrameKind.BATCH and gen is not None:
            assert batches is not None and events is not None
            payload = msgpack.unpackb(data[offset + FRAME_HEAD.size : end])
            batches += 1
            events += len(payload) - 2
    if gen is None:
        return None
    end = frames[-1][2]
    return (
        data[:end]
        + frame(FrameKind.GENERATION_END, msgpack.packb([gen, batches, events]))
        + frame(FrameKind.TRACE_END, msgpack.packb([0]))
    )


def test_truncation_at_every_byte_offset() -> None:
    """Cut anywhere, the reader yields exactly the events of the complete
    generations before the cut and of the whole batches of the generation it
    cuts (as if that generation had ended there), then raises a TraceError
    that says the trace is truncated (or empty) and where it ends."""
    full = _read(SAMPLE)
    gen_starts = [i for i, ev in enumerate(full) if ev.kind is EventKind.SYNC]
    gen_ends = [*gen_starts[1:], len(full)]
    ends = [
        end
        for _, kind, end in _frame_offsets(SAMPLE)
        if kind is FrameKind.GENERATION_END
    ]
    assert len(ends) == 2
    partial_reads = 0
    for cut in range(len(SAMPLE)):
        got, exc = _events_until_error(SAMPLE[:cut])
        assert exc is not None, f"no error for a trace cut at byte {cut}"
        assert "truncated" in str(exc) or "empty" in str(exc), (cut, str(exc))
        closed = _whole_up_to(SAMPLE, cut)
        if closed is None:
            complete = sum(1 for end in ends if end <= cut)
            want = [str(e) for e in full[: gen_ends[complete - 1] if complete else 0]]
        else:
            want = [str(e) for e in _read(closed)]
            partial_reads += len(want) > len(full[: gen_starts[1]])
            assert "read up to its last whole batch" in str(exc), (cut, str(exc))
        assert [str(e) for e in got] == want, cut
        if cut:
            assert exc.offset is not None and exc.offset <= cut
    assert partial_reads > 0


def test_error_names_the_byte_offset_of_the_bad_frame() -> None:
    """A flipped byte inside a frame's payload fails that frame's CRC check,
    and the error names the frame and its offset."""
    offset, kind, end = _frame_offsets(SAMPLE)[3]
    data = bytearray(SAMPLE)
    data[end - 1] ^= 0x40
    _, exc = _events_until_error(bytes(data))
    assert exc is not None
    assert exc.offset == offset
    assert f"at byte {offset}" in str(exc)
    assert kind.name in str(exc) and "CRC" in str(exc)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"NOTATRACE-at-all", "magic"),
        (b"AIOTR", "truncated inside its header"),
        (MAGIC + struct.pack("<H", 99), "version 99 is not supported"),
        (HEADER, "before its first generation"),
        (HEADER + b"\x63" + b"\x00" * 8, "expected a frame kind"),
        (HEADER + FRAME_HEAD.pack(4, 1 << 30, 0), "more than the limit"),
        (SAMPLE + b"\x00", "after the end of the trace"),
        (sample_trace(end=False), "no TRACE_END"),
    ],
    ids=[
        "empty",
        "bad-magic",
        "short-header",
        "unknown-version",
        "header-only",
        "bad-frame-kind",
        "huge-length",
        "trailing-bytes",
        "no-trace-end",
    ],
)
def test_clear_messages(data: bytes, message: str) -> None:
    """Each kind of damage gets a message that says what was wrong."""
    with pytest.raises(TraceError, match=message):
        _read(data)


def _frames(*frames: tuple[FrameKind, Any]) -> bytes:
    return HEADER + b"".join(
        frame(kind, msgpack.packb(payload)) for kind, payload in frames
    )


G = FrameKind.GENERATION
GOOD_GEN = (G, [0, 100, 200, 0])


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([(FrameKind.BATCH, [1, 0])], "BATCH frame outside a generation"),
        ([GOOD_GEN, GOOD_GEN], "has no GENERATION_END"),
        ([(G, [0, 1])], "GENERATION frame must hold 4 integers"),
        ([GOOD_GEN, (FrameKind.STRINGS, [5, "x"])], "continues at id 5, expected 0"),
        ([GOOD_GEN, (FrameKind.STRINGS, [0, 3])], "must be a string"),
        (
            [GOOD_GEN, (FrameKind.STACKS, [1, [0, 0, 1]])],
            "string 0, which is undefined",
        ),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, [99, 0]])], "unknown type 99"),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, [1, 0, 0, 0, 0]])], "only a GENERATION"),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, [15, 0]])], "CoroStart has 0 arguments"),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, [15, 0, "x"]])], "expected int"),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, [13, 0, 0, 0, 0, 0]])], "names string 0"),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, [10, 0, 0, 9]])], "names stack 9"),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, [20, 0, 1, 7]])], "state is 7, outside"),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, [15, 1.5, 1]])], "time delta of type"),
        ([GOOD_GEN, (FrameKind.BATCH, [1, 0, {"a": 1}])], "is not \\[type, dt"),
        ([GOOD_GEN, (FrameKind.BATCH, ["x", 0])], "must start with \\[thread"),
        ([GOOD_GEN, (FrameKind.GENERATION_END, [0, 1, 0])], "declares 1 batches"),
        ([GOOD_GEN, (FrameKind.GENERATION_END, [3, 0, 0])], "closes generation 0"),
        (
            [GOOD_GEN, (FrameKind.GENERATION_END, [0, 0, 0]), (G, [5, 1, 1, 0])],
            "expected generation 1",
        ),
        ([GOOD_GEN, (FrameKind.TRACE_END, [0])], "inside generation 0"),
        (
            [
                GOOD_GEN,
                (FrameKind.GENERATION_END, [0, 0, 0]),
                (FrameKind.TRACE_END, [0]),
                GOOD_GEN,
            ],
            "after the end",
        ),
    ],
)
def test_structural_errors(frames: list[tuple[FrameKind, Any]], message: str) -> None:
    """Frames with valid checksums but broken rules are rejected, saying which
    rule and where."""
    with pytest.raises(TraceError, match=message) as info:
        _read(_frames(*frames))
    assert info.value.offset is not None
    assert info.value.offset >= len(HEADER)


def test_payload_that_is_not_msgpack() -> None:
    """Undecodable payload bytes with a valid checksum are a TraceError."""
    data = HEADER + frame(FrameKind.GENERATION, b"\xc1\xc1\xc1")
    with pytest.raises(TraceError, match="not valid msgpack"):
        _read(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_corruption_raises_only_trace_error(data: st.DataObject) -> None:
    """Random byte changes, insertions and deletions anywhere: the reader
    either reads a valid trace or raises TraceError, nothing else."""
    buf = bytearray(SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[pos : pos + data.draw(st.integers(1, 8))]
    with contextlib.suppress(TraceError):
        _read(bytes(buf))


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(FrameKind)), json_like), min_size=1, max_size=6
    ),
    st.booleans(),
)
def test_garbage_frames_with_valid_checksums(
    frames: list[tuple[FrameKind, Any]], open_generation: bool
) -> None:
    """Arbitrary msgpack values in well-checksummed frames only ever raise
    TraceError: the checks behind the CRC hold on their own."""
    if open_generation:
        frames = [GOOD_GEN, *frames]
    with contextlib.suppress(TraceError):
        _read(_frames(*frames))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_the_header(tail: bytes) -> None:
    """Random bytes after a valid header raise only TraceError."""
    with contextlib.suppress(TraceError):
        _read(HEADER + tail)
