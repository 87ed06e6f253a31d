"""uvicorn serving a Starlette app under `aiotrace run`, on asyncio and uvloop.

The server is the user's program, run as a user would run it; the load is a
fixed number of requests from httpx in this process, 8 at a time. Each
trace must validate, hold the app's coroutines, and count the requests
exactly: uvicorn runs each request in a task of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from realprograms import drive, summarise, traced_server

HELLO, WORK = 150, 150


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_uvicorn_starlette_trace_is_exact(loop: str, trace_file: Path) -> None:
    """300 requests (150 to /, 150 to /work) to uvicorn + Starlette with
    ``loop=LOOP`` (uvicorn imports uvloop itself, after tracing started): the
    trace validates with no lost event and no annotation
    without its coroutine, shows one loop, one request coroutine per request
    (each returned), three gathered children per /work request, and the
    app's region and log once per /work request."""
    with traced_server(trace_file, "serve_uvicorn.py", loop) as url:
        statuses = drive(url, ["/", "/work"] * HELLO, concurrency=8)
    assert statuses == {200: HELLO + WORK}
    s = summarise(trace_file)
    s.check_exact()
    assert len(s.coroutines("RequestResponseCycle.run_asgi")) == HELLO + WORK
    assert s.ended("RequestResponseCycle.run_asgi") == HELLO + WORK
    assert s.ended("starlette_child") == 3 * WORK
    assert len(s.coroutines("LifespanOn.main")) == 1
    assert s.kinds["REGION_BEGIN"] == s.kinds["REGION_END"] == WORK
    assert s.logs["app.path"] == WORK
    # Each /work request gathers its children and sleeps at least once.
    assert s.blocks["gather"] >= WORK
    assert s.blocks["sleep"] >= WORK


def test_uvicorn_flight_snapshot_at_exit_is_exact(trace_file: Path) -> None:
    """The same server, 1,200 requests, under ``aiotrace run --flight 60
    --flight-max-mib 0.5``: the flight recorder cuts generations of 64 KiB, and the snapshot written
    at exit validates with no annotation without its coroutine; it holds
    whole generations only, so at most every request, at least one."""
    options = ("--flight", "60", "--flight-max-mib", "0.5")
    rounds = 4 * HELLO  # about 200 KB of trace: several 64 KiB generations
    with traced_server(
        trace_file, "serve_uvicorn.py", "asyncio", options=options
    ) as url:
        statuses = drive(url, ["/", "/work"] * rounds, concurrency=8)
    assert statuses == {200: 2 * rounds}
    s = summarise(trace_file)
    s.check_exact()
    assert s.kinds["SYNC"] >= 2, "the snapshot should hold several generations"
    assert 1 <= s.ended("RequestResponseCycle.run_asgi") <= 2 * rounds
    assert s.kinds["REGION_BEGIN"] <= rounds
