"""Frame parsing: bytes in, checked frames out, fed incrementally."""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import msgpack

from .._format.framing import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_FRAME_PAYLOAD,
    SUPPORTED_VERSIONS,
    FrameKind,
    checksum,
)
from ._model import TraceError


class Frame(NamedTuple):
    """Frame is one checked frame: its kind, decoded payload and byte offset."""

    kind: FrameKind
    payload: Any
    offset: int


class FrameParser:
    """FrameParser splits a byte stream into checked frames.

    Feed it bytes as they arrive; it returns every frame completed so far.
    Memory holds at most one frame's bytes plus what was fed beyond it.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # byte offset of _buf[0] in the whole trace
        self._header = False
        self.version: int | None = None
        # A fault found after some whole frames of the same feed: raised by
        # the next feed (or check), once those frames have been handed out.
        self._error: TraceError | None = None
        self._pos = 0  # the end of the last whole frame in _buf, while parsing

    @property
    def offset(self) -> int:
        """The byte offset of the first byte not yet parsed."""
        return self._base

    def feed(self, data: bytes) -> list[Frame]:
        """Adds ``data`` and returns the frames it completes.

        The frames before a fault are returned first, and the fault is
        raised by the next call (or by ``check``): so how much of a damaged
        trace is read does not depend on how the bytes were split.

        Raises:
            TraceError: bad magic, unsupported version, a bad frame head, a
                checksum mismatch or an undecodable payload.
        """
        self.check()
        frames: list[Frame] = []
        try:
            self._parse(data, frames)
        except TraceError as exc:
            if not frames:
                raise
            self._error = exc
        return frames

    def check(self) -> None:
        """Raises the fault found after the frames last returned, if any."""
        if self._error is not None:
            raise self._error

    def _parse(self, data: bytes, frames: list[Frame]) -> None:
        buf = self._buf
        buf += data
        pos = 0
        if not self._header:
            if len(buf) < HEADER_SIZE:
                self._check_magic_prefix()
                return
            self._check_header()
            pos = HEADER_SIZE
        n = len(buf)
        try:
            self._frames(buf, pos, n, frames)
        finally:
            pos = self._pos
            if pos:
                del buf[:pos]
                self._base += pos

    def _frames(self, buf: bytearray, pos: int, n: int, frames: list[Frame]) -> None:
        self._pos = pos
        while n - pos >= FRAME_HEAD_SIZE:
            kind, length, crc = FRAME_HEAD.unpack_from(buf, pos)
            offset = self._base + pos
            if kind not in _KINDS:
                raise TraceError(
                    f"expected a frame kind (1-{max(_KINDS)}), found {kind}", offset
                )
            if length > MAX_FRAME_PAYLOAD:
                raise TraceError(
                    f"{FrameKind(kind).name} frame claims {length} bytes, more than "
                    f"the limit of {MAX_FRAME_PAYLOAD}",
                    offset,
                )
            end = pos + FRAME_HEAD_SIZE + length
            if end > n:
                break
            payload = bytes(buf[pos + FRAME_HEAD_SIZE : end])
            if checksum(kind, payload) != crc:
                raise TraceError(
                    f"{FrameKind(kind).name} frame of {length} bytes fails its "
                    "CRC-32 check (the trace is corrupt)",
                    offset,
                )
            frames.append(
                Frame(FrameKind(kind), _unpack(kind, payload, offset), offset)
            )
            pos = self._pos = end

    def pending(self) -> int:
        """Returns how many fed bytes are not yet part of a frame."""
        return len(self._buf)

    def _check_magic_prefix(self) -> None:
        head = bytes(self._buf[: len(MAGIC)])
        if not MAGIC.startswith(head):
            raise TraceError(
                f"expected the magic {MAGIC!r} of an aiotrace trace, found {head!r}",
                0,
            )

    def _check_header(self) -> None:
        self._check_magic_prefix()
        (version,) = struct.unpack_from("<H", self._buf, len(MAGIC))
        if version not in SUPPORTED_VERSIONS:
            raise TraceError(
                f"trace format version {version} is not supported; this reader "
                f"reads version {', '.join(map(str, SUPPORTED_VERSIONS))} "
                "(a newer aiotrace may read it)",
                len(MAGIC),
            )
        self.version = version
        self._header = True


_KINDS = frozenset(int(k) for k in FrameKind)


def _unpack(kind: int, payload: bytes, offset: int) -> Any:
    try:
        value = msgpack.unpackb(payload, use_list=False, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types on bad bytes
        raise TraceError(
            f"{FrameKind(kind).name} frame payload is not valid msgpack: "
            f"{type(exc).__name__}: {exc}",
            offset,
        ) from None
    if type(value) is not tuple:
        raise TraceError(
            f"{FrameKind(kind).name} frame payload must be an array, "
            f"found {type(value).__name__}",
            offset,
        )
    return value
