"""An aiohttp service annotated with aiotrace, with the live trace endpoint.

Each request is a user task named after its route (``GET /orders/{id}``);
the handler's steps are regions, the work it spawns (a coroutine, a
thread, an outgoing HTTP request) belongs to the request's task, and the
outgoing request's connect and DNS lookup are regions too. Nothing is
recorded until someone asks for a trace.

Run the service (needs ``pip install 'aiotrace[aiohttp]'``)::

    python examples/aiohttp_server.py --port 8080

Put some load on it, from another shell::

    for i in $(seq 200); do curl -s localhost:8080/orders/$i >/dev/null; done
    # or: wrk -c 20 -d 10s http://127.0.0.1:8080/orders/42

and, meanwhile, take a 5-second trace of the live service and look at it::

    curl -o live.trace 'http://127.0.0.1:8080/debug/aiotrace/trace?seconds=5'
    aiotrace dump live.trace | grep -E 'TASK|REGION' | head

The endpoint answers loopback clients only; ``--token T`` also requires
``curl -H 'Authorization: Bearer T' ...``.

``python examples/aiohttp_server.py --self-test live.trace`` does all of
this by itself: it serves on a free port, loads it from a client, saves a
live trace and prints what the trace holds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp

CLIENT = web.AppKey("client", aiohttp.ClientSession)


def checksum(order_id: str) -> str:
    """CPU work, handed to a thread: its region belongs to the request."""
    with aiotrace.region("checksum"):
        return hashlib.sha256(order_id.encode() * 1000).hexdigest()[:12]


@aiotrace.region("load order")
async def load_order(order_id: str) -> dict[str, str]:
    await asyncio.sleep(0.002)  # a database query
    return {"id": order_id, "item": "cappuccino"}


async def price_of(request: web.Request, order_id: str) -> str:
    """An outgoing request (to this same service): a region with the
    connection's phases nested in it."""
    base = f"http://127.0.0.1:{request.url.port}"
    async with request.app[CLIENT].get(f"{base}/prices/{order_id}") as resp:
        return await resp.text()


async def order(request: web.Request) -> web.Response:
    order_id = request.match_info["id"]
    aiotrace.log("order.id", order_id)
    found = await load_order(order_id)
    async with asyncio.TaskGroup() as tg:  # both coroutines join the task
        price = tg.create_task(price_of(request, order_id))
        digest = tg.create_task(asyncio.to_thread(checksum, order_id))
    return web.json_response(
        {**found, "price": price.result(), "checksum": digest.result()}
    )


async def prices(request: web.Request) -> web.Response:
    await asyncio.sleep(0.001)
    return web.Response(text=f"{len(request.match_info['id']) * 1.5:.2f}")


def make_app(token: str | None = None) -> web.Application:
    """Returns the service: middleware first, then the routes."""
    app = web.Application(
        middlewares=[aiotrace_aiohttp.middleware(task_type=aiotrace_aiohttp.route_name)]
    )
    app.router.add_get("/orders/{id}", order)
    app.router.add_get("/prices/{id}", prices)
    aiotrace_aiohttp.add_debug_routes(app, token=token)

    async def client(app: web.Application) -> AsyncIterator[None]:
        trace_configs = [aiotrace_aiohttp.trace_config()]
        async with aiohttp.ClientSession(trace_configs=trace_configs) as session:
            app[CLIENT] = session
            yield

    app.cleanup_ctx.append(client)
    return app


async def self_test(out: str) -> None:
    """Serves on a free port, loads it, saves a 2-second live trace to ``out``."""
    runner = web.AppRunner(make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as session:

        async def get_trace() -> bytes:
            url = f"{base}/debug/aiotrace/trace?seconds=2"
            async with session.get(url) as resp:
                resp.raise_for_status()
                return await resp.read()

        tracing = asyncio.create_task(get_trace())
        while not aiotrace.is_enabled():  # the trace has started
            await asyncio.sleep(0.01)
        n = 0
        while not tracing.done():
            async with session.get(f"{base}/orders/{n}") as resp:
                resp.raise_for_status()
            n += 1
        data = await tracing
    await runner.cleanup()
    with open(out, "wb") as f:
        f.write(data)
    print(f"{n} requests served; a {len(data)}-byte live trace saved to {out}")

    from aiotrace import reader

    events = reader.read_events(out)
    tasks = Counter(
        e.task.type for e in events if e.kind is reader.EventKind.TASK_BEGIN
    )
    regions = Counter(
        e.region.type for e in events if e.kind is reader.EventKind.REGION_BEGIN
    )
    print(f"tasks: {dict(tasks)}")
    print(f"regions: {dict(regions)}")
    print(f"problems: {reader.validate(events)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN'")
    p.add_argument("--self-test", metavar="OUT", help="run a demo, save its trace")
    args = p.parse_args()
    if args.self_test:
        asyncio.run(self_test(args.self_test))
        return 0
    print(
        f"serving on http://{args.host}:{args.port}/orders/42; live trace at "
        f"http://{args.host}:{args.port}/debug/aiotrace/trace?seconds=5",
        file=sys.stderr,
    )
    web.run_app(make_app(args.token), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
