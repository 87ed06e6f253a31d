"""An aiohttp service with aiotrace's middleware, on an inherited socket.

    python aiohttp_service.py FD [--flight]

Its handlers answer at once, sleep, fan out to child tasks, queue work for
a consumer task and hand a computation to a thread; the middleware makes
each request a task. It stops on SIGINT, as `web.run_app` does.

With ``--flight`` it also keeps an always-on flight recorder of 512 KiB,
served at /debug/aiotrace/flight, as a service would to catch its own
stalls. A flight recorder asks for generations of 64 KiB, and the whole
recording, including `aiotrace run`'s trace, is then cut that often.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator

from aiohttp import web

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp

QUEUE: web.AppKey[asyncio.Queue[asyncio.Future[int]]] = web.AppKey("queue")


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def aiohttp_child(n: int) -> int:
    await asyncio.sleep(0.001)
    return n + 1


async def work(request: web.Request) -> web.Response:
    total = sum(await asyncio.gather(*(aiohttp_child(n) for n in range(3))))
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    await request.app[QUEUE].put(done)
    total += await done
    total += await asyncio.to_thread(sum, range(100))
    return web.json_response({"total": total})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(0.005)
    return web.Response(text="slow")


async def consumer(queue: asyncio.Queue[asyncio.Future[int]]) -> None:
    while True:
        fut = await queue.get()
        if not fut.done():
            fut.set_result(1)


async def run_consumer(app: web.Application) -> AsyncIterator[None]:
    queue: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue()
    app[QUEUE] = queue
    task = asyncio.create_task(consumer(queue))
    yield
    task.cancel()


def make_app(flight: bool) -> web.Application:
    app = web.Application(middlewares=[aiotrace_aiohttp.middleware()])
    if flight:
        recorder = aiotrace.FlightRecorder(max_bytes=512 << 10)
        recorder.start()
        aiotrace_aiohttp.add_debug_routes(app, flight_recorder=recorder)

        async def stop_recorder(app: web.Application) -> None:
            recorder.stop()

        app.on_cleanup.append(stop_recorder)
    app.router.add_get("/", hello)
    app.router.add_get("/work", work)
    app.router.add_get("/slow", slow)
    app.cleanup_ctx.append(run_consumer)
    return app


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    app = make_app("--flight" in sys.argv[2:])
    web.run_app(app, sock=sock, print=None, shutdown_timeout=5)


if __name__ == "__main__":
    main()
