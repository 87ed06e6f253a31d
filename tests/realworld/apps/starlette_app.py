"""A small Starlette application, served by uvicorn in the tests on real programs.

Its routes do what web handlers do: answer at once, await a sleep, fan out
to child tasks, take a lock, and open a region of the program's own (a
no-op when tracing is off). Nothing in it knows it is being traced except
the region, which is how a user would annotate a handler.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import aiotrace

_lock = asyncio.Lock()


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def starlette_child(n: int) -> int:
    await asyncio.sleep(0)
    return n * n


async def work(request: Request) -> JSONResponse:
    with aiotrace.region("app.work"):
        aiotrace.log("app.path", request.url.path)
        squares = await asyncio.gather(*(starlette_child(n) for n in range(3)))
        async with _lock:
            await asyncio.sleep(0.001)
    return JSONResponse({"squares": squares})


app = Starlette(routes=[Route("/", hello), Route("/work", work)])
