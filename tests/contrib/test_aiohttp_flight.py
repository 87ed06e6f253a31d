"""The flight recorder behind a real aiohttp service: stalls caught, and
its snapshot served by GET /debug/aiotrace/flight."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tracedapp
from tracedapp import STALL, load, make_app, read, serve, tasks

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp
from aiotrace.reader import Event, EventKind, validate


async def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Polls ``cond`` without blocking the loop; fails (never hangs)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def stall_task(events: list[Event]) -> dict[str, Any] | None:
    """The /stall request's user task, if the events hold it whole."""
    found = [
        t for t in tasks(events).values() if t["logs"].get("http.path") == ["/stall"]
    ]
    if len(found) != 1 or not found[0]["begin"] or not found[0]["end"]:
        return None
    return found[0]


def stall_of(events: list[Event]) -> tuple[Event, Event]:
    """Returns the begin (or active) and end of the loop stall that holds the
    /stall request (a loaded machine may add stalls of its own)."""
    task = stall_task(events)
    assert task is not None, "the /stall request is not in the trace"
    t0, t1 = task["begin"][0].time, task["end"][0].time
    pairs: list[tuple[Event, Event]] = []
    begun: Event | None = None
    for ev in events:
        if (
            ev.kind
            in (EventKind.RANGE_BEGIN, EventKind.RANGE_ACTIVE, EventKind.RANGE_END)
            and ev.range.name == "loop stall"
        ):
            if ev.kind is EventKind.RANGE_END:
                if begun is not None:
                    pairs.append((begun, ev))
                begun = None
            elif begun is None:
                begun = ev
    holding = [(b, e) for b, e in pairs if b.time <= t0 and t1 <= e.time]
    assert holding, (
        f"no stall holds the /stall request: {[(b.time, e.time) for b, e in pairs]}"
    )
    return holding[0]


def holds_planted_stall(path: str) -> bool:
    """Whether a stall dump holds the /stall request whole."""
    return stall_task(read(Path(path))) is not None


def check_stall(events: list[Event]) -> None:
    """The snapshot holds the stall, samples naming the blocking line, and
    the /stall request's task inside it."""
    begin, end = stall_of(events)
    assert end.time - begin.time >= STALL * 1e9 * 0.8
    lines, first = inspect.getsourcelines(tracedapp.stall_line)
    line = first + next(i for i, t in enumerate(lines) if "time.sleep" in t)
    samples = [
        ev
        for ev in events
        if ev.kind is EventKind.STACK_SAMPLE and begin.time <= ev.time <= end.time
    ]
    # The blocking line is sampled first (3 times at least: it blocks until
    # then); once it returns the step goes on (the response is written),
    # still holding the loop, and a later sample may catch that, never the
    # blocking line again.
    at_line = [
        (s.stack.frames[0].func, s.stack.frames[0].file, s.stack.frames[0].line)
        == ("stall_line", tracedapp.__file__, line)
        for s in sorted(samples, key=lambda s: s.time)
    ]
    held = at_line.index(False) if False in at_line else len(at_line)
    assert held >= 3, [s.stack.frames[0] for s in samples]
    assert not any(at_line[held:]), [s.stack.frames[0] for s in samples]
    task = stall_task(events)
    assert task is not None
    # The stall is the loop's whole step, which runs the request's task.
    task_begin, task_end = task["begin"][0].time, task["end"][0].time
    assert begin.time <= task_begin < task_end <= end.time
    assert task_end - task_begin >= STALL * 1e9


@pytest.mark.asyncio
async def test_a_stalling_request_is_caught_in_the_flight_recorder(
    tmp_path: Path,
) -> None:
    """Under real load, a request that blocks the loop makes the flight
    recorder dump: the dump reads back valid with the stall, the samples
    naming the blocking line, the stalling request's task, and the load's
    requests as tasks; GET /debug/aiotrace/flight serves the same."""
    recorder = aiotrace.FlightRecorder(
        max_bytes=4 << 20,
        min_age=5,
        on_stall=tmp_path / "stall-{n}.trace",
        on_stall_interval=0.001,  # a loaded machine may stall first
    )
    app = make_app()
    aiotrace_aiohttp.add_debug_routes(app, flight_recorder=recorder)
    async with serve(app) as url, aiohttp.ClientSession() as session:
        recorder.start()
        try:
            urls = [f"{url}/fast"] * 1000
            urls.insert(500, f"{url}/stall")
            await load(session, urls, concurrency=20)
            await wait_for(
                lambda: any(map(holds_planted_stall, recorder.stall_dumps)),
                "a stall dump holding the /stall request",
            )
            served = b""
            for _ in range(500):  # 503 while an automatic stall dump is written
                async with session.get(f"{url}/debug/aiotrace/flight") as resp:
                    if resp.status == 503:
                        await asyncio.sleep(0.02)
                        continue
                    assert resp.status == 200
                    assert resp.headers["Content-Type"] == "application/octet-stream"
                    assert "aiotrace-flight-" in resp.headers["Content-Disposition"]
                    served = await resp.read()
                    break
            assert served, "/flight answered 503 for 10 s"
        finally:
            recorder.stop()
    dump = next(d for d in recorder.stall_dumps if holds_planted_stall(d))
    dumped = read(Path(dump))
    assert validate(dumped) == []
    check_stall(dumped)
    # The load's requests of the last 5 s or so: how many depends on the
    # machine's load (hundreds when idle), more than one round of 20 anyway.
    assert len(tasks(dumped, "GET /fast")) > 20
    events = read(served)
    assert validate(events) == []
    check_stall(events)


@pytest.mark.asyncio
async def test_flight_recorder_never_started() -> None:
    """/flight with a recorder that never ran is a 503 that says so."""
    app = make_app()
    aiotrace_aiohttp.add_debug_routes(app, flight_recorder=aiotrace.FlightRecorder())
    async with (
        serve(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/debug/aiotrace/flight") as resp,
    ):
        assert resp.status == 503
        assert "never started" in await resp.text()


@pytest.mark.asyncio
async def test_live_trace_alongside_the_flight_recorder() -> None:
    """With a flight recorder running, /trace still streams a valid trace,
    and the recorder keeps running after it."""
    recorder = aiotrace.FlightRecorder()
    app = make_app()
    aiotrace_aiohttp.add_debug_routes(app, flight_recorder=recorder)
    async with serve(app) as url, aiohttp.ClientSession() as session:
        recorder.start()
        try:
            async with session.get(f"{url}/debug/aiotrace/trace?seconds=0.3") as resp:
                assert resp.status == 200
                events = read(await resp.read())
            assert recorder.enabled
            async with session.get(f"{url}/debug/aiotrace/flight") as resp:
                assert resp.status == 200
                assert validate(read(await resp.read())) == []
        finally:
            recorder.stop()
    assert validate(events) == []
    assert any(e.kind is EventKind.STATE_TRANSITION for e in events)


@pytest.mark.asyncio
async def test_live_trace_refused_beside_a_recorder_with_other_options() -> None:
    """A live trace must record with the running recorder's options: beside
    one with another stall threshold, /trace is a 409 that names it."""
    recorder = aiotrace.FlightRecorder(stall_threshold=0.5)
    app = make_app()
    aiotrace_aiohttp.add_debug_routes(app, flight_recorder=recorder)
    async with serve(app) as url, aiohttp.ClientSession() as session:
        recorder.start()
        try:
            async with session.get(f"{url}/debug/aiotrace/trace?seconds=0.1") as resp:
                assert resp.status == 409
                assert "stall_threshold" in await resp.text()
            assert recorder.enabled
        finally:
            recorder.stop()
