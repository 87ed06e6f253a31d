"""The C reader and its pure-Python twin agree, event for event and error for
error, on recorded traces and on damaged ones.

(conftest.py runs every reader test on each implementation; these tests
read each trace with both and compare what they give.)
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from tracegen import sample_trace

import aiotrace
from aiotrace._format.framing import FRAME_HEAD, HEADER, FrameKind, frame
from aiotrace.reader import Reader, TraceError, _impl, implementation, validate

TESTDATA = Path(__file__).parent.parent / "testdata"


def _shape(x: Any) -> Any:
    """A value with the type of every part spelled out, enums included."""
    if isinstance(x, tuple):
        return (type(x), tuple(_shape(i) for i in x))
    if hasattr(x, "frames"):
        return (type(x), _shape(x.frames))
    return (type(x), x)


def _read(data: bytes, name: str, chunk: int = 0) -> tuple[list[Any], Any]:
    """Reads ``data`` with one implementation: every event's shape and the
    reader's lost-event count after it, then the error (type, message,
    args) or None."""
    _impl.use(name)
    try:
        stream = io.BytesIO(data)
        if chunk:
            stream = io.BufferedReader(io.BytesIO(data), buffer_size=chunk)  # type: ignore[assignment]
        reader = Reader(stream)
        out: list[Any] = []
        try:
            for ev in reader:
                out.append(_shape(ev))
                out.append(reader.lost_events)
        except TraceError as exc:
            return out, (type(exc), str(exc), exc.args)
        return out, None
    finally:
        _impl.use("python")


def _both(data: bytes) -> tuple[list[Any], Any]:
    """Reads ``data`` with both implementations; asserts they agree."""
    c = _read(data, "c")
    py = _read(data, "python")
    assert c[1] == py[1]
    assert len(c[0]) == len(py[0])
    assert c[0] == py[0]
    return py


def _frames(data: bytes) -> list[tuple[int, Any]]:
    """The (kind, decoded payload as lists) of every frame of a trace."""
    out = []
    pos = len(HEADER)
    while pos < len(data):
        kind, length, _ = FRAME_HEAD.unpack_from(data, pos)
        payload = data[pos + FRAME_HEAD.size : pos + FRAME_HEAD.size + length]
        out.append((kind, msgpack.unpackb(payload, strict_map_key=False)))
        pos += FRAME_HEAD.size + length
    return out


def _encode(frames: list[tuple[int, Any]]) -> bytes:
    return HEADER + b"".join(
        frame(FrameKind(kind), msgpack.packb(payload)) for kind, payload in frames
    )


# What a mutated value may become: wrong types, ids out of range, enum
# values out of range, numbers too large for 64 bits, equal floats.
_VALUES: list[Any] = [
    None,
    True,
    False,
    "x",
    b"x",
    1.5,
    2.0,
    -1,
    -(2**63),
    2**64 - 1,
    2**62,
    2**62 - 1,
    10**6,
    0,
    1,
    3,
    4,
    5,
    [],
    [1, 2],
    {"a": 1},
]


def _mutate(frames: list[tuple[int, Any]], rng: random.Random) -> str:
    """Changes one event of one batch, or one batch's head; says what."""
    batches = [i for i, (kind, p) in enumerate(frames) if kind == FrameKind.BATCH]
    i = rng.choice(batches)
    payload = frames[i][1]
    if len(payload) <= 2 or rng.random() < 0.05:
        j = rng.randrange(2)
        payload[j] = rng.choice(_VALUES)
        return f"frame {i} head {j}"
    j = rng.randrange(2, len(payload))
    ev = payload[j]
    if not isinstance(ev, list):  # mutated before: replace it
        payload[j] = rng.choice(_VALUES)
        return f"frame {i} event {j - 2}: replaced"
    what = rng.randrange(6)
    if what == 0:  # the type: another code, an equal float, a wrong type
        code = ev[0]
        ev[0] = rng.choice([float(code), code + 0.5, 1, 29, 48, 99, *_VALUES])
    elif what == 1:  # the time delta
        ev[1] = rng.choice([*_VALUES, -5])
    elif what == 2 and len(ev) > 2:  # one argument
        ev[rng.randrange(2, len(ev))] = rng.choice(_VALUES)
    elif what == 3:  # one argument too many, or too few
        if rng.random() < 0.5:
            ev.append(0)
        else:
            ev.pop()
    elif what == 4:  # not an array
        payload[j] = rng.choice(_VALUES[:8])
    else:  # another event's arguments under this event's type
        other = rng.choice([e for e in payload[2:] if isinstance(e, list)])
        payload[j] = [ev[0], *other[1:]]
    return f"frame {i} event {j - 2}: {what}"


def _sources(tmp_path: Path) -> dict[str, bytes]:
    """Traces to compare on: the sample, the fuzz corpus, a recorded one."""
    out = {"sample": sample_trace(), "sample cut": sample_trace(end=False)}
    for p in sorted((TESTDATA / "fuzz").glob("*.trace")):
        out[p.name] = p.read_bytes()
    out["testdata sample"] = (TESTDATA / "sample.trace").read_bytes()
    out["recorded"] = _record(tmp_path / "recorded.trace")
    return out


def _record(path: Path) -> bytes:
    """Records a small asyncio program (tasks, a queue, a lock, sleeps,
    annotations) and returns its trace, validated."""

    async def worker(q: asyncio.Queue[int], lock: asyncio.Lock, out: list[int]) -> None:
        while (item := await q.get()) >= 0:
            async with lock:
                with aiotrace.region("work"):
                    await asyncio.sleep(0)
                    out.append(item)

    async def main() -> list[int]:
        q: asyncio.Queue[int] = asyncio.Queue()
        lock = asyncio.Lock()
        out: list[int] = []
        with aiotrace.new_task("batch"):
            workers = [asyncio.create_task(worker(q, lock, out)) for _ in range(4)]
            for i in range(200):
                await q.put(i)
                if i % 10 == 0:
                    aiotrace.log("progress", str(i))
                    await asyncio.sleep(0)
            for _ in workers:
                await q.put(-1)
            await asyncio.gather(*workers)
        return out

    with aiotrace.tracing(str(path)):
        done = asyncio.run(main())
    assert sorted(done) == list(range(200))
    data = path.read_bytes()
    assert validate(Reader(io.BytesIO(data))) == []
    return data


def test_the_extension_is_in_use_unless_told_otherwise() -> None:
    """implementation() says "c" while the C loops are in use, "python"
    otherwise; conftest switches it for each test's variant."""
    assert implementation() in ("c", "python")
    _impl.use("python")
    assert implementation() == "python"
    if _impl.available():
        _impl.use("c")
        assert implementation() == "c"
    with pytest.raises(ValueError, match="no implementation 'rust'"):
        _impl.use("rust")


def test_both_read_every_trace_alike(tmp_path: Path) -> None:
    """The sample, the fuzz corpus and a recorded program's trace read the
    same with both: every event, field and type, the lost-event count after
    each event, and the error at the end (message and offset)."""
    if not _impl.available():
        pytest.skip("aiotrace's C extension is not built: nothing to compare")
    sources = _sources(tmp_path)
    ends, counts = {}, {}
    for name, data in sources.items():
        events, ends[name] = _both(data)
        counts[name] = len(events) // 2
    assert counts["sample"] > 20
    assert counts["recorded"] > 800
    assert ends["sample"] is None
    assert ends["recorded"] is None
    assert ends["bad-crc.trace"] is not None
    assert "CRC-32" in ends["bad-crc.trace"][1]
    # Read in small pieces, the recorded trace gives the same events too.
    assert _read(sources["recorded"], "c", 7) == _read(sources["recorded"], "python")


@pytest.mark.parametrize("seed", range(4))
def test_both_reject_damaged_batches_alike(tmp_path: Path, seed: int) -> None:
    """Events with wrong types, counts, ids, enum values and codes, in
    frames with valid checksums: both readers yield the same events, then
    raise the same TraceError (message and offset), or read it whole alike."""
    if not _impl.available():
        pytest.skip("aiotrace's C extension is not built: nothing to compare")
    rng = random.Random(seed)
    bases = [_frames(sample_trace())]
    if seed == 0:
        bases.append(_frames(_record(tmp_path / "recorded.trace")))
    errors = 0
    for n in range(150):
        frames = [(k, msgpack.unpackb(msgpack.packb(p))) for k, p in rng.choice(bases)]
        for _ in range(1 + n % 3):
            _mutate(frames, rng)
        _, error = _both(_encode(frames))
        errors += error is not None
    assert errors > 50  # most mutants are bad; a few stay valid (e.g. 2.0)


@pytest.mark.parametrize(
    ("value", "expected"), [("1", "python"), ("0", "c"), ("", "c")]
)
def test_the_environment_variable_forces_pure_python(value: str, expected: str) -> None:
    """AIOTRACE_PURE_PYTHON=1 at import makes the reader pure Python; unset,
    empty or 0, the reader uses the C extension where it was built."""
    if expected == "c" and not _impl.available():
        expected = "python"
    env = {**os.environ, "AIOTRACE_PURE_PYTHON": value}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import aiotrace.reader as r; print(r.implementation())",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    ).stdout
    assert out == f"{expected}\n"
