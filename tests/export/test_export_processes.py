"""Several traces in one Perfetto file (aiotrace.export._processes): the
protobuf decodes and checks, each trace has its processes, and it holds the
same events as the JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pftrace_decode import decode, same_events

import aiotrace
from aiotrace import reader
from aiotrace.export._processes import write_perfetto_processes


async def _work(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _trace(path: Path, n: int) -> Path:
    with aiotrace.tracing(path):
        asyncio.run(_work(n))
    assert reader.validate(reader.read_events(path)) == []
    return path


def test_two_traces_as_protobuf_and_json(tmp_path: Path) -> None:
    """Two real traces give four processes, named after their files, in
    the protobuf and the JSON alike; the second trace, made later, is
    shifted later."""
    a = _trace(tmp_path / "a.trace", 3)
    b = _trace(tmp_path / "b.12345.trace", 5)
    proto = write_perfetto_processes([a, b], tmp_path / "ab.pftrace")
    js = write_perfetto_processes([a, b], tmp_path / "ab.json")
    assert [p.name for p in proto.processes] == ["a.trace", "pid 12345"]
    assert all(p.aligned and p.error is None for p in proto.processes)
    assert proto.processes[0].shift_ns == 0
    assert proto.processes[1].shift_ns > 0
    assert [p.events for p in proto.processes] == [
        len(reader.read_events(a)),
        len(reader.read_events(b)),
    ]
    decoded = decode(tmp_path / "ab.pftrace")
    names = {
        e["args"]["name"] for e in decoded.events if e.get("name") == "process_name"
    }
    assert names == {
        "a.trace: aiotrace",
        "a.trace: coroutines",
        "pid 12345: aiotrace",
        "pid 12345: coroutines",
    }
    doc = json.loads((tmp_path / "ab.json").read_text())
    assert same_events(decoded.events, doc["traceEvents"]) == []
    assert js.written > 0
