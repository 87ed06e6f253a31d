"""Perfetto protobuf export: decoded with Perfetto's own generated classes,
it follows the packet sequence's rules and holds the JSON export's events,
event for event."""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from export_programs import counts
from hypothesis import given
from hypothesis import strategies as st
from pftrace_decode import DecodeError, decode, packets, pb, same_events

from aiotrace import reader
from aiotrace._cli import main as cli
from aiotrace.export import _perfetto, _pftrace, write_perfetto
from aiotrace.export._protowire import varint


def both(
    trace: Path | list[reader.Event], tmp_path: Path, **kw: Any
) -> tuple[Any, dict[str, Any]]:
    """Exports ``trace`` both ways; returns (decoded protobuf, JSON doc)."""
    src = trace if isinstance(trace, Path) else iter(trace)
    proto = write_perfetto(src, tmp_path / "out.pftrace", **kw)
    assert proto.format == "proto"
    src = trace if isinstance(trace, Path) else iter(trace)
    js = write_perfetto(src, tmp_path / "out.json", **kw)
    assert js.format == "json"
    doc = json.loads((tmp_path / "out.json").read_text("utf-8"))
    decoded = decode(tmp_path / "out.pftrace")
    assert proto.events == js.events
    assert proto.written == decoded.track_events + decoded.descriptor_packets
    return decoded, doc


def test_rich_trace_matches_the_json(rich_trace: Path, tmp_path: Path) -> None:
    """The protobuf export of a real program (two loops, threads, queues,
    locks, create_task chains, tasks, regions, logs, metrics, a stall) holds
    the JSON export's events exactly: the same slices on the same tracks at
    the same nanoseconds, with the same names, categories and args, the
    same instants, counters, flows and track names and order."""
    decoded, doc = both(rich_trace, tmp_path)
    assert same_events(decoded.events, doc["traceEvents"]) == []
    assert decoded.other_data == doc["otherData"]
    assert len(doc["traceEvents"]) > 500
    kinds = Counter(ev["ph"] for ev in decoded.events)
    assert {"B", "E", "b", "e", "i", "C", "s", "f", "M"} <= set(kinds)


def test_without_coroutine_tracks_matches_the_json(
    rich_trace: Path, tmp_path: Path
) -> None:
    """coroutine_tracks=False: the protobuf still equals the JSON, and holds
    no coroutine track and no flow."""
    decoded, doc = both(rich_trace, tmp_path, coroutine_tracks=False)
    assert same_events(decoded.events, doc["traceEvents"]) == []
    assert not any(ev["ph"] in "sf" for ev in decoded.events)
    assert not any(ev["pid"] == 2 for ev in decoded.events if ev["ph"] != "M")


def test_interning_sends_each_string_once(rich_trace: Path, tmp_path: Path) -> None:
    """Names, categories, annotation names and short annotation strings go
    in interned_data once each (no reset happens in a small trace), and
    every track event after the first packets refers to them by iid: no
    TrackEvent carries its name or category as a string."""
    write_perfetto(rich_trace, tmp_path / "t.pftrace")
    raw, bundles = packets((tmp_path / "t.pftrace").read_bytes())
    assert bundles >= 1
    seen: Counter[tuple[str, str]] = Counter()
    for p in raw:
        for field in (
            "event_names",
            "event_categories",
            "debug_annotation_names",
        ):
            for e in getattr(p.interned_data, field):
                seen[(field, e.name)] += 1
        for e in p.interned_data.debug_annotation_string_values:
            seen[("strings", e.str.decode())] += 1
        if p.HasField("track_event"):
            te = p.track_event
            assert not te.HasField("name") and not te.categories
            for a in te.debug_annotations:
                assert a.HasField("name_iid") and not a.HasField("name")
    assert seen and max(seen.values()) == 1
    assert ("event_categories", "step") in seen
    assert ("debug_annotation_names", "coroutine") in seen


def test_sequence_setup(rich_trace: Path, tmp_path: Path) -> None:
    """The first packet clears the sequence's incremental state and puts
    every later packet on clock 64, which the second packet ties to
    BOOTTIME as an incremental clock; track descriptors name the two
    processes, the loops and the coroutines, with an explicit order."""
    write_perfetto(rich_trace, tmp_path / "t.pftrace")
    raw, _ = packets((tmp_path / "t.pftrace").read_bytes())
    first, second = raw[0], raw[1]
    assert first.first_packet_on_sequence
    assert first.sequence_flags == pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    assert first.trace_packet_defaults.timestamp_clock_id == 64
    snapshot = second.clock_snapshot
    assert snapshot.primary_trace_clock == pb.BUILTIN_CLOCK_BOOTTIME
    assert [(c.clock_id, c.is_incremental) for c in snapshot.clocks] == [
        (6, False),
        (64, True),
    ]
    descriptors = [p.track_descriptor for p in raw if p.HasField("track_descriptor")]
    root = descriptors[0]
    assert root.uuid == 0
    assert root.thread_ordering == pb.TrackDescriptor.THREAD_ORDERING_EXPLICIT
    processes = {
        d.process.pid: d.process.process_name
        for d in descriptors
        if d.HasField("process")
    }
    assert processes == {1: "aiotrace", 2: "coroutines"}
    threads = {
        d.thread.thread_name
        for d in descriptors
        if d.HasField("thread") and d.thread.thread_name
    }
    assert sum(n.startswith("loop ") for n in threads) == 2
    assert sum(n.endswith(" _worker") for n in threads) == 8
    counters = [d for d in descriptors if d.HasField("counter")]
    assert counters
    rss = [d for d in counters if d.name.startswith("/memory/")]
    assert all(d.counter.unit == pb.CounterDescriptor.UNIT_SIZE_BYTES for d in rss)


def test_tasks_are_tracks_of_their_type(rich_trace: Path, tmp_path: Path) -> None:
    """Each user task is a track of its own under process 1, named by its
    type (so Perfetto draws the tasks of a type merged, in lanes), with its
    regions nested in its slice."""
    decoded, _ = both(rich_trace, tmp_path)
    want = counts(rich_trace)
    tasks = [ev for ev in decoded.events if ev["ph"] == "b" and ev["cat"] == "task"]
    assert len(tasks) == want["tasks"] == 9
    names = Counter(decoded.descriptors[ev["async_track"]].name for ev in tasks)
    assert names == Counter(ev["name"] for ev in tasks) == {"job": 8, "stall": 1}
    regions = [ev for ev in decoded.events if ev["ph"] == "b" and ev["cat"] == "region"]
    assert {ev["async_track"] for ev in regions} <= {ev["async_track"] for ev in tasks}


def test_far_smaller_than_the_json(rich_trace: Path, tmp_path: Path) -> None:
    """The protobuf is at most an eighth of the JSON (compressed bundles of
    interned, delta-timed packets), and under a third before compression."""
    write_perfetto(rich_trace, tmp_path / "t.pftrace")
    write_perfetto(rich_trace, tmp_path / "t.json")
    with open(tmp_path / "raw.pftrace", "wb") as f:
        _perfetto._write_proto(
            _perfetto.EventStream(rich_trace), f, True, compress=False
        )
    js = (tmp_path / "t.json").stat().st_size
    assert (tmp_path / "t.pftrace").stat().st_size * 8 <= js
    assert (tmp_path / "raw.pftrace").stat().st_size * 3 <= js
    raw, bundles = packets((tmp_path / "raw.pftrace").read_bytes())
    assert bundles == 0
    full, _ = packets((tmp_path / "t.pftrace").read_bytes())
    assert [p.SerializeToString() for p in raw] == [p.SerializeToString() for p in full]


def test_misnested_ranges_and_early_tasks(tmp_path: Path) -> None:
    """A range that outlives one begun after it is ended and begun again
    (continued), as in the JSON; a task ended that began before the trace
    gets a slice from time 0, written on BOOTTIME since the incremental
    clock cannot go back."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "reader"))
    try:
        import tracegen
    finally:
        sys.path.pop(0)
    from aiotrace._format.spec import C, LoopState, ResourceKind

    loop, thread = 1, 100
    events = [
        (C["LoopStatus"], 1_000_001_000, loop, LoopState.RUNNING),
        (C["RangeBegin"], 1_000_002_000, "outer", ResourceKind.LOOP, loop, None),
        (C["RangeBegin"], 1_000_003_000, "inner", ResourceKind.LOOP, loop, None),
        (C["RangeEnd"], 1_000_004_000, "outer", ResourceKind.LOOP, loop, None),
        (C["RangeEnd"], 1_000_005_000, "inner", ResourceKind.LOOP, loop, None),
        (C["LoopIdle"], 1_000_006_000, loop),
    ]
    path = tmp_path / "misnested.trace"
    path.write_bytes(tracegen.encode_trace([[(thread, "main", events)]]))
    decoded, doc = both(path, tmp_path)
    assert same_events(decoded.events, doc["traceEvents"]) == []
    ranges = [
        (ev["ph"], ev["name"], ev["ts"], ev.get("args", {}).get("continued", False))
        for ev in decoded.events
        if ev["ph"] in "BE" and ev["cat"] == "range"
    ]
    assert ranges == [
        ("B", "outer", 2.0, False),
        ("B", "inner", 3.0, False),
        ("E", "inner", 4.0, False),
        ("E", "outer", 4.0, False),
        ("B", "inner", 4.0, True),
        ("E", "inner", 5.0, False),
    ]


def test_truncated_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace cut short exports what it holds, and the end-of-export
    instant carries the reader's error; the command succeeds."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "reader"))
    try:
        import tracegen
    finally:
        sys.path.pop(0)
    cut = tmp_path / "cut.trace"
    cut.write_bytes(
        tracegen.encode_trace(
            [tracegen.sample_generation(g) for g in range(2)], end=False
        )
    )
    assert cli(["export", str(cut)]) == 0
    captured = capsys.readouterr()
    assert "truncated" in captured.err
    assert "cut.pftrace" in captured.out and "ui.perfetto.dev" in captured.out
    decoded = decode(tmp_path / "cut.pftrace")
    assert "truncated" in decoded.other_data["error"]
    assert decoded.other_data["events"] > 0


def test_streams_and_bounds_memory(rich_trace: Path) -> None:
    """Output is written as events are read, in bundles; the interning
    tables are cleared (with the sequence's state) when they grow past
    their limit, and the file still decodes to the same events."""
    events = reader.read_events(rich_trace)
    out = io.BytesIO()
    seen: list[int] = []

    def feed() -> Iterator[reader.Event]:
        for i, ev in enumerate(events):
            if i == len(events) * 3 // 4:
                seen.append(len(out.getvalue()))
            yield ev

    limit, bundle = _pftrace.MAX_INTERNED, _pftrace.BUNDLE
    _pftrace.MAX_INTERNED, _pftrace.BUNDLE = 20, 4096
    try:
        result = write_perfetto(feed(), out)
    finally:
        _pftrace.MAX_INTERNED, _pftrace.BUNDLE = limit, bundle
    assert result.events == len(events)
    # A tenth: the stall's stack samples (one every few ms, each with its
    # stack) come late in the trace and weigh the most.
    assert seen[0] > len(out.getvalue()) // 10
    raw, bundles = packets(out.getvalue())
    resets = sum(
        1
        for p in raw
        if p.sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    )
    assert resets > 3 and bundles > 3


def test_decoder_catches_broken_rules(rich_trace: Path, tmp_path: Path) -> None:
    """The checks the tests rely on fail on a file that breaks the rules:
    a packet without SEQ_NEEDS_INCREMENTAL_STATE is refused."""
    write_perfetto(rich_trace, tmp_path / "t.pftrace")
    raw, _ = packets((tmp_path / "t.pftrace").read_bytes())
    raw[5].sequence_flags = 0
    broken = pb.Trace()
    broken.packet.extend(raw)
    (tmp_path / "b.pftrace").write_bytes(broken.SerializeToString())
    with pytest.raises(DecodeError, match="SEQ_NEEDS_INCREMENTAL_STATE"):
        decode(tmp_path / "b.pftrace")


# -- the command line -------------------------------------------------------


def test_cli_default_is_protobuf(
    rich_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without -o or --format, the output is FILE.pftrace, in protobuf."""
    trace = tmp_path / "app.trace"
    trace.write_bytes(rich_trace.read_bytes())
    assert cli(["export", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "app.pftrace" in out and "https://ui.perfetto.dev" in out
    assert decode(tmp_path / "app.pftrace").track_events > 500


def test_cli_format_json(
    rich_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format json writes FILE.json; -o x.json alone also means JSON; the
    message names chrome://tracing for JSON."""
    trace = tmp_path / "app.trace"
    trace.write_bytes(rich_trace.read_bytes())
    assert cli(["export", str(trace), "--format", "json"]) == 0
    assert "chrome://tracing" in capsys.readouterr().out
    assert json.loads((tmp_path / "app.json").read_text("utf-8"))["traceEvents"]
    assert cli(["export", str(trace), "-o", str(tmp_path / "x.json")]) == 0
    assert json.loads((tmp_path / "x.json").read_text("utf-8"))["traceEvents"]
    assert (
        cli(["export", str(trace), "-o", str(tmp_path / "y.bin"), "--format", "proto"])
        == 0
    )
    assert decode(tmp_path / "y.bin").track_events > 500


def test_cli_help_is_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """``aiotrace export -h`` prints every option, --no-coroutine-tracks
    with its "40% smaller", and no formatting fault."""
    with pytest.raises(SystemExit) as exit:
        cli(["export", "-h"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-coroutine-tracks" in text and "about 40% smaller" in text
    assert "--format {proto,json}" in text
    assert "%" not in text.replace("40%", "")


def test_cli_says_when_too_big_for_a_browser(
    rich_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output past the size a browser tab loads gets, instead of "open it
    in ui.perfetto.dev", the way to open it: trace_processor --httpd."""
    from aiotrace._cli import export as export_cli

    limit = dict(export_cli.BROWSER_LIMIT)
    export_cli.BROWSER_LIMIT.update(proto=1000, json=1000)
    try:
        assert cli(["export", str(rich_trace), "-o", str(tmp_path / "a.pftrace")]) == 0
        out = capsys.readouterr().out
    finally:
        export_cli.BROWSER_LIMIT.update(limit)
    assert "trace_processor --httpd" in out and "open it in" not in out


def test_unknown_format(rich_trace: Path, tmp_path: Path) -> None:
    """An unknown format is a ValueError naming it."""
    with pytest.raises(ValueError, match="'xml'"):
        write_perfetto(rich_trace, tmp_path / "x", format="xml")  # type: ignore[arg-type]


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1))
def test_varint_matches_protobuf(n: int) -> None:
    """The hand-written varint encodes every uint64 and int64 as protobuf's
    own encoder does (a TrackEvent's track_uuid, an annotation's int)."""
    if n >= 0:
        assert pb.TrackEvent(track_uuid=n).SerializeToString() == b"\x58" + varint(n)
    if n < 1 << 63:
        a = pb.DebugAnnotation(int_value=n).SerializeToString()
        assert a == b"\x20" + varint(n)


def _many_coroutines(n: int) -> list[reader.Event]:
    """Events of ``n`` coroutines on one loop, each created and woken by the
    one before, with gaps from 0 ns to seconds between events, labels,
    metrics (int, float, negative) and logs long and short."""
    from aiotrace.reader import (
        NO_STACK,
        CoroState,
        Event,
        EventKind,
        Label,
        Log,
        LoopState,
        Metric,
        ResourceID,
        ResourceKind,
        StateTransition,
    )

    loop, thread = 1, 7
    gaps = (0, 1, 100, 20_000, 3_000_000, 1 << 31)
    out: list[Event] = []
    t = 1_000_000_000

    def add(kind: EventKind, coro: int, details: Any) -> None:
        nonlocal t
        t += gaps[len(out) % len(gaps)]
        out.append(Event(kind, t, coro, loop, thread, NO_STACK, details))

    def move(cid: int, by: int, old: CoroState, new: CoroState, why: str) -> None:
        rid = ResourceID(ResourceKind.COROUTINE, cid)
        add(
            EventKind.STATE_TRANSITION,
            by,
            StateTransition(rid, why, NO_STACK, old, new),
        )

    add(
        EventKind.STATE_TRANSITION,
        -1,
        StateTransition(
            ResourceID(ResourceKind.LOOP, loop),
            "",
            NO_STACK,
            LoopState.IDLE,
            LoopState.RUNNING,
        ),
    )
    s = CoroState
    move(1, -1, s.NOT_EXIST, s.RUNNABLE, "")
    move(1, -1, s.RUNNABLE, s.RUNNING, "")
    for cid in range(2, n + 2):
        move(cid, cid - 1, s.NOT_EXIST, s.RUNNABLE, "")
        add(
            EventKind.LABEL,
            cid - 1,
            Label(f"fn{cid % 7}", ResourceID(ResourceKind.COROUTINE, cid)),
        )
        move(cid - 1, -1, s.RUNNING, s.WAITING, "coroutine")
        move(cid, -1, s.RUNNABLE, s.RUNNING, "")
        if cid % 97 == 0:
            add(EventKind.LOG, cid, Log("é category", "x" * (cid % 600), -1))
            add(EventKind.METRIC, -1, Metric("/memory/rss:bytes", cid * 4096))
            add(EventKind.METRIC, -1, Metric("/loop/lag:seconds", -cid / 7))
        move(cid - 1, cid, s.WAITING, s.RUNNABLE, "coroutine")
    return out


def test_many_tracks_and_long_gaps(tmp_path: Path) -> None:
    """17,000 coroutines (track uuids past two varint bytes), gaps up to two
    seconds, long log messages and negative counters: the protobuf still
    equals the JSON event for event."""
    events = _many_coroutines(17_000)
    decoded, doc = both(events, tmp_path)
    assert same_events(decoded.events, doc["traceEvents"]) == []
    assert max(decoded.descriptors) > 1 << 14
    flows = Counter(ev["name"] for ev in decoded.events if ev["ph"] == "s")
    assert flows["create"] == 17_000 and flows["wake"] == 17_000
