"""The debug endpoints: a live trace over HTTP, who may have it, and when."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
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


async def next_trace(
    session: aiohttp.ClientSession, url: str, timeout: float = 20
) -> aiohttp.ClientResponse:
    """GETs ``url`` until it answers something other than 409 (busy)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await session.get(url)
        if r.status != 409:
            return r
        r.release()
        if time.monotonic() > deadline:
            pytest.fail(f"{url} stayed busy")
        await asyncio.sleep(0.01)


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
        rid for t in tasks(events, "GET /fast").values() for rid in t["logs"]["req.id"]
    ]
    # How many fit in 3 s depends on the machine's load (hundreds when idle);
    # 20 clients looping make it more than one round's worth in any case.
    assert len(inside) > 20
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
        async with aiohttp.ClientSession() as session:
            # Busy (409) until the stopped trace has finished stopping.
            r = await next_trace(session, f"{url}/debug/aiotrace/trace?seconds=0.2")
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
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="send_timeout"):
            add(app, send_timeout=bad)
    with pytest.raises(TypeError, match="send_timeout"):
        add(app, send_timeout="1")  # type: ignore[arg-type]
    assert len(app.router.routes()) == 0


async def stuck_client(url: str, path: str, headers: bytes = b"") -> socket.socket:
    """Sends GET ``path`` from a socket on 127.0.0.1 with a tiny receive
    buffer that is never read: a client stuck on a slow link."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(
        sock, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    )
    return sock


def received_all(sock: socket.socket) -> bytes:
    """Reads what ``sock`` gets until the server closes (or resets) it."""
    sock.setblocking(True)
    sock.settimeout(30)
    got = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 16):
            got += chunk
    return bytes(got)


def incomplete(response: bytes) -> bool:
    """Whether an HTTP/1.1 response ``200`` was cut off before its end: a
    chunked body without its last chunk, or a body shorter than its length."""
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    if headers.get(b"transfer-encoding") == b"chunked":
        return not body.endswith(b"\r\n0\r\n\r\n")
    return len(body) < int(headers[b"content-length"])


@pytest.mark.asyncio
async def test_authorization_header_that_is_not_utf8_gets_401() -> None:
    """A bearer token whose bytes are not UTF-8 is refused with 401 and a
    WWW-Authenticate header, not a 500 and a traceback."""
    async with serve(debug_app(token=TOKEN)) as url:
        sock = await stuck_client(
            url,
            "/debug/aiotrace/flight",
            b"Authorization: Bearer \xff\xfe\x80\r\nConnection: close\r\n",
        )
        loop = asyncio.get_running_loop()
        head = await loop.run_in_executor(None, received_all, sock)
        sock.close()
    status_line, _, rest = head.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 401 Unauthorized"
    assert b"WWW-Authenticate: Bearer" in rest
    assert b"not valid UTF-8" in rest


async def log_load(n: int) -> None:
    """Logs ``n`` events of 200 random bytes (that no compression shrinks),
    yielding to the loop now and then."""
    for i in range(n):
        aiotrace.log("load", f"{i} {os.urandom(100).hex()}")
        if i % 1000 == 0:
            await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_a_stuck_trace_client_holds_the_endpoint_then_is_cut_off() -> None:
    """A /trace client that stops reading keeps /trace busy (409) after its
    seconds are over, while its trace is still being sent, so stuck clients
    never pile traces up; after send_timeout it is cut off (its connection
    aborted, an incomplete transfer) and /trace works again."""
    app = web.Application()  # only the debug routes (see the flight test)
    # send_timeout: long enough that the 409 below is asked for well before
    # the stuck client is cut off, however loaded the machine.
    aiotrace_aiohttp.add_debug_routes(app, send_timeout=8)
    async with serve(app) as url:
        with contextlib.closing(
            await stuck_client(url, "/debug/aiotrace/trace?seconds=4")
        ) as sock:
            await wait_for(aiotrace.is_enabled, "the stuck client's trace to start")
            await log_load(50_000)  # about 10 MB: far more than the socket holds
            await wait_for(lambda: not aiotrace.is_enabled(), "its seconds to be over")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/debug/aiotrace/trace?seconds=0.1") as r:
                    assert r.status == 409
                # Free again only once the stuck client is given up on (it still
                # reads nothing: reading would unstick it).
                r = await next_trace(session, f"{url}/debug/aiotrace/trace?seconds=0.1")
                assert r.status == 200
                assert validate(read(await r.read())) == []
                loop = asyncio.get_running_loop()
                got = await loop.run_in_executor(None, received_all, sock)
                assert incomplete(got), "the stuck client was not cut off"


@pytest.mark.asyncio
async def test_stuck_flight_clients_are_bounded_in_number_and_time() -> None:
    """At most MAX_FLIGHT_SENDS snapshots are held for clients that do not
    read: the next /flight gets 503 saying why; after send_timeout the stuck
    ones are cut off, their snapshots freed, and /flight serves a whole
    snapshot again."""
    from aiotrace.contrib._aiohttp_endpoints import MAX_FLIGHT_SENDS

    recorder = aiotrace.FlightRecorder(max_bytes=64 << 20, min_age=60.0)
    recorder.start()
    closing = contextlib.ExitStack()
    try:
        await log_load(50_000)
        # Only the debug routes: the snapshot is validated, and the traced
        # middleware has a known gap on 3.12/3.13 (see docs/aiohttp.md).
        app = web.Application()
        # send_timeout: long enough that every stuck client is still held
        # when the next one is refused, though a loaded machine makes each
        # snapshot slowly.
        aiotrace_aiohttp.add_debug_routes(
            app, flight_recorder=recorder, send_timeout=15
        )
        async with serve(app) as url, aiohttp.ClientSession() as session:
            stuck = [
                closing.enter_context(
                    contextlib.closing(
                        await stuck_client(url, "/debug/aiotrace/flight")
                    )
                )
                for _ in range(MAX_FLIGHT_SENDS)
            ]

            async def refused() -> bool:
                async with session.get(f"{url}/debug/aiotrace/flight") as r:
                    text = (await r.read()).decode(errors="replace")
                    if r.status == 503 and "already on their way" in text:
                        return True
                    assert r.status == 200, text  # a stuck one not held yet
                    return False

            deadline = time.monotonic() + 60
            while not await refused():
                assert time.monotonic() < deadline, "never refused"
            # Served again only once the stuck ones are cut off (they still
            # read nothing: reading would unstick them).
            while True:
                async with session.get(f"{url}/debug/aiotrace/flight") as r:
                    if r.status == 200:
                        body = await r.read()
                        break
                    assert r.status == 503
                assert time.monotonic() < deadline, "never served again"
                await asyncio.sleep(0.05)
            assert len(body) > 5 << 20
            assert validate(read(body)) == []
            loop = asyncio.get_running_loop()
            for sock in stuck:
                got = await loop.run_in_executor(None, received_all, sock)
                assert incomplete(got), "a stuck flight client was not cut off"
    finally:
        closing.close()
        recorder.stop()
