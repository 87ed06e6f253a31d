"""A route that blocks the loop makes another route look slow.

GET /export blocks the event loop for 0.1 s (time.sleep: the culprit, for
the blocking rule); GET /status awaits 5 ms, and its requests that run
beside an export wait for the loop too (innocent: slow only because the
loop was held); GET /ping answers at once. A client sends 30 rounds of
one /export, two /status and two /ping, all at once.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from aiotrace.contrib import aiohttp as aiotrace_aiohttp

ROUNDS = 30


async def export(request: web.Request) -> web.Response:
    await asyncio.sleep(0)
    time.sleep(0.1)
    return web.Response(text="exported")


async def status(request: web.Request) -> web.Response:
    await asyncio.sleep(0.005)
    return web.Response(text="up")


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong")


async def main() -> None:
    app = web.Application(middlewares=[aiotrace_aiohttp.middleware()])
    app.router.add_get("/export", export)
    app.router.add_get("/status", status)
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as client:

        async def fetch(path: str) -> None:
            async with client.get(url + path) as resp:
                assert resp.status == 200, (path, resp.status)
                await resp.read()

        for _ in range(ROUNDS):
            paths = ("/status", "/ping", "/export", "/status", "/ping")
            await asyncio.gather(*(fetch(p) for p in paths))
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
