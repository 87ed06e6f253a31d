"""The server middleware: one user task per request, under real client load."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from tracedapp import SLOW, Boom, load, make_app, read, serve, tasks

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp
from aiotrace.reader import NO_COROUTINE, EventKind, validate

REQUESTS = 2000


@pytest.mark.asyncio
async def test_one_task_per_request_under_load(tmp_path: Path) -> None:
    """Thousands of concurrent requests each make exactly one task of their
    route's type, GET /fast, with its method, path and status logs, the handler's own
    logs and a closed http.handler region; the trace validates."""
    path = tmp_path / "load.trace"
    async with (
        serve(make_app()) as url,
        aiohttp.ClientSession() as session,
        aiotrace.tracing(path),
    ):
        results = await load(session, [f"{url}/fast"] * REQUESTS, concurrency=50)
    events = read(path)
    assert validate(events) == []
    requests = tasks(events, "GET /fast")
    assert len(requests) == REQUESTS
    seen_ids = []
    for task in requests.values():
        assert len(task["begin"]) == 1 and len(task["end"]) == 1
        assert task["logs"]["http.method"] == ["GET"]
        assert task["logs"]["http.path"] == ["/fast"]
        assert task["logs"]["http.status"] == ["200"]
        seen_ids += task["logs"]["req.id"]
        kinds = [(e.kind, e.region.type) for e in task["regions"]]
        assert kinds == [
            (EventKind.REGION_BEGIN, "http.handler"),
            (EventKind.REGION_END, "http.handler"),
        ]
    assert sorted(seen_ids) == sorted(results)


@pytest.mark.asyncio
async def test_task_latency_agrees_with_the_client(tmp_path: Path) -> None:
    """A slow route's task begins after the client sent the request and ends
    before the client had the response, and lasts at least the handler's
    own sleep, as the handler measured it on the same clock."""
    path = tmp_path / "slow.trace"
    async with (
        serve(make_app()) as url,
        aiohttp.ClientSession() as session,
        aiotrace.tracing(path),
    ):
        results = await load(
            session, [f"{url}/slow"] * 40 + [f"{url}/fast"] * 400, concurrency=20
        )
    requests = tasks(read(path), "GET /slow")
    slow = [t for t in requests.values() if t["logs"]["http.path"] == ["/slow"]]
    assert len(slow) == 40
    for task in slow:
        (rid,) = task["logs"]["req.id"]
        _, client_t0, client_t1 = results[rid]
        begin, end = task["begin"][0].time, task["end"][0].time
        slept_t0, slept_t1 = map(int, task["logs"]["slept"][0].split())
        assert client_t0 <= begin <= slept_t0 < slept_t1 <= end <= client_t1
        assert slept_t1 - slept_t0 >= SLOW * 1e9 * 0.99
        region = [e.time for e in task["regions"]]
        assert begin <= region[0] <= slept_t0 and slept_t1 <= region[1] <= end


@pytest.mark.asyncio
async def test_spawned_work_belongs_to_the_request(tmp_path: Path) -> None:
    """Regions of a coroutine the handler creates, and of a thread it hands
    work to, carry the request's task id; the coroutine is another one."""
    path = tmp_path / "spawn.trace"
    async with (
        serve(make_app()) as url,
        aiohttp.ClientSession() as session,
        aiotrace.tracing(path),
    ):
        await load(session, [f"{url}/spawn"] * 30, concurrency=5)
    events = read(path)
    assert validate(events) == []
    requests = tasks(events, "GET /spawn")
    assert len(requests) == 30
    for task in requests.values():
        by_type: dict[str, list[aiotrace.reader.Event]] = {}
        for ev in task["regions"]:
            by_type.setdefault(ev.region.type, []).append(ev)
        assert set(by_type) == {"http.handler", "child", "worker"}
        handler_coro = by_type["http.handler"][0].coroutine
        child_coro = by_type["child"][0].coroutine
        assert NO_COROUTINE not in (handler_coro, child_coro)
        assert child_coro != handler_coro
        assert by_type["worker"][0].thread != by_type["http.handler"][0].thread


@pytest.mark.xfail(
    sys.version_info[:2] in ((3, 12), (3, 13)),
    reason="the execution tracer does not see asyncio.Task(coro, eager_start=True), "
    "which aiohttp uses for each request on 3.12 and 3.13: the request's first "
    "step is put on the connection's coroutine",
    strict=True,
)
@pytest.mark.asyncio
async def test_a_request_runs_on_its_own_coroutine(tmp_path: Path) -> None:
    """A request that suspends (the slow route) begins and ends its task and
    region on one coroutine, its own, not the connection's."""
    path = tmp_path / "coroutine.trace"
    async with (
        serve(make_app()) as url,
        aiohttp.ClientSession() as session,
        aiotrace.tracing(path),
    ):
        await load(session, [f"{url}/slow"] * 5, concurrency=1)
    requests = tasks(read(path), "GET /slow")
    assert len(requests) == 5
    coroutines = set()
    for task in requests.values():
        (coroutine,) = {
            e.coroutine for e in task["begin"] + task["regions"] + task["end"]
        }
        coroutines.add(coroutine)
    assert len(coroutines) == 5


@pytest.mark.asyncio
async def test_exceptions_are_logged_and_pass_through(tmp_path: Path) -> None:
    """A handler's exception is logged with status 500 and reaches the next
    middleware out as the very same object; an HTTPException is logged as
    its status only."""
    caught: list[BaseException] = []

    @web.middleware
    async def outer(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except Boom as exc:
            caught.append(exc)
            raise

    app = make_app()
    app.middlewares.insert(0, outer)
    raised: list[BaseException] = []

    async def fail(request: web.Request) -> web.Response:
        exc = Boom("boom")
        raised.append(exc)
        raise exc

    app.router.add_get("/fail2", fail)
    path = tmp_path / "fail.trace"
    async with (
        serve(app) as url,
        aiohttp.ClientSession() as session,
        aiotrace.tracing(path),
    ):
        statuses = []
        for route in ("fail2", "limited"):
            async with session.get(f"{url}/{route}") as resp:
                statuses.append(resp.status)
    assert statuses == [500, 429]
    assert caught == raised and caught[0] is raised[0]
    events = read(path)
    assert validate(events) == []
    by_path = {t["logs"]["http.path"][0]: t for t in tasks(events).values()}
    assert by_path["/fail2"]["logs"]["http.exception"] == ["Boom: boom"]
    assert by_path["/fail2"]["logs"]["http.status"] == ["500"]
    assert by_path["/limited"]["logs"]["http.status"] == ["429"]
    assert "http.exception" not in by_path["/limited"]["logs"]
    for task in by_path.values():
        assert [e.kind for e in task["regions"]] == [
            EventKind.REGION_BEGIN,
            EventKind.REGION_END,
        ]


@pytest.mark.asyncio
async def test_task_types_from_routes(tmp_path: Path) -> None:
    """By default (route_name) a task is named after its route: the route's
    name, else the method and the resource's pattern, else http.unmatched."""
    app = web.Application(middlewares=[aiotrace_aiohttp.middleware()])

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/users/{id}", ok)
    app.router.add_get("/named", ok, name="the-named-route")
    path = tmp_path / "types.trace"
    async with (
        serve(app) as url,
        aiohttp.ClientSession() as session,
        aiotrace.tracing(path),
    ):
        for route in ("users/1", "users/2", "named", "nowhere"):
            async with session.get(f"{url}/{route}") as resp:
                await resp.read()
    found = sorted(
        (t["type"], t["logs"]["http.status"][0]) for t in tasks(read(path)).values()
    )
    assert found == [
        ("GET /users/{id}", "200"),
        ("GET /users/{id}", "200"),
        ("http.unmatched", "404"),
        ("the-named-route", "200"),
    ]


@pytest.mark.asyncio
async def test_a_failing_task_type_function_does_not_fail_requests(
    tmp_path: Path,
) -> None:
    """A task_type function that raises or returns a non-string gives the
    default type, a misuse log, and the request is served."""
    answers = iter([ValueError("no name"), 42])

    def bad(request: web.Request) -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    path = tmp_path / "bad.trace"
    async with (
        serve(make_app(task_type=bad)) as url,
        aiohttp.ClientSession() as session,
        aiotrace.tracing(path),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                async with session.get(f"{url}/fast") as resp:
                    assert resp.status == 200
    assert len([w for w in caught if w.category is aiotrace.TracingWarning]) == 2
    requests = tasks(read(path))
    assert [t["type"] for t in requests.values()] == [
        aiotrace_aiohttp.DEFAULT_TASK_TYPE
    ] * 2
    misuse = [m for t in requests.values() for m in t["logs"]["aiotrace/misuse"]]
    assert "raised ValueError: no name" in misuse[0]
    assert "returned int, not str" in misuse[1]


@pytest.mark.asyncio
async def test_tracing_off_passes_requests_through(tmp_path: Path) -> None:
    """With tracing off the middleware only passes requests on: answers are
    the same, and only requests that began while tracing was on are tasks."""
    path = tmp_path / "onoff.trace"
    async with serve(make_app()) as url, aiohttp.ClientSession() as session:
        before = await load(session, [f"{url}/fast"] * 50, concurrency=5)
        async with aiotrace.tracing(path):
            during = await load(session, [f"{url}/fast"] * 7, concurrency=1)
        after = await load(session, [f"{url}/fast"] * 50, concurrency=5)
    assert len(before) == len(after) == 50
    assert len(tasks(read(path), "GET /fast")) == len(during) == 7


@pytest.mark.asyncio
async def test_without_the_handler_region(tmp_path: Path) -> None:
    """region_type=None records the task and its logs, and no region."""
    path = tmp_path / "noregion.trace"
    async with (
        serve(make_app(region_type=None)) as url,
        aiohttp.ClientSession() as session,
        aiotrace.tracing(path),
    ):
        await load(session, [f"{url}/fast"] * 20, concurrency=4)
    requests = tasks(read(path), "GET /fast")
    assert len(requests) == 20
    for task in requests.values():
        assert task["regions"] == []
        assert task["logs"]["http.status"] == ["200"]


def test_bad_options() -> None:
    """Bad options are refused when the middleware is made, saying which."""
    with pytest.raises(TypeError, match="task_type"):
        aiotrace_aiohttp.middleware(task_type=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="region_type"):
        aiotrace_aiohttp.middleware(region_type=3)  # type: ignore[arg-type]
