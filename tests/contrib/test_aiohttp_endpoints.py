"""The debug endpoints: a live trace over HTTP, who may have it, and when."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from tracedapp import make_app, non_loopback_address, read, serve, tasks

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp
from aiotrace.reader import validate
from aiotrace.sinks import MemorySink

TOKEN = "s3cret-token-for-tests"


def debug_app(**options: object) -> web.Application:
    app = make_app()
    aiotrace_aiohttp.add_debug_routes(app, **options)  # type: ignore[arg-type]
    return app


async def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Polls ``cond`` without blocking the loop; fails (never hangs)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_live_trace_streams_the_load() -> None:
    """GET /trace?seconds=N streams a valid trace while it runs: bytes come
    before tracing stops, the loop keeps serving, and every request sent and
    answered while tracing was on is one task in it."""
    async with (
        serve(debug_app()) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/debug/aiotrace/trace?seconds=3") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert ".trace" in resp.headers["Content-Disposition"]
        await wait_for(aiotrace.is_enabled, "tracing to start")
        inside: list[str] = []
        sent = 0

        async def client(worker: int) -> None:
            nonlocal sent
            while aiotrace.is_enabled() and sent < 1500:
                sent += 1
                rid = f"{worker}-{sent}"
                async with session.get(
                    f"{url}/fast", headers={"X-Request-Id": rid}
                ) as r:
                    await r.read()
                if aiotrace.is_enabled():
                    inside.append(rid)

        loading = asyncio.gather(*(client(w) for w in range(20)))
        first = await resp.content.readany()
        streaming = aiotrace.is_enabled()
        body = first + await resp.read()
        await loading
    assert first and streaming, "no bytes arrived while the trace ran"
    events = read(body)
    assert validate(events) == []
    logged = [
        rid
        for t in tasks(events, "http.request").values()
        for rid in t["logs"]["req.id"]
    ]
    assert len(inside) > 100
    assert set(inside) <= set(logged)
    assert len(logged) == len(set(logged))


@pytest.mark.asyncio
async def test_one_trace_at_a_time() -> None:
    """A second /trace while one streams gets 409, and so does one while the
    program traces; after both, /trace works again."""
    async with serve(debug_app()) as url, aiohttp.ClientSession() as session:
        first = asyncio.create_task(
            session.get(f"{url}/debug/aiotrace/trace?seconds=1")
        )
        await wait_for(aiotrace.is_enabled, "the first trace to start")
        async with session.get(f"{url}/debug/aiotrace/trace?seconds=1") as resp:
            assert resp.status == 409
            assert "already" in await resp.text()
        async with await first as resp:
            assert resp.status == 200
            assert validate(read(await resp.read())) == []
        sink = MemorySink()
        async with (
            aiotrace.tracing(sink),
            session.get(f"{url}/debug/aiotrace/trace?seconds=1") as resp,
        ):
            assert resp.status == 409
            assert "tracing is already on" in await resp.text()
        async with session.get(f"{url}/debug/aiotrace/trace?seconds=0.2") as resp:
            assert resp.status == 200
            assert validate(read(await resp.read())) == []


@pytest.mark.asyncio
async def test_client_going_away_stops_the_trace() -> None:
    """A client that disconnects mid-trace stops it early, with no warning
    and no error, and the next /trace works."""
    async with serve(debug_app()) as url:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with aiohttp.ClientSession() as session:
                resp = await session.get(f"{url}/debug/aiotrace/trace?seconds=60")
                assert resp.status == 200
                assert await resp.content.readany()
                resp.close()  # drops the connection
            await wait_for(lambda: not aiotrace.is_enabled(), "tracing to stop")
        assert [w for w in caught if w.category is aiotrace.TracingWarning] == []
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/debug/aiotrace/trace?seconds=0.2") as r,
        ):
            assert r.status == 200
            assert validate(read(await r.read())) == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        ("abc", "must be a number"),
        ("0", "must be positive"),
        ("-1", "must be positive"),
        ("nan", "must be positive"),
        ("inf", "must be positive"),
        ("61", "at most 60"),
    ],
)
async def test_bad_seconds_are_refused(seconds: str, message: str) -> None:
    """A bad ?seconds= gets 400 saying what is wrong, and starts nothing."""
    async with (
        serve(debug_app()) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/debug/aiotrace/trace", params={"seconds": seconds}) as resp,
    ):
        assert resp.status == 400
        assert message in await resp.text()
    assert not aiotrace.is_enabled()


@pytest.mark.asyncio
async def test_bearer_token() -> None:
    """With a token: none gives 401 with a Bearer challenge, a wrong one 403,
    the right one the trace; HEAD starts nothing."""
    async with serve(debug_app(token=TOKEN)) as url, aiohttp.ClientSession() as s:
        trace = f"{url}/debug/aiotrace/trace?seconds=0.1"
        async with s.get(trace) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        for wrong in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x"):
            async with s.get(trace, headers={"Authorization": wrong}) as resp:
                assert resp.status in (401, 403), wrong
        async with s.get(trace, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
            assert validate(read(await resp.read())) == []
        async with s.head(trace, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 405
        assert not aiotrace.is_enabled()


@pytest.mark.asyncio
async def test_remote_clients_are_refused_whatever_their_headers() -> None:
    """A client on a non-loopback address gets 403, even with a forged
    X-Forwarded-For and behind a middleware that rewrites request.remote
    from it; a loopback request that came through a proxy gets 403 too."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to test from")

    @web.middleware
    async def trust_forwarded(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            request = request.clone(remote=forwarded)
        return await handler(request)

    app = debug_app()
    app.middlewares.insert(0, trust_forwarded)
    forged = {"X-Forwarded-For": "127.0.0.1"}
    async with serve(app, host=address) as url, aiohttp.ClientSession() as session:
        for headers in ({}, forged):
            async with session.get(
                f"{url}/debug/aiotrace/trace?seconds=0.1", headers=headers
            ) as resp:
                assert resp.status == 403
                assert f"not {address}" in await resp.text()
    async with (
        serve(debug_app()) as url,
        aiohttp.ClientSession() as session,
        session.get(
            f"{url}/debug/aiotrace/trace?seconds=0.1",
            headers={"X-Forwarded-For": "203.0.113.9"},
        ) as resp,
    ):
        assert resp.status == 403
        assert "proxy" in await resp.text()
    assert not aiotrace.is_enabled()


@pytest.mark.asyncio
async def test_allow_remote_with_a_token() -> None:
    """allow_remote=True serves a non-loopback client that has the token."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to test from")
    app = debug_app(allow_remote=True, token=TOKEN)
    async with serve(app, host=address) as url, aiohttp.ClientSession() as session:
        trace = f"{url}/debug/aiotrace/trace?seconds=0.1"
        async with session.get(trace) as resp:
            assert resp.status == 401
        async with session.get(
            trace, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 200
            assert validate(read(await resp.read())) == []


@pytest.mark.asyncio
async def test_flight_without_a_recorder() -> None:
    """/flight without a flight recorder is a 404 that says how to add one."""
    async with (
        serve(debug_app()) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/debug/aiotrace/flight") as resp,
    ):
        assert resp.status == 404
        assert "flight_recorder=" in await resp.text()


def test_bad_options() -> None:
    """Unsafe or malformed options are refused, saying which and why."""
    app = web.Application()
    add = aiotrace_aiohttp.add_debug_routes
    with pytest.raises(ValueError, match="needs a token"):
        add(app, allow_remote=True)
    with pytest.raises(ValueError, match="token"):
        add(app, token="")
    with pytest.raises(TypeError, match="token"):
        add(app, token=b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        add(app, prefix="debug")
    with pytest.raises(ValueError, match="max_seconds"):
        add(app, max_seconds=0)
    with pytest.raises(TypeError, match="flight_recorder"):
        add(app, flight_recorder=object())
    assert len(app.router.routes()) == 0
