"""A slow route: one endpoint waits on a slow downstream service.

Fault: the front service's ``GET /report`` route (handler
``get_report``) calls a downstream service's ``/inventory`` endpoint,
which takes 100 ms to answer, so each ``/report`` request takes over
100 ms. Both services run in this process on 127.0.0.1 (ephemeral
ports); the front one has aiotrace's aiohttp middleware, so each request
is a task named after its route. A client in the same process sends 30
requests, then the program exits.

Culprit: the ``GET /report`` route, ``get_report`` (its downstream call
to ``/inventory``).
Innocents: the ``GET /health`` route, ``get_health``, which answers at
once.

Needs aiohttp (``pip install 'aiotrace[aiohttp]'``). Run it:
``aiotrace run examples/faults/slow_route.py`` then
``aiotrace stats slow_route.trace``.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from aiotrace.contrib import aiohttp as aiotrace_aiohttp

DOWNSTREAM = web.AppKey("downstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def inventory(request: web.Request) -> web.Response:
    await asyncio.sleep(0.1)  # the downstream service is slow
    return web.json_response({"items": 42})


async def get_report(request: web.Request) -> web.Response:
    url = request.app[DOWNSTREAM] + "/inventory"
    async with request.app[SESSION].get(url) as resp:  # fault: a 100 ms call
        stock = await resp.json()
    return web.json_response({"report": stock["items"]})


async def get_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def main() -> None:
    down = web.Application()
    down.router.add_get("/inventory", inventory)
    down_runner, down_url = await serve(down)

    front = web.Application(
        middlewares=[aiotrace_aiohttp.middleware(task_type=aiotrace_aiohttp.route_name)]
    )
    front.router.add_get("/report", get_report)
    front.router.add_get("/health", get_health)
    front[DOWNSTREAM] = down_url
    async with aiohttp.ClientSession() as upstream:
        front[SESSION] = upstream
        front_runner, front_url = await serve(front)
        async with aiohttp.ClientSession() as client:

            async def fetch(path: str) -> int:
                async with client.get(front_url + path) as resp:
                    await resp.read()
                    return resp.status

            for _ in range(10):  # 10 rounds: one /report, two /health
                statuses = await asyncio.gather(
                    fetch("/report"), fetch("/health"), fetch("/health")
                )
                assert all(s == 200 for s in statuses), statuses
        await front_runner.cleanup()
    await down_runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
