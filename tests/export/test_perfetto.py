"""Perfetto export: structure Perfetto needs, and content the trace holds."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from chrome_check import check
from export_programs import counts, payload_byte_near

import aiotrace
from aiotrace import reader
from aiotrace._cli import main as cli
from aiotrace.export import write_perfetto


def export(path: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "out.json"
    result = write_perfetto(path, out)
    assert result.error is None
    doc: dict[str, Any] = json.loads(out.read_text("utf-8"))
    assert result.written == len(doc["traceEvents"])
    return doc


def names(doc: dict[str, Any], pid: int) -> dict[int, str]:
    return {
        ev["tid"]: ev["args"]["name"]
        for ev in doc["traceEvents"]
        if ev["ph"] == "M" and ev["name"] == "thread_name" and ev["pid"] == pid
    }


def test_rich_trace_is_well_formed(rich_trace: Path, tmp_path: Path) -> None:
    """The export of a real program with two loops, threads, queues, locks,
    create_task chains and a stall loads as JSON, and every track is
    balanced, in time order, with flows that start and end on open slices."""
    doc = export(rich_trace, tmp_path)
    assert check(doc) == []
    assert doc["otherData"]["events"] == len(reader.read_events(rich_trace))


def test_rich_trace_content(rich_trace: Path, tmp_path: Path) -> None:
    """One track per loop, per coroutine and per busy thread, named; flows
    for every creation and every wake-up by a coroutine; tasks as async
    slices with their regions; logs, metrics, stack samples and stalls."""
    want = counts(rich_trace)
    doc = export(rich_trace, tmp_path)
    evs = doc["traceEvents"]
    by: Counter[tuple[str, str]] = Counter((ev["ph"], ev.get("cat", "")) for ev in evs)

    process = names(doc, 1)
    loops = [n for n in process.values() if n.startswith("loop ")]
    assert len(loops) == want["loops"] == 2
    assert sorted(n.split(" in ")[-1] for n in loops) == ["MainThread", "second-loop"]
    assert any("asyncio_" in n for n in process.values())  # executor threads
    coroutines = names(doc, 2)
    assert len(coroutines) == want["coroutines"]
    assert sum(n.endswith(" _worker") for n in coroutines.values()) == 8
    assert sum(n.endswith(" _chain") for n in coroutines.values()) == 10

    flows = Counter(ev["name"] for ev in evs if ev["ph"] == "s")
    assert flows["create"] == want["create flows"] > 0
    assert flows["wake"] == want["wake flows"] > 0

    assert by[("b", "task")] == want["tasks"] == 9  # 4 jobs a loop, 1 stall
    assert by[("b", "region")] == want["regions"] == 16
    assert by[("i", "log")] == want["logs"]
    assert by[("C", "")] == want["metrics"] > 0
    assert by[("i", "sample")] == want["samples"] > 0
    steps = [ev for ev in evs if ev["ph"] == "B" and ev["cat"] == "step"]
    assert {ev["name"] for ev in steps} >= {"_main", "_worker", "_chain"}

    stall_ends = [
        ev
        for ev in evs
        if ev["ph"] == "E" and ev["name"] == "loop stall" and "args" in ev
    ]
    # The program stalls once on purpose; a loaded machine may add more.
    assert len(stall_ends) == want["range loop stall"] >= 1
    for end in stall_ends:
        assert end["args"]["samples"] == sum(s["count"] for s in end["args"]["stacks"])
    tops = [
        end["args"]["stacks"][0]["frames"][0]
        for end in stall_ends
        if end["args"]["samples"]
    ]
    assert any(t.startswith("_main (") and "export_programs.py" in t for t in tops)
    tasks = [ev for ev in evs if ev["ph"] == "b" and ev["cat"] == "task"]
    regions = [ev for ev in evs if ev["ph"] == "b" and ev["cat"] == "region"]
    task_ids = {ev["id2"]["local"] for ev in tasks}
    # Regions of tasks nest in their task's async track.
    assert {ev["id2"]["local"] for ev in regions} <= task_ids
    assert {ev["name"] for ev in regions} == {"locked", "grind"}


def test_timestamps_are_relative_microseconds(rich_trace: Path, tmp_path: Path) -> None:
    """Timestamps are microseconds since the trace's first event (its sync):
    a task's slice begins at its TASK_BEGIN's time, and none is later than
    the trace's last event."""
    doc = export(rich_trace, tmp_path)
    events = reader.read_events(rich_trace)
    t0 = events[0].time
    first_task = next(ev for ev in events if ev.kind is reader.EventKind.TASK_BEGIN)
    slice_ = next(
        ev for ev in doc["traceEvents"] if ev["ph"] == "b" and ev["cat"] == "task"
    )
    assert slice_["ts"] == pytest.approx((first_task.time - t0) / 1000, abs=0.002)
    ts = [ev["ts"] for ev in doc["traceEvents"] if "ts" in ev]
    assert min(ts) >= 0
    last_task = [ev for ev in events if ev.kind is reader.EventKind.TASK_END][-1]
    assert (last_task.time - t0) / 1000 - 0.002 <= max(ts)
    assert max(ts) <= (events[-1].time - t0) / 1000 + 0.002


FLAVOURS = ["plain", "trio"]
if sys.platform != "win32":
    # uvloop is imported by the test that uses it, not here: an import at
    # collection would hide from every test in this pytest process what
    # happens when uvloop is imported after tracing starts.
    FLAVOURS.append("uvloop")
if sys.version_info >= (3, 12):
    FLAVOURS.append("eager")


async def _asyncio_program() -> None:
    async def child(n: int) -> int:
        async with aiotrace.new_task("child"):
            await asyncio.sleep(0.001 * n)
        return n

    await asyncio.gather(*(child(n) for n in range(5)))


async def _trio_program() -> None:
    async def child(n: int) -> None:
        async with aiotrace.new_task("child"):
            await trio.sleep(0.001 * n)

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(child, n)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_loop_flavour(flavour: str, tmp_path: Path) -> None:
    """asyncio, eager tasks, uvloop and trio traces all export well formed,
    with a coroutine track per coroutine and the tasks."""
    path = tmp_path / f"{flavour}.trace"
    uvloop = pytest.importorskip("uvloop") if flavour == "uvloop" else None
    with aiotrace.tracing(path):
        if flavour == "trio":
            trio.run(_trio_program)
        elif uvloop is not None:
            uvloop.run(_asyncio_program())
        else:

            async def main() -> None:
                if flavour == "eager":
                    loop = asyncio.get_running_loop()
                    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
                await _asyncio_program()

            asyncio.run(main())
    doc = export(path, tmp_path)
    assert check(doc) == []
    want = counts(path)
    assert len(names(doc, 2)) == want["coroutines"] >= 5
    tasks = [ev for ev in doc["traceEvents"] if ev["ph"] == "b" and ev["cat"] == "task"]
    assert len(tasks) == 5


def test_without_coroutine_tracks(
    rich_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-coroutine-tracks leaves out the coroutines' own tracks and the
    flows, keeps the steps on the loop tracks, and stays well formed."""
    out = tmp_path / "small.json"
    assert (
        cli(["export", str(rich_trace), "-o", str(out), "--no-coroutine-tracks"]) == 0
    )
    small = json.loads(out.read_text("utf-8"))
    full = export(rich_trace, tmp_path)
    assert check(small) == []
    assert [
        ev for ev in small["traceEvents"] if ev["pid"] == 2 and ev["ph"] != "M"
    ] == []
    assert not any(ev["ph"] in "sf" for ev in small["traceEvents"])

    def steps(doc: dict[str, Any]) -> list[Any]:
        return [ev for ev in doc["traceEvents"] if ev.get("cat") == "step"]

    assert steps(small) == steps(full) != []
    assert len(small["traceEvents"]) < len(full["traceEvents"]) * 0.7


def test_export_streams(rich_trace: Path) -> None:
    """The export writes as it reads: half-way through the events, output
    for them is already written (nothing waits for the end)."""
    events = reader.read_events(rich_trace)
    out = io.StringIO()
    seen: list[int] = []

    def feed() -> Iterator[reader.Event]:
        for i, ev in enumerate(events):
            if i == len(events) // 2:
                seen.append(len(out.getvalue()))
            yield ev

    result = write_perfetto(feed(), out)
    assert result.events == len(events)
    # A tenth, not a half: the stall's stack samples (one every few ms, each
    # with its whole stack) come late in the trace and weigh the most.
    assert seen[0] > len(out.getvalue()) // 10
    assert check(json.loads(out.getvalue())) == []


def _tracegen() -> Any:
    """The reader tests' trace builder (exact bytes from explicit events)."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "reader"))
    try:
        import tracegen
    finally:
        sys.path.pop(0)
    return tracegen


def test_misnested_ranges_stay_balanced(tmp_path: Path) -> None:
    """A range that ends while one begun after it is still open (a stall
    that outlasts the step it covers) does not unbalance the track: the
    inner slice is ended and begun again, marked continued."""
    encode_trace = _tracegen().encode_trace
    from aiotrace._format.spec import C, LoopState, ResourceKind

    c = C
    loop, thread = 1, 100
    events = [
        (c["LoopStatus"], 1_000_001_000, loop, LoopState.RUNNING),
        (c["RangeBegin"], 1_000_002_000, "outer", ResourceKind.LOOP, loop, None),
        (c["RangeBegin"], 1_000_003_000, "inner", ResourceKind.LOOP, loop, None),
        (c["RangeEnd"], 1_000_004_000, "outer", ResourceKind.LOOP, loop, None),
        (c["RangeEnd"], 1_000_005_000, "inner", ResourceKind.LOOP, loop, None),
        (c["LoopIdle"], 1_000_006_000, loop),
    ]
    path = tmp_path / "misnested.trace"
    path.write_bytes(encode_trace([[(thread, "main", events)]]))
    doc = export(path, tmp_path)
    assert check(doc) == []
    slices = [
        (ev["ph"], ev["name"], ev["ts"], ev.get("args", {}).get("continued", False))
        for ev in doc["traceEvents"]
        if ev["ph"] in "BE" and ev["cat"] == "range"
    ]
    assert slices == [
        ("B", "outer", 2.0, False),
        ("B", "inner", 3.0, False),
        ("E", "inner", 4.0, False),
        ("E", "outer", 4.0, False),
        ("B", "inner", 4.0, True),
        ("E", "inner", 5.0, False),
    ]


# -- the command line -------------------------------------------------------


def test_cli_writes_the_default_output(
    rich_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --format json and without -o, the output is FILE with the
    suffix .json."""
    trace = tmp_path / "app.trace"
    trace.write_bytes(rich_trace.read_bytes())
    assert cli(["export", str(trace), "--format", "json"]) == 0
    assert check(json.loads((tmp_path / "app.json").read_text("utf-8"))) == []
    assert "app.json" in capsys.readouterr().out


def test_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing trace is a one-line error and exit status 1."""
    missing = tmp_path / "nope.trace"
    assert cli(["export", str(missing), "-o", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "No such file" in err


def test_cli_not_a_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not a trace is an error naming the file and the fault."""
    bad = tmp_path / "bad.trace"
    bad.write_text("hello, this is not a trace\n")
    assert cli(["export", str(bad), "-o", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "at byte 0" in err


def test_cli_truncated_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace cut short (a killed program) exports what it holds, with a
    warning, and succeeds: the output is whole and well formed."""
    tracegen = _tracegen()
    cut = tmp_path / "cut.trace"
    cut.write_bytes(
        tracegen.encode_trace(
            [tracegen.sample_generation(g) for g in range(2)], end=False
        )
    )
    out = tmp_path / "cut.json"
    assert cli(["export", str(cut), "-o", str(out)]) == 0
    assert "truncated" in capsys.readouterr().err
    doc = json.loads(out.read_text("utf-8"))
    assert check(doc) == []
    assert "truncated" in doc["otherData"]["error"]
    assert doc["otherData"]["events"] > 0


def test_cli_corrupt_trace(
    rich_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt trace exports the events before the fault, well formed,
    but the command fails and says where the fault is."""
    data = bytearray(rich_trace.read_bytes())
    data[payload_byte_near(data, len(data) // 2)] ^= 0xFF
    bad = tmp_path / "bad.trace"
    bad.write_bytes(bytes(data))
    out = tmp_path / "bad.json"
    assert cli(["export", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "at byte" in err and "CRC" in err
    assert check(json.loads(out.read_text("utf-8"))) == []


def test_cli_refuses_to_overwrite_the_trace(
    rich_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o naming the trace itself is refused, and the trace is untouched."""
    before = rich_trace.read_bytes()
    assert cli(["export", str(rich_trace), "-o", str(rich_trace)]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert rich_trace.read_bytes() == before
