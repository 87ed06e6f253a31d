"""Protocol buffers' wire format, the little of it the Perfetto writer needs.

A message is a run of fields; each field is a key (``number << 3 | wire
type``, as a varint) and a value: a varint (type 0), eight little-endian
bytes (type 1), or a varint length and that many bytes (type 2). Varints
hold 7 bits a byte, least significant first, the top bit set on every byte
but the last; negative int64 values are their 64-bit two's complement.
"""

from __future__ import annotations

import struct

VARINT = 0
FIXED64 = 1
LENGTH = 2

_MASK64 = (1 << 64) - 1
_SMALL = [bytes([n]) for n in range(128)]
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack


def varint(n: int) -> bytes:
    """Encodes a non-negative int (or a negative int64) as a varint."""
    if 0 <= n < 128:
        return _SMALL[n]
    if 0 <= n < 1 << 21:
        if n < 1 << 14:
            return bytes((n & 127 | 128, n >> 7))
        return bytes((n & 127 | 128, n >> 7 & 127 | 128, n >> 14))
    if n < 0:
        n &= _MASK64
    out = bytearray()
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    """A field's key: its number and wire type."""
    return varint(number << 3 | wire_type)


def uint_field(number: int, n: int) -> bytes:
    """A varint field (uint32/64, int32/64, bool, enum)."""
    return varint(number << 3) + varint(n)


def bytes_field(number: int, data: bytes) -> bytes:
    """A length-delimited field: bytes, a string's UTF-8, or a message."""
    return varint(number << 3 | LENGTH) + varint(len(data)) + data


def str_field(number: int, text: str) -> bytes:
    """A string field."""
    return bytes_field(number, text.encode("utf-8", "replace"))


def double_field(number: int, x: float) -> bytes:
    """A double field (eight bytes, little-endian IEEE 754)."""
    return varint(number << 3 | FIXED64) + _pack_double(x)


def fixed64_field(number: int, n: int) -> bytes:
    """A fixed64 field."""
    return varint(number << 3 | FIXED64) + _pack_fixed64(n & _MASK64)


SMALL_VARINTS = [varint(n) for n in range(1 << 14)]
"""The varints of 0 to 16383 (one and two bytes), by value: a list index is
quicker than encoding."""
