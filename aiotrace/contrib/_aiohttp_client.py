"""The client TraceConfig: a region per outgoing request, with its phases nested.

aiohttp sends its tracing signals from the coroutine that made the request,
except the DNS lookup's, which come from the connector's resolver task when
the DNS cache is on (the default). A region must end in the coroutine that
began it, so each open region remembers the asyncio task that began it, and
a request that fails ends only the ones its own coroutine began: a lookup
still running in the resolver task ends there when it is done.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Final

import aiohttp
from yarl import URL

import aiotrace

from ._aiohttp_middleware import _describe

QUEUE: Final = "http.client.queue"
DNS: Final = "http.client.dns"
CONNECT: Final = "http.client.connect"

RegionType = str | Callable[[str, URL], str]

# The per-request state lives on aiohttp's trace_config_ctx, under this name.
_STATE: Final = "_aiotrace"


class _Request:
    """_Request is one outgoing request's open regions.

    Invariant: ``nested`` lists the phase regions begun and not yet ended,
    innermost last, each with the phase and the asyncio task that began it.
    Once ``done``, only the resolver task's lookup may still be open.
    """

    __slots__ = ("done", "nested", "region")

    def __init__(self, region: aiotrace.Region) -> None:
        self.region = region
        self.done = False
        self.nested: list[tuple[str, aiotrace.Region, asyncio.Task[object] | None]] = []

    def begin(self, phase: str) -> None:
        if not self.done:
            self.nested.append((phase, aiotrace.start_region(phase), _running_task()))

    def end(self, phase: str) -> None:
        for i in range(len(self.nested) - 1, -1, -1):
            if self.nested[i][0] == phase:
                _, region, _ = self.nested.pop(i)
                region.end()
                return

    def finish(self) -> None:
        """Ends what this coroutine began, innermost first, then the request.

        A lookup open in the resolver task stays listed: its end comes later.
        """
        self.done = True
        me = _running_task()
        for _, region, owner in reversed(self.nested):
            if owner is me:
                region.end()
        self.nested = [entry for entry in self.nested if entry[2] is not me]
        self.region.end()


def _running_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


# A path segment that is an id (a number, a UUID, a long hex digest): the
# default region type shows it as {id}, so that requests to one endpoint
# share a region type and the number of types stays bounded.
_ID_SEGMENT: Final = re.compile(
    r"\d+|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{12}|[0-9a-fA-F]{16,}"
)


def _default_region_type(method: str, url: URL) -> str:
    """``http.client GET host:port/path``: the request's method, where it
    goes and its path (ids in it as ``{id}``), without query, fragment or
    credentials."""
    host = url.host or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = url.port
    where = f"{host}:{port}" if port is not None else host
    path = "/".join(
        "{id}" if _ID_SEGMENT.fullmatch(seg) else seg for seg in url.path.split("/")
    )
    return f"http.client {method} {where}{path}"


def trace_config(
    *, region_type: RegionType = _default_region_type
) -> aiohttp.TraceConfig:
    """Returns an ``aiohttp.TraceConfig`` that records each request as a region.

    ``aiohttp.ClientSession(trace_configs=[trace_config()])``: while tracing
    is on, each request is a region (by default
    ``"http.client GET host:port/path"``, such as
    ``"http.client GET 127.0.0.1:8081/prices/{id}"`` for ``/prices/17``:
    a path segment that is a number, a UUID or a long hex digest is
    ``{id}``;
    ``region_type`` may be a string or a function of the method and the
    ``yarl.URL``) under the current task, from the call until the response's
    headers arrive, with the wait for a free connection
    (``http.client.queue``), the DNS lookup (``http.client.dns``) and the
    connect (``http.client.connect``, TLS included) as nested regions. It
    logs ``http.client.url`` (without query or credentials),
    ``http.client.status``, or ``http.client.exception`` if the request
    failed. Regions end on failure and cancellation too.

    Raises:
        TypeError: ``region_type`` is neither a string nor callable.
    """
    type_of: Callable[[str, URL], str]
    if isinstance(region_type, str):
        fixed = region_type

        def type_of(method: str, url: URL) -> str:
            return fixed

    elif callable(region_type):
        type_of = region_type
    else:
        raise TypeError(
            "aiotrace: trace_config(region_type=...) must be a str or a function "
            f"of (method, url) returning one, got {type(region_type).__name__}"
        )

    config = aiohttp.TraceConfig()

    async def on_request_start(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if not aiotrace.is_enabled():
            return
        try:
            name = type_of(params.method, params.url)
            if not isinstance(name, str):
                raise TypeError(f"it returned {type(name).__name__}, not str")
        except Exception as exc:  # the request must go on regardless
            aiotrace.log("aiotrace/misuse", f"trace_config region_type: {exc}")
            name = _default_region_type(params.method, params.url)
        setattr(ctx, _STATE, _Request(aiotrace.start_region(name)))
        aiotrace.log("http.client.url", _public_url(params.url))

    async def on_request_end(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        req: _Request | None = getattr(ctx, _STATE, None)
        if req is not None and not req.done:
            aiotrace.log("http.client.status", str(params.response.status))
            req.finish()

    async def on_request_exception(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        req: _Request | None = getattr(ctx, _STATE, None)
        if req is not None and not req.done:
            aiotrace.log("http.client.exception", _describe(params.exception))
            req.finish()

    def phase(name: str, begin: bool) -> Callable[..., object]:
        async def signal(
            session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object
        ) -> None:
            req: _Request | None = getattr(ctx, _STATE, None)
            if req is not None:
                if begin:
                    req.begin(name)
                else:
                    req.end(name)

        signal.__qualname__ = f"{'begin' if begin else 'end'} {name}"
        return signal

    config.on_request_start.append(on_request_start)
    config.on_request_end.append(on_request_end)
    config.on_request_exception.append(on_request_exception)
    config.on_connection_queued_start.append(phase(QUEUE, True))  # type: ignore[arg-type]
    config.on_connection_queued_end.append(phase(QUEUE, False))  # type: ignore[arg-type]
    config.on_dns_resolvehost_start.append(phase(DNS, True))  # type: ignore[arg-type]
    config.on_dns_resolvehost_end.append(phase(DNS, False))  # type: ignore[arg-type]
    config.on_connection_create_start.append(phase(CONNECT, True))  # type: ignore[arg-type]
    config.on_connection_create_end.append(phase(CONNECT, False))  # type: ignore[arg-type]
    return config


def _public_url(url: URL) -> str:
    """Returns ``url`` without its query, fragment and credentials."""
    try:
        return str(url.with_user(None).with_query(None).with_fragment(None))
    except Exception:  # a relative or odd URL: say only what is safe
        return f"{url.scheme}://{url.host}" if url.host else "?"
