"""Regenerates the golden traces in tests/testdata.

Run ``python tests/testdata/generate.py``; a test checks that running it
would change nothing.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "reader"))

from tracegen import sample_trace  # noqa: E402

from aiotrace._format.framing import FRAME_HEAD, HEADER, MAGIC, FrameKind  # noqa: E402
from aiotrace.reader import Reader, format_event  # noqa: E402


def _cut_inside_first(data: bytes, kind: FrameKind) -> bytes:
    pos = len(HEADER)
    while True:
        k, length, _ = FRAME_HEAD.unpack_from(data, pos)
        if k == kind:
            return data[: pos + FRAME_HEAD.size + length // 2]
        pos += FRAME_HEAD.size + length


# Named regression inputs: each is damage a reader once had to survive.
def fuzz_cases(data: bytes) -> dict[str, bytes]:
    """Returns the regression inputs derived from the sample trace."""
    flipped = bytearray(data)
    flipped[len(HEADER) + FRAME_HEAD.size + 2] ^= 0xFF
    return {
        "fuzz/truncated-string-table.trace": _cut_inside_first(data, FrameKind.STRINGS),
        "fuzz/truncated-batch.trace": _cut_inside_first(data, FrameKind.BATCH),
        "fuzz/bad-crc.trace": bytes(flipped),
        "fuzz/unknown-version.trace": MAGIC + b"\x02\x00" + data[len(HEADER) :],
        "fuzz/no-trace-end.trace": sample_trace(end=False),
    }


def goldens() -> dict[str, bytes]:
    """Returns each golden file's name and bytes."""
    data = sample_trace()
    dump = "".join(format_event(ev) + "\n" for ev in Reader(io.BytesIO(data)))
    return {"sample.trace": data, "sample.dump": dump.encode(), **fuzz_cases(data)}


def main() -> None:
    """Writes the golden files."""
    for name, content in goldens().items():
        (HERE / name).write_bytes(content)
        print(f"wrote {HERE / name} ({len(content)} bytes)")


if __name__ == "__main__":
    main()
