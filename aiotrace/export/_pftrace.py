"""Perfetto's own trace format: TracePacket / TrackEvent protobuf, streamed.

The file is a ``Trace`` message: a run of ``packet`` fields (field 1), as
``perfetto_trace.proto`` defines them. Everything is on one packet sequence
(``trusted_packet_sequence_id`` 1), so that it can use the sequence's
incremental state:

- interning: event names, categories, debug annotation names and short
  annotation strings (reasons, stack frames) are sent once, in the
  ``interned_data`` of the packet that first uses them, and referred to by
  iid afterwards (every packet but the first carries
  ``SEQ_NEEDS_INCREMENTAL_STATE``);
- timestamps: ``trace_packet_defaults`` puts every packet on clock 64, a
  sequence-scoped incremental clock that a ``clock_snapshot`` ties to
  BOOTTIME, so each packet's timestamp is the nanoseconds since the one
  before (one to three bytes, not five);
- the packets are deflated into ``compressed_packets`` bundles of at most
  ``BUNDLE`` bytes before compression, as Perfetto's own tracing service
  writes them (trace processor wants each bundle under 512 KB).

Tracks are ``TrackDescriptor`` packets: a process track per process, a
thread track (ThreadDescriptor) per loop, thread and coroutine, a child
track per user task (tracks of one name are drawn merged), a counter track
per metric. When the interning tables grow past ``MAX_INTERNED`` entries
the incremental state is cleared and they start again, so memory stays
bounded.
"""

from __future__ import annotations

import zlib
from typing import IO, Any

from ._protowire import (
    SMALL_VARINTS,
    bytes_field,
    double_field,
    str_field,
    uint_field,
    varint,
)
from ._tracks import Args, Flow

SEQUENCE = 1
CLOCK = 64  # the first sequence-scoped clock id
BOOTTIME = 6
BUNDLE = 256 * 1024
MAX_INTERNED = 500_000
MAX_INTERNED_STRING = 256  # longer annotation strings are sent inline

# TracePacket
_PACKET = b"\x0a"  # Trace.packet = 1
_TS = b"\x40"  # timestamp = 8
_TS_ZERO = b"\x40\x00"
_ON_BOOTTIME = b"\xd0\x03\x06"  # timestamp_clock_id = 58: BOOTTIME
_HEAD = b"\x50\x01\x68\x02"  # trusted_packet_sequence_id = 1, sequence_flags = 2
_HEAD_EVENT = _HEAD + b"\x5a"  # and track_event = 11
_TRACK_EVENT = b"\x5a"  # track_event = 11
_INTERNED = b"\x62"  # interned_data = 12
_DESCRIPTOR = b"\xe2\x03"  # track_descriptor = 60
_COMPRESSED = b"\x92\x03"  # compressed_packets = 50
SEQ_INCREMENTAL_STATE_CLEARED = 1
SEQ_NEEDS_INCREMENTAL_STATE = 2

# TrackEvent
_BEGIN = b"\x48\x01"  # type = TYPE_SLICE_BEGIN
_END = b"\x48\x02"  # type = TYPE_SLICE_END
_INSTANT = b"\x48\x03"  # type = TYPE_INSTANT
_COUNTER = b"\x48\x04"  # type = TYPE_COUNTER
_UUID = b"\x58"  # track_uuid = 11
_BEGIN_ON = _BEGIN + _UUID
_END_ON = _END + _UUID
_INSTANT_ON = _INSTANT + _UUID
_NAME_IID = b"\x50"  # name_iid = 10
_CATEGORY_IID = b"\x18"  # category_iids = 3
_ANNOTATION = b"\x22"  # debug_annotations = 4
_FLOW_ID = b"\xf9\x02"  # flow_ids = 47 (fixed64)
_TERMINATING_FLOW_ID = b"\x81\x03"  # terminating_flow_ids = 48 (fixed64)
_COUNTER_VALUE = b"\xf0\x01"  # counter_value = 30
_DOUBLE_COUNTER_VALUE = 44

# DebugAnnotation
_A_NAME_IID = b"\x08"
_A_BOOL = b"\x10"
_A_INT = b"\x20"
_A_DOUBLE = 5
_A_STRING = 6
_A_STRING_IID = b"\x88\x01"
_A_DICT = 11
_A_ARRAY = 12

# InternedData
_I_CATEGORIES = 1
_I_NAMES = 2
_I_ANNOTATION_NAMES = 3
_I_STRINGS = 29

_MASK64 = (1 << 64) - 1
_V = SMALL_VARINTS
_NV = len(SMALL_VARINTS)
MAX_CACHED = 100_000  # encoded events kept for reuse, per cache


def _unit(metric: str) -> bytes:
    """A CounterDescriptor for a metric named ``/path:unit``."""
    unit = metric.rpartition(":")[2].split(" ")[0]
    if unit == "bytes":
        return uint_field(3, 3)  # UNIT_SIZE_BYTES
    if unit:
        return str_field(6, unit)  # unit_name
    return b""


class ProtoWriter:
    """ProtoWriter streams TracePackets to a binary file: the exporter's Sink
    for Perfetto's protobuf format.

    Track handles are track uuids. Times are nanoseconds, never going back.
    """

    def __init__(self, out: IO[bytes], *, compress: bool = True) -> None:
        self._out = out
        self._compress = compress
        self._buf = bytearray()
        self.count = 0  # TrackEvent and TrackDescriptor packets written
        self._last = 0
        self._uuids = 0
        self._processes: dict[int, int] = {}
        self._threads: dict[int, tuple[int, int, int | None]] = {}
        self._counters: dict[str, int] = {}
        self._names: dict[str, int] = {}
        self._categories: dict[str, int] = {}
        self._keys: dict[str, int] = {}
        self._strings: dict[str, int] = {}
        self._interned = bytearray()
        # Encoded event names, categories and args, to reuse.
        self._bodies: dict[Any, bytes] = {}
        self._encoded_args: dict[tuple[str, Any], bytes] = {}
        self._reset(first=True)
        # The root track (uuid 0): processes and threads in the order given.
        self._descriptor(0, uint_field(1, 0) + uint_field(19, 1) + uint_field(20, 1))

    # -- the packet sequence -----------------------------------------------

    def _reset(self, *, first: bool = False) -> None:
        """Clears the sequence's incremental state and sets it up again."""
        self._names.clear()
        self._categories.clear()
        self._keys.clear()
        self._strings.clear()
        self._bodies.clear()
        self._encoded_args.clear()
        self._interned.clear()
        self._entries = 0
        defaults = uint_field(58, CLOCK)  # TracePacketDefaults.timestamp_clock_id
        packet = (
            uint_field(10, SEQUENCE)
            + uint_field(13, SEQ_INCREMENTAL_STATE_CLEARED)
            + bytes_field(59, defaults)
        )
        if first:
            packet += uint_field(87, 1)  # first_packet_on_sequence
        self._raw(packet)
        # The incremental clock counts from here, at the time of the last packet.
        clocks = bytes_field(
            1, uint_field(1, BOOTTIME) + uint_field(2, self._last)
        ) + bytes_field(
            1, uint_field(1, CLOCK) + uint_field(2, self._last) + uint_field(3, 1)
        )
        snapshot = clocks + uint_field(2, BOOTTIME)  # primary_trace_clock
        self._raw(
            uint_field(10, SEQUENCE)
            + uint_field(13, SEQ_NEEDS_INCREMENTAL_STATE)
            + bytes_field(6, snapshot)
        )

    def _raw(self, packet: bytes) -> None:
        self._buf += _PACKET + varint(len(packet)) + packet
        if len(self._buf) >= BUNDLE:
            self._flush()

    def _packet(self, ts: int, field: bytes, payload: bytes) -> None:
        """Appends a packet at ``ts`` holding ``payload`` in ``field``."""
        self._emit(ts, self._tail(field, payload))

    def _tail(self, field: bytes, payload: bytes) -> bytes:
        """A packet's fields after its timestamp: the sequence, ``payload`` in
        ``field``, and the data interned for it."""
        n = len(payload)
        tail = _HEAD + field + (_V[n] if n < _NV else varint(n)) + payload
        if self._interned:
            tail += _INTERNED + varint(len(self._interned)) + self._interned
            self._interned = bytearray()
        return tail

    def _emit(self, ts: int, tail: bytes) -> None:
        """Appends a packet: the timestamp ``ts``, then ``tail``."""
        delta = ts - self._last
        if delta >= 0:
            self._last = ts
            d = _V[delta] if delta < _NV else varint(delta)
        else:  # earlier than the last packet: on BOOTTIME, not incremental
            d = varint(ts) + _ON_BOOTTIME
        n = 1 + len(d) + len(tail)
        buf = self._buf
        buf += _PACKET + (_V[n] if n < _NV else varint(n)) + _TS + d + tail
        self.count += 1
        if len(buf) >= BUNDLE:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        if self._compress:
            # Level 1: a tenth of level 6's time, a fifth more bytes.
            data = zlib.compress(self._buf, 1)
            packet = _COMPRESSED + varint(len(data)) + data
            self._out.write(_PACKET + varint(len(packet)) + packet)
        else:
            self._out.write(self._buf)
        self._buf = bytearray()

    def close(self, other_data: Args) -> None:
        """Writes ``other_data`` (what the trace says of itself) as the args
        of an instant named "aiotrace" on process 1's track, at the end, and
        what is buffered."""
        self.instant(self._processes[1], self._last, "aiotrace", "metadata", other_data)
        self._flush()

    # -- interning ------------------------------------------------------

    def _intern(self, table: dict[str, int], field: int, text: str) -> int:
        self._entries += 1
        iid = len(table) + 1
        table[text] = iid
        entry = uint_field(1, iid) + str_field(2, text)
        self._interned += bytes_field(field, entry)
        return iid

    def _check_interned(self) -> None:
        # Only between packets: a reset in the middle of one would orphan
        # the iids it already holds. One packet adds a bounded number.
        if self._entries > MAX_INTERNED:
            self._reset()

    # -- tracks -----------------------------------------------------------

    def _descriptor(self, ts: int, descriptor: bytes) -> None:
        self._packet(ts, _DESCRIPTOR, descriptor)

    def _new_uuid(self) -> int:
        self._uuids += 1
        return self._uuids

    def process(self, pid: int, name: str, sort_index: int) -> None:
        """Declares a process track."""
        uuid = self._processes[pid] = self._new_uuid()
        proc = uint_field(1, pid) + str_field(6, name)
        self._descriptor(
            self._last,
            uint_field(1, uuid) + bytes_field(3, proc) + uint_field(12, sort_index),
        )

    def thread_track(self, pid: int, tid: int, sort_index: int | None) -> int:
        """Declares a thread track; returns its uuid."""
        uuid = self._new_uuid()
        self._threads[uuid] = (pid, tid, sort_index)
        self._thread_descriptor(uuid, None)
        return uuid

    def _thread_descriptor(self, uuid: int, name: str | None) -> None:
        pid, tid, sort_index = self._threads[uuid]
        thread = uint_field(1, pid) + uint_field(2, tid)
        if name is not None:
            thread += str_field(5, name)
        descriptor = uint_field(1, uuid) + bytes_field(4, thread)
        if sort_index is not None:
            descriptor += uint_field(12, sort_index)
        self._descriptor(self._last, descriptor)

    def async_track(self, pid: int, async_id: int, name: str) -> int:
        """Declares a track of its own, in process ``pid``, named ``name``:
        tracks of one name are drawn merged, as async slices are."""
        uuid = self._new_uuid()
        self._descriptor(
            self._last,
            uint_field(1, uuid)
            + uint_field(5, self._processes[pid])
            + str_field(2, name),
        )
        return uuid

    def name_thread(self, track: int, name: str) -> None:
        """Names a thread track, by sending its descriptor again (once: the
        track is forgotten then)."""
        self._thread_descriptor(track, name)
        del self._threads[track]

    # -- events -----------------------------------------------------------

    def _body(self, name: str, cat: str, args: Args | None) -> bytes:
        """A TrackEvent's name, category and args, encoded (interning what is
        new); the name and category are kept encoded, for reuse."""
        key = (name, cat)
        body = self._bodies.get(key)
        if body is None:
            iid = self._names.get(name)
            if iid is None:
                iid = self._intern(self._names, _I_NAMES, name)
            cid = self._categories.get(cat)
            if cid is None:
                cid = self._intern(self._categories, _I_CATEGORIES, cat)
            body = _NAME_IID + varint(iid) + _CATEGORY_IID + varint(cid)
            if len(self._bodies) >= MAX_CACHED:
                self._bodies.clear()
            self._bodies[key] = body
        if args:
            return body + self._annotations(args)
        return body

    def begin(
        self,
        track: int,
        ts: int,
        name: str,
        cat: str,
        args: Args | None,
        flow: Flow | None,
    ) -> None:
        """Writes a TYPE_SLICE_BEGIN; a flow's source gets an instant, named
        after the flow, that starts the arrow."""
        if self._entries > MAX_INTERNED:
            self._reset()
        if flow is not None:
            self._flow_source(ts, flow)
        event = _BEGIN_ON + (_V[track] if track < _NV else varint(track))
        event += self._body(name, cat, args)
        if flow is not None:
            event += _TERMINATING_FLOW_ID + (flow.id & _MASK64).to_bytes(8, "little")
        self._emit(ts, self._tail(_TRACK_EVENT, event))

    def _flow_source(self, ts: int, flow: Flow) -> None:
        event = _INSTANT_ON + varint(flow.src) + self._body(flow.name, "flow", None)
        event += _FLOW_ID + (flow.id & _MASK64).to_bytes(8, "little")
        self._emit(ts, self._tail(_TRACK_EVENT, event))

    def end(self, track: int, ts: int, name: str, cat: str, args: Args | None) -> None:
        """Writes a TYPE_SLICE_END (the slice's name and category are its
        begin's)."""
        event = _END_ON + (_V[track] if track < _NV else varint(track))
        if args:
            if self._entries > MAX_INTERNED:
                self._reset()
            event += self._annotations(args)
            self._emit(ts, self._tail(_TRACK_EVENT, event))
            return
        self._emit(ts, _HEAD + _TRACK_EVENT + _V[len(event)] + event)

    def switch(
        self,
        track: int,
        ts: int,
        old_name: str,
        old_cat: str,
        name: str,
        cat: str,
        args: Args | None,
        flow: Flow | None,
    ) -> None:
        """Writes a TYPE_SLICE_END and a TYPE_SLICE_BEGIN at the same time:
        the second packet's timestamp is a zero delta."""
        if flow is not None or self._entries > MAX_INTERNED:
            self.end(track, ts, old_name, old_cat, None)
            self.begin(track, ts, name, cat, args, flow)
            return
        u = _V[track] if track < _NV else varint(track)
        body = self._body(name, cat, args)
        interned = self._interned
        delta = ts - self._last
        lu = len(u)
        n = 3 + lu + len(body)  # the begin TrackEvent's length
        if delta < 0 or interned or n >= _NV:  # rare: the general way
            self.end(track, ts, old_name, old_cat, None)
            self._emit(ts, self._tail(_TRACK_EVENT, _BEGIN_ON + u + body))
            return
        self._last = ts
        d = _V[delta] if delta < _NV else varint(delta)
        vn = _V[n]
        self._buf += b"".join(
            (
                _PACKET,
                _V[10 + len(d) + lu],  # the end packet's length
                _TS,
                d,
                _HEAD_EVENT,
                _V[3 + lu],
                _END_ON,
                u,
                _PACKET,
                _V[7 + len(vn) + n],  # the begin packet's length
                _TS_ZERO,
                _HEAD_EVENT,
                vn,
                _BEGIN_ON,
                u,
                body,
            )
        )
        self.count += 2
        if len(self._buf) >= BUNDLE:
            self._flush()

    def instant(self, track: int, ts: int, name: str, cat: str, args: Args) -> None:
        """Writes a TYPE_INSTANT."""
        self._check_interned()
        event = _INSTANT_ON + varint(track) + self._body(name, cat, args)
        self._event(ts, event)

    def counter(self, ts: int, name: str, value: float) -> None:
        """Writes a TYPE_COUNTER on the counter track ``name`` of process 1."""
        uuid = self._counters.get(name)
        if uuid is None:
            uuid = self._counters[name] = self._new_uuid()
            self._descriptor(
                ts,
                uint_field(1, uuid)
                + uint_field(5, self._processes[1])
                + str_field(2, name)
                + bytes_field(8, _unit(name)),
            )
        event = _COUNTER + _UUID + varint(uuid)
        if isinstance(value, int) and -(1 << 63) <= value < 1 << 63:
            event += _COUNTER_VALUE + varint(value & _MASK64)
        else:
            event += double_field(_DOUBLE_COUNTER_VALUE, float(value))
        self._event(ts, event)

    def _event(self, ts: int, event: bytes) -> None:
        self._packet(ts, _TRACK_EVENT, event)

    # -- debug annotations ------------------------------------------------

    def _annotations(self, args: Args) -> bytes:
        out = b""
        for item in args.items():
            k, v = item
            t = type(v)
            if t is int and 0 <= v < _NV:  # ids: encoded at once
                iid = self._keys.get(k)
                if iid is None:
                    iid = self._intern(self._keys, _I_ANNOTATION_NAMES, k)
                a = _A_NAME_IID + varint(iid) + _A_INT + _V[v]
                out += _ANNOTATION + _V[len(a)] + a
            elif (t is int or t is str) and k != "message":
                # (name, value) repeats (reasons, frames, threads): kept encoded
                cached = self._encoded_args.get(item)
                if cached is None:
                    a = self._annotation(k, v)
                    cached = _ANNOTATION + varint(len(a)) + a
                    if len(self._encoded_args) >= MAX_CACHED:
                        self._encoded_args.clear()
                    self._encoded_args[item] = cached
                out += cached
            else:
                a = self._annotation(k, v)
                out += _ANNOTATION + varint(len(a)) + a
        return out

    def _annotation(self, k: str | None, v: Any) -> bytes:
        """A DebugAnnotation: name ``k`` (None in arrays) and value ``v``."""
        if k is None:
            out = b""
        else:
            iid = self._keys.get(k)
            if iid is None:
                iid = self._intern(self._keys, _I_ANNOTATION_NAMES, k)
            out = _A_NAME_IID + varint(iid)
        if v is True or v is False:
            return out + _A_BOOL + (b"\x01" if v else b"\x00")
        if isinstance(v, int):
            return out + _A_INT + varint(v & _MASK64)
        if isinstance(v, float):
            return out + double_field(_A_DOUBLE, v)
        if isinstance(v, str):
            if len(v) > MAX_INTERNED_STRING or k == "message":
                return out + str_field(_A_STRING, v)
            sid = self._strings.get(v)
            if sid is None:
                sid = self._intern_string(v)
            return out + _A_STRING_IID + varint(sid)
        if isinstance(v, dict):
            for dk, dv in v.items():
                out += bytes_field(_A_DICT, self._annotation(dk, dv))
            return out
        if isinstance(v, list | tuple):
            for item in v:
                out += bytes_field(_A_ARRAY, self._annotation(None, item))
            return out
        return out + str_field(_A_STRING, str(v))

    def _intern_string(self, text: str) -> int:
        self._entries += 1
        iid = len(self._strings) + 1
        self._strings[text] = iid
        entry = uint_field(1, iid) + bytes_field(2, text.encode("utf-8", "replace"))
        self._interned += bytes_field(_I_STRINGS, entry)
        return iid
