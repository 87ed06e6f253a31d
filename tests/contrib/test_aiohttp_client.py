"""The client TraceConfig: a region per request, its phases nested in it."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from tracedapp import make_app, read, serve

import aiotrace
from aiotrace.contrib import aiohttp as aiotrace_aiohttp
from aiotrace.reader import Event, EventKind, validate

QUEUE, DNS, CONNECT = "http.client.queue", "http.client.dns", "http.client.connect"


def intervals(events: list[Event]) -> list[tuple[str, int, int, int, int]]:
    """Returns (type, task, begin, end, coroutine) of every client region."""
    open_: dict[tuple[str, int, int], list[int]] = {}
    out = []
    for ev in events:
        if ev.kind not in (EventKind.REGION_BEGIN, EventKind.REGION_END):
            continue
        if ev.region.type == "http.handler":  # the server side
            continue
        key = (ev.region.type, ev.region.task, ev.coroutine)
        if ev.kind is EventKind.REGION_BEGIN:
            open_.setdefault(key, []).append(ev.time)
        else:
            begin = open_[key].pop()
            out.append((ev.region.type, ev.region.task, begin, ev.time, ev.coroutine))
    assert not any(open_.values()), f"regions left open: {open_}"
    return sorted(out, key=lambda r: r[2])


def logs(events: list[Event], category: str) -> list[str]:
    return [
        e.log.message
        for e in events
        if e.kind is EventKind.LOG and e.log.category == category
    ]


async def two_requests(
    path: Path, *, runtime_events: bool, use_dns_cache: bool
) -> tuple[list[Event], str, int]:
    """Makes two concurrent requests to "localhost" (/slow, then /fast)
    through a one-connection pool, under a task "job"; returns the trace,
    the port and the job's id. Without the execution tracer, the requests'
    regions are told apart by type: "GET /slow" and "GET /fast"."""
    async with serve(make_app()) as url:
        port = url.rsplit(":", 1)[1]
        connector = aiohttp.TCPConnector(limit=1, use_dns_cache=use_dns_cache)
        config = (
            aiotrace_aiohttp.trace_config()
            if runtime_events
            else aiotrace_aiohttp.trace_config(
                region_type=lambda method, url: f"{method} {url.path}"
            )
        )
        async with (
            aiohttp.ClientSession(
                connector=connector, trace_configs=[config]
            ) as session,
            aiotrace.tracing(path, runtime_events=runtime_events),
        ):

            async def fetch(route: str) -> int:
                async with session.get(
                    f"http://localhost:{port}/{route}?secret=1"
                ) as resp:
                    await resp.read()
                    return resp.status

            with aiotrace.new_task("job") as job:
                statuses = await asyncio.gather(fetch("slow"), fetch("fast"))
    assert statuses == [200, 200]
    return read(path), port, job.id


def check_nesting(events: list[Event], port: str, job_id: int) -> None:
    """The first request's DNS lookup and connect, and the second's wait for
    the connection, are regions inside their request's region, under the
    task that made the requests; status and URL (no query) are logged."""
    regions = intervals(events)
    names = (
        f"http.client GET localhost:{port}/slow",
        f"http.client GET localhost:{port}/fast",
        "GET /slow",
        "GET /fast",
    )
    requests = [r for r in regions if r[0] in names]
    assert len(requests) == 2
    assert all(r[1] == job_id for r in regions)
    first, second = requests
    phases = {r[0]: r for r in regions if r[0] in (QUEUE, DNS, CONNECT)}
    assert set(phases) == {QUEUE, DNS, CONNECT}
    # The lookup and the connect are the first request's; the wait, the second's.
    assert first[2] <= phases[CONNECT][2] <= phases[CONNECT][3] <= first[3]
    assert phases[CONNECT][2] <= phases[DNS][2] <= phases[DNS][3] <= phases[CONNECT][3]
    assert second[2] <= phases[QUEUE][2] <= phases[QUEUE][3] <= second[3]
    assert logs(events, "http.client.status") == ["200", "200"]
    assert sorted(logs(events, "http.client.url")) == [
        f"http://localhost:{port}/fast",
        f"http://localhost:{port}/slow",
    ]


@pytest.mark.asyncio
async def test_phases_nest_in_the_request(tmp_path: Path) -> None:
    """With aiohttp's defaults (the DNS lookup runs in the connector's
    resolver task), the phases nest in their requests; annotations only."""
    events, port, job_id = await two_requests(
        tmp_path / "client.trace", runtime_events=False, use_dns_cache=True
    )
    assert validate(events) == []
    check_nesting(events, port, job_id)


@pytest.mark.asyncio
async def test_phases_run_in_the_requesting_coroutine(tmp_path: Path) -> None:
    """Without the DNS cache, every phase runs in the requesting coroutine:
    with the execution tracer, the regions nest in that coroutine."""
    events, port, job_id = await two_requests(
        tmp_path / "client.trace", runtime_events=True, use_dns_cache=False
    )
    assert validate(events) == []
    check_nesting(events, port, job_id)
    regions = intervals(events)
    first = next(r for r in regions if r[0] == f"http.client GET localhost:{port}/slow")
    for phase in (DNS, CONNECT):
        assert next(r for r in regions if r[0] == phase)[4] == first[4]


@pytest.mark.xfail(
    sys.version_info[:2] in ((3, 12), (3, 13)),
    reason="the execution tracer does not see asyncio.Task(coro, eager_start=True), "
    "which aiohttp uses for its resolver task on 3.12 and 3.13: the lookup's "
    "first step is put on the requesting coroutine",
    strict=True,
)
@pytest.mark.asyncio
async def test_resolver_task_regions_validate(tmp_path: Path) -> None:
    """With aiohttp's defaults and the execution tracer, the lookup's region
    is in the resolver task, and the trace validates."""
    events, port, job_id = await two_requests(
        tmp_path / "client.trace", runtime_events=True, use_dns_cache=True
    )
    assert validate(events) == []
    check_nesting(events, port, job_id)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_regions_end_when_the_request_fails(tmp_path: Path) -> None:
    """A refused connection and a timed-out request end their regions (the
    connect region too), log the exception, and the trace validates."""
    path = tmp_path / "fail.trace"
    async with (
        serve(make_app()) as url,
        aiohttp.ClientSession(
            trace_configs=[aiotrace_aiohttp.trace_config(region_type="out")]
        ) as session,
        aiotrace.tracing(path),
    ):
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"http://127.0.0.1:{closed_port()}/")
        with pytest.raises(asyncio.TimeoutError):
            await session.get(f"{url}/slow", timeout=aiohttp.ClientTimeout(total=0.005))
    events = read(path)
    assert validate(events) == []
    regions = [(r[0], r[2], r[3]) for r in intervals(events)]
    assert [r[0] for r in regions].count("out") == 2
    assert [r[0] for r in regions].count(CONNECT) == 2
    refused = next(r for r in regions if r[0] == "out")
    connect = next(r for r in regions if r[0] == CONNECT)
    assert refused[1] <= connect[1] <= connect[2] <= refused[2]
    errors = logs(events, "http.client.exception")
    assert len(errors) == 2
    assert errors[0].startswith("ClientConnectorError")
    assert "Timeout" in errors[1]
    assert logs(events, "http.client.status") == []


@pytest.mark.asyncio
async def test_region_type_function_and_tracing_off(tmp_path: Path) -> None:
    """region_type may be a function of method and URL; requests made with
    tracing off record nothing and still succeed."""
    path = tmp_path / "named.trace"
    config = aiotrace_aiohttp.trace_config(
        region_type=lambda method, url: f"{method} {url.path}"
    )
    async with (
        serve(make_app()) as url,
        aiohttp.ClientSession(trace_configs=[config]) as session,
    ):
        async with session.get(f"{url}/fast") as resp:
            assert resp.status == 200
        async with aiotrace.tracing(path), session.get(f"{url}/fast") as resp:
            assert resp.status == 200
        async with session.get(f"{url}/fast") as resp:
            assert resp.status == 200
    events = read(path)
    assert [r[0] for r in intervals(events)] == ["GET /fast"]


def test_bad_region_type() -> None:
    """A region_type that is neither a string nor callable is refused."""
    with pytest.raises(TypeError, match="region_type"):
        aiotrace_aiohttp.trace_config(region_type=1)  # type: ignore[arg-type]
