"""Decodes a Perfetto protobuf export with the classes generated from
Perfetto's own ``perfetto_trace.proto`` (the ``perfetto`` package on PyPI
ships them), follows the packet sequence's rules as trace processor does,
and turns the track events back into the Chrome trace-event form, so that
a protobuf export can be compared with the JSON export event for event.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The classes protoc generated from Perfetto's perfetto_trace.proto, as the
# perfetto package on PyPI ships them (in the test extra).
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

MAX_BUNDLE = 512 * 1024
CLOCK = 64
BOOTTIME = 6
CLEARED = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
NEEDS = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
TE = pb.TrackEvent


class DecodeError(AssertionError):
    """The file breaks a rule of the format or of the packet sequence."""


@dataclass
class Decoded:
    """What a protobuf export holds, in trace-event JSON's terms."""

    events: list[dict[str, Any]] = field(default_factory=list)
    other_data: dict[str, Any] = field(default_factory=dict)
    packets: int = 0
    bundles: int = 0
    track_events: int = 0
    descriptor_packets: int = 0
    descriptors: dict[int, Any] = field(default_factory=dict)
    interned: int = 0  # interned entries sent


def packets(data: bytes) -> tuple[list[Any], int]:
    """The file's packets, with compressed bundles inflated, and the bundles."""
    outer = pb.Trace.FromString(data)
    out: list[Any] = []
    bundles = 0
    for p in outer.packet:
        if p.HasField("compressed_packets"):
            bundles += 1
            if p.ByteSize() >= MAX_BUNDLE:
                raise DecodeError(f"a bundle of {p.ByteSize()} bytes, over 512 KB")
            out.extend(
                pb.Trace.FromString(zlib.decompress(p.compressed_packets)).packet
            )
        else:
            out.append(p)
    return out, bundles


def _value(a: Any, strings: dict[int, str]) -> Any:
    which = [f.name for f, _ in a.ListFields() if f.name not in ("name_iid", "name")]
    if not which:
        return []  # an empty list (the exporter's args hold no empty dicts)
    kind = which[0]
    if kind == "dict_entries":
        return {_name(e, None): _value(e, strings) for e in a.dict_entries}
    if kind == "array_values":
        return [_value(e, strings) for e in a.array_values]
    if kind == "string_value_iid":
        if a.string_value_iid not in strings:
            raise DecodeError(f"string iid {a.string_value_iid} used before interned")
        return strings[a.string_value_iid]
    if kind in ("int_value", "bool_value", "double_value", "string_value"):
        return getattr(a, kind)
    raise DecodeError(f"unexpected annotation value {kind}")


_names_of_keys: dict[int, str] = {}


def _name(a: Any, keys: dict[int, str] | None) -> str:
    if a.HasField("name"):
        return str(a.name)
    table = _names_of_keys if keys is None else keys
    if a.name_iid not in table:
        raise DecodeError(f"annotation name iid {a.name_iid} used before interned")
    return table[a.name_iid]


def decode(path: Path) -> Decoded:
    """Decodes the file and checks it; raises DecodeError at a broken rule."""
    raw, bundles = packets(path.read_bytes())
    d = Decoded(packets=len(raw), bundles=bundles)
    names: dict[int, str] = {}
    cats: dict[int, str] = {}
    keys: dict[int, str] = {}
    strings: dict[int, str] = {}
    valid = False
    clock_last: int | None = None
    stacks: dict[int, list[tuple[str, str]]] = {}
    flows: dict[int, dict[str, Any]] = {}
    ended_flows: set[int] = set()
    global _names_of_keys
    _names_of_keys = keys
    for i, p in enumerate(raw):
        if p.trusted_packet_sequence_id != 1:
            raise DecodeError(f"packet {i}: not on sequence 1")
        if i == 0 and not p.first_packet_on_sequence:
            raise DecodeError("the first packet is not marked first on the sequence")
        if p.sequence_flags & CLEARED:
            valid = True
            names.clear()
            cats.clear()
            keys.clear()
            strings.clear()
            if p.trace_packet_defaults.timestamp_clock_id != CLOCK:
                raise DecodeError(f"packet {i}: defaults not on clock {CLOCK}")
            clock_last = None
            continue
        if not (valid and p.sequence_flags & NEEDS):
            raise DecodeError(f"packet {i}: lacks SEQ_NEEDS_INCREMENTAL_STATE")
        if p.HasField("clock_snapshot"):
            clocks = {c.clock_id: c for c in p.clock_snapshot.clocks}
            if clocks[CLOCK].timestamp != clocks[BOOTTIME].timestamp:
                raise DecodeError("the incremental clock is not BOOTTIME's")
            if not clocks[CLOCK].is_incremental:
                raise DecodeError("clock 64 is not incremental")
            clock_last = clocks[CLOCK].timestamp
            continue
        for e in p.interned_data.event_names:
            names[e.iid] = e.name
        for e in p.interned_data.event_categories:
            cats[e.iid] = e.name
        for e in p.interned_data.debug_annotation_names:
            keys[e.iid] = e.name
        for e in p.interned_data.debug_annotation_string_values:
            strings[e.iid] = e.str.decode("utf-8")
        d.interned += (
            len(p.interned_data.event_names)
            + len(p.interned_data.event_categories)
            + len(p.interned_data.debug_annotation_names)
            + len(p.interned_data.debug_annotation_string_values)
        )
        if p.timestamp_clock_id == BOOTTIME:
            ts = p.timestamp
        elif p.HasField("timestamp_clock_id"):
            raise DecodeError(f"packet {i}: clock {p.timestamp_clock_id}")
        else:
            if clock_last is None:
                raise DecodeError(f"packet {i}: a timestamp before any clock snapshot")
            clock_last += p.timestamp
            ts = clock_last
        if p.HasField("track_descriptor"):
            d.descriptor_packets += 1
            _descriptor(d, p.track_descriptor)
            continue
        if not p.HasField("track_event"):
            raise DecodeError(f"packet {i}: unexpected {p}")
        d.track_events += 1
        te = p.track_event
        uuid = te.track_uuid
        if uuid not in d.descriptors:
            raise DecodeError(f"packet {i}: track {uuid} has no descriptor yet")
        desc = d.descriptors[uuid]
        args = {_name(a, keys): _value(a, strings) for a in te.debug_annotations}
        name = cat = ""
        if te.type not in (TE.TYPE_SLICE_END, TE.TYPE_COUNTER):
            if te.name_iid not in names or te.category_iids[0] not in cats:
                raise DecodeError(f"packet {i}: name or category used before interned")
            name = names[te.name_iid]
            cat = cats[te.category_iids[0]]
        ev: dict[str, Any] = {"ts": ts / 1000}
        where = _where(desc)
        if te.type == TE.TYPE_SLICE_BEGIN:
            stacks.setdefault(uuid, []).append((name, cat))
            ev.update(ph="b" if "async" in where else "B", name=name, cat=cat)
        elif te.type == TE.TYPE_SLICE_END:
            if not stacks.get(uuid):
                raise DecodeError(f"packet {i}: an end with no slice open")
            name, cat = stacks[uuid].pop()
            ev.update(ph="e" if "async" in where else "E", name=name, cat=cat)
        elif te.type == TE.TYPE_INSTANT:
            if cat == "metadata" and name == "aiotrace":
                d.other_data = args
                continue
            if te.flow_ids:
                if cat != "flow" or not stacks.get(uuid):
                    raise DecodeError(f"packet {i}: a flow not from an open slice")
                flows[te.flow_ids[0]] = {
                    "name": name,
                    "pid": where["pid"],
                    "tid": where["tid"],
                }
                continue
            ev.update(ph="i", s="t", name=name, cat=cat)
        elif te.type == TE.TYPE_COUNTER:
            value = (
                te.double_counter_value
                if te.HasField("double_counter_value")
                else te.counter_value
            )
            ev.update(ph="C", name=desc.name, pid=1, tid=1, args={"value": value})
            d.events.append(ev)
            continue
        else:
            raise DecodeError(f"packet {i}: event type {te.type}")
        if "async" in where:
            ev.update(pid=where["pid"], tid=where["pid"], async_track=uuid)
        else:
            ev.update(pid=where["pid"], tid=where["tid"])
        if args:
            ev["args"] = args
        d.events.append(ev)
        for fid in te.terminating_flow_ids:
            if fid not in flows or fid in ended_flows:
                raise DecodeError(f"packet {i}: flow {fid} ends but never began")
            ended_flows.add(fid)
            src = flows[fid]
            common = {"name": src["name"], "cat": "flow", "id": fid, "ts": ts / 1000}
            d.events.append({**common, "ph": "s", "pid": src["pid"], "tid": src["tid"]})
            d.events.append(
                {
                    **common,
                    "ph": "f",
                    "bp": "e",
                    "pid": where["pid"],
                    "tid": where["tid"],
                }
            )
    if set(flows) != ended_flows:
        raise DecodeError(f"flows begun and never ended: {set(flows) - ended_flows}")
    return d


def _where(desc: Any) -> dict[str, Any]:
    if desc.HasField("thread"):
        return {"pid": desc.thread.pid, "tid": desc.thread.tid}
    if desc.HasField("process"):
        return {"pid": desc.process.pid, "tid": desc.process.pid}
    return {"async": True, "pid": desc.parent_pid}


def _descriptor(d: Decoded, desc: Any) -> None:
    """Records a track descriptor; writes the JSON metadata it stands for."""
    old = d.descriptors.get(desc.uuid)
    if desc.uuid == 0:
        return
    if desc.HasField("process"):
        pid = desc.process.pid
        d.events.append(
            {
                "ph": "M",
                "name": "process_name",
                "pid": pid,
                "tid": pid,
                "args": {"name": desc.process.process_name},
            }
        )
        d.events.append(
            {
                "ph": "M",
                "name": "process_sort_index",
                "pid": pid,
                "tid": pid,
                "args": {"sort_index": desc.sibling_order_rank},
            }
        )
        d.descriptors[desc.uuid] = desc
        return
    if desc.HasField("thread"):
        t = desc.thread
        if old is None:
            if desc.HasField("sibling_order_rank"):
                d.events.append(
                    {
                        "ph": "M",
                        "name": "thread_sort_index",
                        "pid": t.pid,
                        "tid": t.tid,
                        "args": {"sort_index": desc.sibling_order_rank},
                    }
                )
            d.descriptors[desc.uuid] = desc
        elif (old.thread.pid, old.thread.tid) != (t.pid, t.tid):
            raise DecodeError(f"track {desc.uuid} changed its thread")
        if t.thread_name:
            d.events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": t.pid,
                    "tid": t.tid,
                    "args": {"name": t.thread_name},
                }
            )
        return
    if old is not None:
        raise DecodeError(f"track {desc.uuid} described twice")
    parent = next(
        (p for p in d.descriptors.values() if p.uuid == desc.parent_uuid), None
    )
    if parent is None or not parent.HasField("process"):
        raise DecodeError(
            f"track {desc.uuid}: parent {desc.parent_uuid} is not a process"
        )
    copy = pb.TrackDescriptor()
    copy.CopyFrom(desc)
    d.descriptors[desc.uuid] = _Async(copy, parent.process.pid)


class _Async:
    """An async track's descriptor, with its process's pid."""

    def __init__(self, desc: Any, pid: int) -> None:
        self.desc = desc
        self.parent_pid = pid
        self.name = desc.name
        self.uuid = desc.uuid

    def HasField(self, name: str) -> bool:
        return bool(self.desc.HasField(name))


def from_json(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON export's events in the same terms as ``decode``'s: async
    tracks named by their id in order of appearance."""
    return list(doc["traceEvents"])


def same_events(
    proto: list[dict[str, Any]], json_events: list[dict[str, Any]]
) -> list[str]:
    """Lists the differences between the decoded protobuf and the JSON,
    event for event; [] if none. Async tracks are matched one to one: the
    n-th async track of one is the n-th of the other."""
    problems: list[str] = []
    if len(proto) != len(json_events):
        problems.append(f"{len(proto)} events decoded, {len(json_events)} in the JSON")
    pairs: dict[Any, Any] = {}
    back: dict[Any, Any] = {}
    for i, (pe, je) in enumerate(zip(proto, json_events, strict=False)):
        p = dict(pe)
        j = dict(je)
        if "async_track" in p:
            a, b = p.pop("async_track"), j.get("id2", {}).get("local")
            j.pop("id2", None)
            if pairs.setdefault(a, b) != b or back.setdefault(b, a) != a:
                problems.append(
                    f"event {i}: async track {a} is JSON's {b}, not {pairs[a]}"
                )
        if p != j:
            problems.append(f"event {i}: decoded {p}\n   JSON {j}")
        if len(problems) > 10:
            break
    return problems
