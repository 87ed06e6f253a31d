"""The examples run as documented and their traces read back valid."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import anyio

from aiotrace.reader import (
    CoroState,
    EventKind,
    ResourceKind,
    read_events,
    validate,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_stream_to_collector() -> None:
    """The collector receives the whole live trace over TCP: one SYNC, the
    program's ten logs in order per order number, its coroutines' steps, and
    a clean end (the reader reaches the trace's end record: no TraceError,
    no lost events; every worker created and returned; the trace
    validates)."""
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
    # The same, in this process, to look at the events themselves.
    spec = importlib.util.spec_from_file_location(
        "stream_to_collector", EXAMPLES / "stream_to_collector.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    events = anyio.run(module.main)  # AsyncReader raises on an unclean end
    assert validate(events) == []
    syncs = [ev for ev in events if ev.kind is EventKind.SYNC]
    assert len(syncs) == 1 and syncs[0].sync.lost_events == 0
    workers = {
        ev.label.resource.id
        for ev in events
        if ev.kind is EventKind.LABEL
        and ev.label.label.endswith("traced_program.<locals>.worker")
    }
    assert len(workers) == 5
    lives: dict[int, list[tuple[CoroState, CoroState, str]]] = {w: [] for w in workers}
    for ev in events:
        if ev.kind is EventKind.STATE_TRANSITION:
            st = ev.state_transition
            if st.resource.kind is ResourceKind.COROUTINE and st.resource.id in lives:
                lives[st.resource.id].append((st.old, st.new, st.reason))
    for life in lives.values():
        assert life[0] == (CoroState.NOT_EXIST, CoroState.RUNNABLE, "")
        assert life[-1] == (CoroState.RUNNING, CoroState.NOT_EXIST, "returned")
    # Order 0 sleeps 0 s (a yield); the others wait on a timer.
    sleeps = sorted(
        sum(1 for old, new, r in life if (new, r) == (CoroState.WAITING, "sleep"))
        for life in lives.values()
    )
    assert sleeps == [0, 1, 1, 1, 1]


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
