"""A route much slower than the others, with no downstream call in it.

GET /report awaits a slow computation (0.2 s) with no region around it:
the culprit. GET /items/{id} does a fast, traced cache lookup (a region)
and GET /search takes 20 ms: both innocent. A client drives 30 requests
of each.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp

REQUESTS = 30


async def build_report() -> str:
    await asyncio.sleep(0.2)
    return "report"


async def report(request: web.Request) -> web.Response:
    return web.Response(text=await build_report())


async def item(request: web.Request) -> web.Response:
    async with aiotrace.region("cache lookup"):
        await asyncio.sleep(0.001)
    return web.Response(text=f"item {request.match_info['id']}")


async def search(request: web.Request) -> web.Response:
    await asyncio.sleep(0.02)
    return web.Response(text="found")


async def main() -> None:
    app = web.Application(middlewares=[aiotrace_aiohttp.middleware()])
    app.router.add_get("/report", report)
    app.router.add_get("/items/{id}", item)
    app.router.add_get("/search", search)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    paths = [p for i in range(REQUESTS) for p in ("/report", f"/items/{i}", "/search")]
    async with aiohttp.ClientSession() as client:

        async def fetch(path: str) -> None:
            async with client.get(url + path) as resp:
                assert resp.status == 200, (path, resp.status)
                await resp.read()

        for i in range(0, len(paths), 15):
            await asyncio.gather(*(fetch(p) for p in paths[i : i + 15]))
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
