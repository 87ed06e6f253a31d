"""The aiohttp examples run as their docstrings say, and their traces hold
what they claim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from aiotrace.reader import EventKind, read_events, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_aiohttp_server_self_test(tmp_path: Path) -> None:
    """The annotated service's live trace holds one task per order request,
    named after its route, with the handler's regions, the spawned
    coroutine's outgoing request and the thread's checksum under it."""
    out = tmp_path / "live.trace"
    stdout = run("aiohttp_server.py", "--self-test", str(out))
    assert str(out) in stdout
    events = read_events(out)
    assert validate(events) == []
    orders = {
        e.task.id
        for e in events
        if e.kind is EventKind.TASK_BEGIN and e.task.type == "GET /orders/{id}"
    }
    # One request at a time for 2 s: how many depends on the machine's load
    # (over a hundred when idle); a few are enough to check each one.
    assert len(orders) >= 3
    by_task: dict[int, set[str]] = {}
    for e in events:
        if e.kind is EventKind.REGION_BEGIN and e.region.task in orders:
            by_task.setdefault(e.region.task, set()).add(e.region.type)
    # The self-test sends one request at a time until the 2-second trace
    # ends: every order that ended in the trace has all four regions, and
    # only the last one begun may be cut off by the trace's end.
    ended = {
        e.task.id
        for e in events
        if e.kind is EventKind.TASK_END and e.task.id in orders
    }
    want = {"http.handler", "load order", "checksum"}
    for t in ended:
        # The outgoing request's type is its host:port and path, the order's
        # id in it as {id}; a request that opened a new connection also has
        # its phase.
        (client,) = by_task[t] - want - {"http.client.connect"}
        assert re.fullmatch(r"http\.client GET 127\.0\.0\.1:\d+/prices/\{id\}", client)
        assert want <= by_task[t], t
    begun = [
        e.task.id
        for e in events
        if e.kind is EventKind.TASK_BEGIN and e.task.id in orders
    ]
    assert set(begun) - ended <= {begun[-1]}


def test_stall_hunt_self_test(tmp_path: Path) -> None:
    """The stall hunt's flight recorder dumps the stall, and the explanation
    names the blocking line and the request that ran it."""
    stdout = run("stall_hunt.py", "--self-test", str(tmp_path))
    source = (EXAMPLES / "stall_hunt.py").read_text().splitlines()
    (line,) = [i + 1 for i, t in enumerate(source) if "time.sleep(0.25)" in t]
    assert f"stack samples at stall_hunt.py:{line} in legacy_render" in stdout
    assert "while serving task" in stdout and "/report" in stdout
    # The dump explained (a loaded machine may have dumped other stalls too).
    (dump,) = [
        Path(t[len("stall dump: ") :])
        for t in stdout.splitlines()
        if t.startswith("stall dump: ")
    ]
    assert dump.parent == tmp_path
    assert validate(read_events(dump)) == []
    assert "byte snapshot" in stdout
