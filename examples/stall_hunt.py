"""Hunt a loop stall with the flight recorder, in an aiohttp service.

The service below sometimes blocks its event loop: one request to /report
in 40 calls a blocking function, and for a quarter of a second every other
request waits. Such stalls are rare and short, so tracing all the time to a
file would be wasteful, and starting a trace after the fact too late. A
flight recorder keeps the last seconds of the trace in memory; after each
stall it writes them to a file, and ``GET /debug/aiotrace/flight`` returns
them on demand. The snapshot holds the stall, stack samples taken while the
loop was blocked (they name the blocking line), and the request that was
running, as a task.

Run it (needs ``pip install 'aiotrace[aiohttp]'``)::

    python examples/stall_hunt.py --port 8080 --dir /tmp/stalls

load it from another shell until it reports a stall::

    for i in $(seq 200); do curl -s localhost:8080/report >/dev/null; done
    # or: wrk -c 10 -d 10s http://127.0.0.1:8080/report

then look at the dump it wrote, or take a snapshot yourself::

    python examples/stall_hunt.py --explain /tmp/stalls/stall-1.trace
    curl -o flight.trace http://127.0.0.1:8080/debug/aiotrace/flight

``python examples/stall_hunt.py --self-test DIR`` does all of this by
itself: serves on a free port, loads it until a stall is dumped into DIR,
and explains the dump.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp

if TYPE_CHECKING:
    from aiotrace.reader import Event

_requests = itertools.count(1)


def legacy_render(n: int) -> str:
    """A synchronous call hidden deep in the code: the bug we are hunting."""
    time.sleep(0.25)  # a blocking driver call: it holds the event loop
    return f"report {n} (slow path)"


async def report(request: web.Request) -> web.Response:
    n = next(_requests)
    async with aiotrace.region("render"):
        if n % 40 == 0:
            body = legacy_render(n)
        else:
            await asyncio.sleep(0.001)
            body = f"report {n}"
    return web.Response(text=body)


def make_app(recorder: aiotrace.FlightRecorder) -> web.Application:
    """Returns the service, with its flight recorder behind /debug/aiotrace."""
    app = web.Application(middlewares=[aiotrace_aiohttp.middleware()])
    app.router.add_get("/report", report)
    aiotrace_aiohttp.add_debug_routes(app, flight_recorder=recorder)

    async def run_recorder(app: web.Application) -> AsyncIterator[None]:
        recorder.start()
        yield
        recorder.stop()

    app.cleanup_ctx.append(run_recorder)
    return app


def new_recorder(directory: str, interval: float = 10) -> aiotrace.FlightRecorder:
    """Keeps about the last 5 seconds (at most 8 MiB); dumps after a stall,
    at most once every ``interval`` seconds."""
    os.makedirs(directory, exist_ok=True)
    return aiotrace.FlightRecorder(
        max_bytes=8 << 20,
        min_age=5,
        on_stall=os.path.join(directory, "stall-{n}.trace"),
        on_stall_interval=interval,
    )


def explain(path: str) -> None:
    """Prints each stall in a dump: how long, where, and during which request."""
    from aiotrace import reader

    kind = reader.EventKind
    events = reader.read_events(path)
    begins: dict[object, Event] = {}
    for ev in events:
        if ev.kind in (kind.RANGE_BEGIN, kind.RANGE_ACTIVE):
            if ev.range.name == "loop stall":
                begins[ev.range.scope] = ev
        elif ev.kind is kind.RANGE_END and ev.range.name == "loop stall":
            begin = begins.pop(ev.range.scope, None)
            if begin is not None:
                _explain_one(events, begin, ev)


def _explain_one(events: list[Event], begin: Event, end: Event) -> None:
    from aiotrace import reader

    kind = reader.EventKind
    t0, t1 = begin.time, end.time
    print(f"the loop stalled for {(t1 - t0) / 1e6:.0f} ms")
    lines: dict[str, int] = {}
    for ev in events:
        if ev.kind is kind.STACK_SAMPLE and t0 <= ev.time <= t1 and ev.stack.frames:
            top = ev.stack.frames[0]
            where = f"{os.path.basename(top.file)}:{top.line} in {top.func}"
            lines[where] = lines.get(where, 0) + 1
    for where, n in sorted(lines.items(), key=lambda kv: -kv[1]):
        print(f"  {n} stack samples at {where}")
    paths = {
        ev.log.task: ev.log.message
        for ev in events
        if ev.kind is kind.LOG and ev.log.category == "http.path"
    }
    for ev in events:
        if ev.kind is kind.TASK_BEGIN and t0 <= ev.time <= t1:
            what = paths.get(ev.task.id, "?")
            print(f"  while serving task {ev.task.id} ({ev.task.type} {what})")


def _shows_slow_render(path: str) -> bool:
    """Whether the dump holds a stack sample taken in legacy_render."""
    from aiotrace import reader

    return any(
        ev.kind is reader.EventKind.STACK_SAMPLE
        and ev.stack.frames
        and ev.stack.frames[0].func == legacy_render.__name__
        for ev in reader.read_events(path)
    )


async def self_test(directory: str) -> None:
    """Serves on a free port and loads it until the recorder dumps the slow
    render's stall. (A busy machine can stall the loop elsewhere too: every
    stall is dumped, and the first dump that shows the slow render is the
    one explained.)"""
    recorder = new_recorder(directory, interval=0.01)
    found: list[str] = []
    runner = web.AppRunner(make_app(recorder))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            while not found:
                async with session.get(f"{base}/report") as resp:
                    resp.raise_for_status()

        async def look() -> None:
            seen = 0
            while not found:
                dumps = recorder.stall_dumps
                for path in dumps[seen:]:
                    if await asyncio.to_thread(_shows_slow_render, path):
                        found.append(path)
                        break
                seen = len(dumps)
                await asyncio.sleep(0.01)

        clients = (client() for _ in range(8))
        await asyncio.wait_for(asyncio.gather(look(), *clients), 60)
        while True:  # 503 while a stall dump is being written: ask again
            async with session.get(f"{base}/debug/aiotrace/flight") as resp:
                if resp.status != 503:
                    resp.raise_for_status()
                    snapshot = await resp.read()
                    break
            await asyncio.sleep(0.05)
    await runner.cleanup()
    print(f"the flight endpoint returned a {len(snapshot)}-byte snapshot")
    path = found[0]
    print(f"stall dump: {path}")
    explain(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--dir", default="stalls", help="where stall dumps go")
    p.add_argument("--explain", metavar="TRACE", help="explain a dump and exit")
    p.add_argument("--self-test", metavar="DIR", help="run a demo, dump into DIR")
    args = p.parse_args()
    if args.explain:
        explain(args.explain)
    elif args.self_test:
        asyncio.run(self_test(args.self_test))
    else:
        print(
            f"serving http://127.0.0.1:{args.port}/report; stall dumps go to "
            f"{os.path.abspath(args.dir)}",
            file=sys.stderr,
        )
        app = make_app(new_recorder(args.dir))
        web.run_app(app, host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
