"""The examples run as documented and their traces read back valid."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from aiotrace.reader import EventKind, read_events, validate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_stream_to_collector() -> None:
    """The collector receives the whole live trace over TCP: one SYNC, the
    program's ten logs in order per order number, its coroutines' steps, and
    a clean end."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "stream_to_collector.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    logs = [ln for ln in lines if " LOG " in ln]
    assert len(logs) == 10
    for n in range(5):
        start = next(i for i, ln in enumerate(logs) if f"'{n}: start'" in ln)
        done = next(i for i, ln in enumerate(logs) if f"'{n}: done'" in ln)
        assert start < done
    counts = ast.literal_eval(lines[-1])
    assert counts["SYNC"] == 1
    assert counts["LOG"] == 10
    # five orders, each a coroutine created, run and ended: 3 transitions+
    assert counts["STATE_TRANSITION"] >= 15


def test_cappuccino(tmp_path: Path) -> None:
    """Go's cappuccino example: each order's regions (in three coroutines and
    a worker thread) and its log belong to its own task, and each task ends
    after its mixMilkCoffee region, from the mixing coroutine."""
    trace = tmp_path / "cappuccino.trace"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "cappuccino.py"), str(trace)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert str(trace) in proc.stdout
    events = read_events(trace)
    assert validate(events) == []
    begins = {e.task.id: e for e in events if e.kind is EventKind.TASK_BEGIN}
    assert {e.task.type for e in begins.values()} == {"makeCappuccino"}
    assert len(begins) == 2
    main_thread = next(iter(begins.values())).thread
    want = {"steamMilk", "grindBeans", "extractCoffee", "mixMilkCoffee"}
    for task_id in begins:
        regions = [
            e
            for e in events
            if e.kind in (EventKind.REGION_BEGIN, EventKind.REGION_END)
            and e.region.task == task_id
        ]
        assert {e.region.type for e in regions} == want
        assert len(regions) == 2 * len(want)
        grind = [e for e in regions if e.region.type == "grindBeans"]
        assert all(e.thread != main_thread for e in grind)
        (log,) = [
            e for e in events if e.kind is EventKind.LOG and e.log.task == task_id
        ]
        assert log.log.category == "orderID"
        (end,) = [
            e for e in events if e.kind is EventKind.TASK_END and e.task.id == task_id
        ]
        assert end.task.type == "makeCappuccino"
        mixed = max(
            e.time
            for e in regions
            if e.kind is EventKind.REGION_END and e.region.type == "mixMilkCoffee"
        )
        assert end.time >= mixed
    untasked = [
        e
        for e in events
        if e.kind in (EventKind.REGION_BEGIN, EventKind.REGION_END)
        and e.region.task not in begins
    ]
    assert untasked == []
