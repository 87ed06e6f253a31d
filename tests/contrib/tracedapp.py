"""A real aiohttp service for the contrib tests, and helpers to load and read it.

The service runs on a real socket (127.0.0.1, port 0) in the test's event
loop; the load comes from a real aiohttp client in the same loop.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp
from aiotrace.reader import Event, EventKind, Reader

SLOW = 0.05
"""Seconds the slow route sleeps."""
STALL = 0.3
"""Seconds the stalling route holds the event loop."""


class Boom(Exception):
    """The exception the failing route raises."""


async def fast(request: web.Request) -> web.Response:
    aiotrace.log("req.id", request.headers.get("X-Request-Id", "?"))
    return web.Response(text="ok")


async def slow(request: web.Request) -> web.Response:
    aiotrace.log("req.id", request.headers.get("X-Request-Id", "?"))
    t0 = time.perf_counter_ns()  # the trace's clock
    await asyncio.sleep(SLOW)
    t1 = time.perf_counter_ns()
    aiotrace.log("slept", f"{t0} {t1}")
    return web.Response(text="slow")


def stall_line() -> None:
    """Blocks the loop for STALL, and again while the stall watchdog has
    taken fewer than 3 samples of it (a loaded machine may starve the
    watchdog). One line of C calls: every sample names it."""
    counts = _watchdog_samples()
    me = threading.get_ident()
    while time.sleep(STALL) or counts.get(me, 0) <= 3:  # the line samples name
        pass


def _watchdog_samples() -> dict[int, int]:
    """The running recording's watchdog counts of samples per stalling
    thread (white-box), or a dict that says 'sampled' when none watches."""
    from aiotrace import _session

    session = _session.current()
    runtime = None if session is None else session.runtime
    watchdog = None if runtime is None else runtime._watchdog
    if watchdog is None:
        return {threading.get_ident(): 1 << 30}
    counts: dict[int, int] = watchdog._samples
    return counts


async def stall(request: web.Request) -> web.Response:
    stall_line()
    return web.Response(text="stalled")


def _in_thread() -> None:
    with aiotrace.region("worker"):
        pass


async def _child() -> None:
    async with aiotrace.region("child"):
        await asyncio.sleep(0)


async def spawn(request: web.Request) -> web.Response:
    await asyncio.gather(asyncio.create_task(_child()), asyncio.to_thread(_in_thread))
    return web.Response(text="spawned")


async def fail(request: web.Request) -> web.Response:
    raise Boom("boom")


async def limited(request: web.Request) -> web.Response:
    raise web.HTTPTooManyRequests()


def make_app(**middleware_options: Any) -> web.Application:
    """Returns the traced service with its routes."""
    app = web.Application(
        middlewares=[aiotrace_aiohttp.middleware(**middleware_options)]
    )
    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    app.router.add_get("/stall", stall)
    app.router.add_get("/spawn", spawn)
    app.router.add_get("/fail", fail)
    app.router.add_get("/limited", limited)
    return app


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Runs ``app`` on ``host`` and a free port; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def load(
    session: aiohttp.ClientSession,
    urls: Iterable[str],
    *,
    concurrency: int,
    check: Callable[[int], bool] = lambda status: status == 200,
) -> dict[str, tuple[int, int, int]]:
    """Requests every URL, ``concurrency`` at a time, each with its own
    X-Request-Id; returns {id: (status, t0, t1)} timed on the trace's clock."""
    todo = list(enumerate(urls))
    results: dict[str, tuple[int, int, int]] = {}

    async def worker() -> None:
        while todo:
            i, url = todo.pop()
            rid = str(i)
            t0 = time.perf_counter_ns()
            async with session.get(url, headers={"X-Request-Id": rid}) as resp:
                await resp.read()
                status = resp.status
            t1 = time.perf_counter_ns()
            assert check(status), f"{url}: status {status}"
            results[rid] = (status, t0, t1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def read(data: bytes | Path) -> list[Event]:
    """Reads a whole trace from bytes or a file."""
    if isinstance(data, Path):
        data = data.read_bytes()
    return list(Reader(io.BytesIO(data)))


def tasks(events: list[Event], type: str | None = None) -> dict[int, dict[str, Any]]:
    """Returns each task's begin, end, logs and regions, by task id."""
    out: dict[int, dict[str, Any]] = {}

    def entry(task_id: int) -> dict[str, Any]:
        return out.setdefault(
            task_id,
            {"begin": [], "end": [], "logs": {}, "regions": [], "type": None},
        )

    for ev in events:
        if ev.kind is EventKind.TASK_BEGIN:
            e = entry(ev.task.id)
            e["begin"].append(ev)
            e["type"] = ev.task.type
        elif ev.kind is EventKind.TASK_END:
            entry(ev.task.id)["end"].append(ev)
        elif ev.kind is EventKind.LOG and ev.log.task > 0:
            entry(ev.log.task)["logs"].setdefault(ev.log.category, []).append(
                ev.log.message
            )
        elif (
            ev.kind in (EventKind.REGION_BEGIN, EventKind.REGION_END)
            and ev.region.task > 0
        ):
            entry(ev.region.task)["regions"].append(ev)
    if type is not None:
        out = {k: v for k, v in out.items() if v["type"] == type}
    return out


def non_loopback_address() -> str | None:
    """Returns an IPv4 address of this machine that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))  # no packet is sent
            address = str(s.getsockname()[0])
        except OSError:
            return None
    if address.startswith("127.") or address == "0.0.0.0":
        return None
    with socket.socket() as probe:  # can a server listen on it?
        try:
            probe.bind((address, 0))
        except OSError:
            return None
    return address
