"""The file header and frame layout of trace format v1.

A trace is ``HEADER`` followed by frames. A frame is a fixed 9-byte head,
``kind:u8 length:u32le crc32:u32le``, and ``length`` bytes of msgpack
payload. The CRC-32 covers the kind byte and the payload, so a flipped bit
anywhere is caught before the payload is decoded. See docs/format.md.
"""

from __future__ import annotations

import enum
import struct
import zlib

MAGIC = b"AIOTRACE"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
HEADER = MAGIC + struct.pack("<H", VERSION)
HEADER_SIZE = len(HEADER)

FRAME_HEAD = struct.Struct("<BII")
FRAME_HEAD_SIZE = FRAME_HEAD.size

# Writers keep frames far smaller; a larger length means a corrupt head, and
# refusing it keeps a bad length from making the reader allocate gigabytes.
MAX_FRAME_PAYLOAD = 64 * 1024 * 1024


class FrameKind(enum.IntEnum):
    """The kinds of frame; each payload is one msgpack value."""

    GENERATION = 1
    """Opens a generation: ``[generation, time, wall_time_ns, lost_events]``."""
    STRINGS = 2
    """Appends to the string table: ``[first_id, str, ...]``."""
    STACKS = 3
    """Appends to the stack table: ``[first_id, [func, file, line, ...], ...]``."""
    BATCH = 4
    """Events of one thread: ``[thread, base_time, [type, dt, *args], ...]``."""
    GENERATION_END = 5
    """Closes a generation: ``[generation, batches, events]``."""
    TRACE_END = 6
    """The trace ended cleanly: ``[lost_events]``."""


def frame(kind: FrameKind, payload: bytes) -> bytes:
    """Returns one encoded frame holding ``payload``."""
    crc = zlib.crc32(payload, zlib.crc32(bytes((kind,))))
    return FRAME_HEAD.pack(kind, len(payload), crc) + payload


def checksum(kind: int, payload: bytes | memoryview) -> int:
    """Returns the CRC-32 a frame of this kind and payload must carry."""
    return zlib.crc32(payload, zlib.crc32(bytes((kind,))))
