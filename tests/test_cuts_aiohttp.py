"""An aiohttp service under load, traced with ordinary and with tiny
generations: every annotation keeps its coroutine, whatever the cuts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from aiohttp import web

import aiotrace
from aiotrace import _session
from aiotrace.contrib import aiohttp as aiotrace_aiohttp
from aiotrace.reader import NO_COROUTINE, Event, EventKind, Reader, validate

LOAD_SECONDS = 10.0
"""How long the client loads the server (a duration, never asserted on)."""
CONCURRENCY = 20

ANNOTATIONS = (
    EventKind.LOG,
    EventKind.REGION_BEGIN,
    EventKind.REGION_END,
    EventKind.TASK_BEGIN,
    EventKind.TASK_END,
)


async def fast(request: web.Request) -> web.Response:
    aiotrace.log("req.id", request.headers.get("X-Request-Id", "?"))
    return web.Response(text="ok")


def work(n: int) -> int:
    """Pure-Python work: a loop, where another thread can take the GIL."""
    total = 0
    for i in range(n):
        total += i
    return total


async def slow(request: web.Request) -> web.Response:
    with aiotrace.region("work"):
        aiotrace.log("req.id", request.headers.get("X-Request-Id", "?"))
        work(5000)  # a cut can fall here, inside the step, after the log
        await asyncio.sleep(0.001)
        work(5000)
    return web.Response(text="slow")


CLIENT = """
import asyncio, sys, time
import aiohttp

async def main(url, seconds, concurrency):
    deadline = time.monotonic() + seconds
    done = 0

    async def worker(n):
        nonlocal done
        async with aiohttp.ClientSession() as session:
            i = 0
            while time.monotonic() < deadline:
                route = "slow" if (i + n) % 2 else "fast"
                headers = {"X-Request-Id": f"{n}-{i}"}
                async with session.get(f"{url}/{route}", headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                done += 1
                i += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    print(done)

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""
"""The load: an untraced aiohttp client in its own process, as real clients
are, requesting /fast and /slow for a given time; prints its responses."""


async def serve_under_load(seconds: float) -> int:
    """Runs the traced service on 127.0.0.1 while a client process loads it
    for ``seconds``; returns how many responses the client got (each 200)."""
    app = web.Application(middlewares=[aiotrace_aiohttp.middleware()])
    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            f"http://127.0.0.1:{port}",
            str(seconds),
            str(CONCURRENCY),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(client.communicate(), seconds + 60)
        assert client.returncode == 0
        return int(out)
    finally:
        await runner.cleanup()


def traced_load(path: Path, *, tiny: bool) -> tuple[list[Event], int, int]:
    """Traces the service under load into ``path``; returns the events, the
    responses and the steps that ran across a cut."""
    with aiotrace.tracing(path):
        session = _session.current()
        assert session is not None
        drainer = session.drainer
        if tiny:
            # Private knobs: a generation per drain, a drain every 2 ms.
            drainer.generation_bytes = 1
            drainer.interval = 0.002
        responses = asyncio.run(serve_under_load(LOAD_SECONDS))
        steps_cut = drainer.steps_cut
    with path.open("rb") as f:
        events = list(Reader(f))
    return events, responses, steps_cut


ROUTES = ("GET /fast", "GET /slow")
"""The middleware's task types: each request's route."""


def check_load(events: list[Event], responses: int) -> None:
    assert validate(events) == []
    lost = [
        ev for ev in events if ev.kind in ANNOTATIONS and ev.coroutine == NO_COROUTINE
    ]
    assert lost == []
    requests = {
        ev.task.id
        for ev in events
        if ev.kind is EventKind.TASK_BEGIN and ev.task.type in ROUTES
    }
    ended = {
        ev.task.id
        for ev in events
        if ev.kind is EventKind.TASK_END and ev.task.type in ROUTES
    }
    assert len(requests) == responses
    assert ended == requests


@pytest.mark.xfail(
    sys.version_info >= (3, 12),
    reason="the execution tracer does not see asyncio.Task(coro, "
    "eager_start=True), which aiohttp uses for each request on 3.12 and 3.13: "
    "the request's first step is put on the connection's coroutine",
    strict=True,
)
@pytest.mark.parametrize("tiny", [False, True], ids=["generations", "tiny-generations"])
def test_aiohttp_under_load_keeps_every_annotation_in_its_coroutine(
    tmp_path: Path, tiny: bool
) -> None:
    """10 s of real client load on a real aiohttp server with the middleware:
    0 problems, 0 annotation events without their coroutine, one task per
    response; with tiny generations, cuts fall inside many steps."""
    events, responses, steps_cut = traced_load(tmp_path / "load.trace", tiny=tiny)
    assert responses > 0
    check_load(events, responses)
    generations = sum(1 for ev in events if ev.kind is EventKind.SYNC)
    if tiny:
        assert generations > 100
        assert steps_cut > 50, (steps_cut, generations)
