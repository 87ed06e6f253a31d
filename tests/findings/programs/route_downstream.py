"""A route whose time goes to a slow downstream service.

The front service (with aiotrace's middleware) has three routes:
GET /orders/{id} calls the downstream's /price (fast) and /inventory
(slow, the culprit); GET /health/{id} calls only /price (a fast route
whose time is all downstream: innocent); GET /users/{id} calls nothing
(fast, innocent). A client drives 30 requests of each. The downstream
service is another aiohttp server on 127.0.0.1, without the middleware.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from aiotrace.contrib import aiohttp as aiotrace_aiohttp

SLOW = 0.3
REQUESTS = 30
CLIENT = web.AppKey("client", aiohttp.ClientSession)
DOWNSTREAM = web.AppKey("downstream", str)


async def inventory(request: web.Request) -> web.Response:
    await asyncio.sleep(SLOW)
    return web.Response(text="12 in stock")


async def price(request: web.Request) -> web.Response:
    await asyncio.sleep(0.002)
    return web.Response(text="9.99")


async def get(request: web.Request, path: str) -> str:
    url = request.app[DOWNSTREAM] + path
    async with request.app[CLIENT].get(url) as resp:
        return await resp.text()


async def order(request: web.Request) -> web.Response:
    cost = await get(request, "/price")
    stock = await get(request, "/inventory")
    return web.Response(text=f"{request.match_info['id']}: {cost}, {stock}")


async def health(request: web.Request) -> web.Response:
    return web.Response(text=await get(request, "/price"))


async def user(request: web.Request) -> web.Response:
    return web.Response(text=f"user {request.match_info['id']}")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def main() -> None:
    down = web.Application()
    down.router.add_get("/inventory", inventory)
    down.router.add_get("/price", price)
    down_runner, down_url = await serve(down)

    front = web.Application(middlewares=[aiotrace_aiohttp.middleware()])
    front[DOWNSTREAM] = down_url
    front.router.add_get("/orders/{id}", order)
    front.router.add_get("/health/{id}", health)
    front.router.add_get("/users/{id}", user)
    async with aiohttp.ClientSession(
        trace_configs=[aiotrace_aiohttp.trace_config()]
    ) as client:
        front[CLIENT] = client
        front_runner, front_url = await serve(front)
        paths = [
            f"/{kind}/{i}"
            for i in range(REQUESTS)
            for kind in ("orders", "health", "users")
        ]
        async with aiohttp.ClientSession() as driver:

            async def fetch(path: str) -> None:
                async with driver.get(front_url + path) as resp:
                    assert resp.status == 200, (path, resp.status)
                    await resp.read()

            for i in range(0, len(paths), 15):
                await asyncio.gather(*(fetch(p) for p in paths[i : i + 15]))
        await front_runner.cleanup()
    await down_runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
