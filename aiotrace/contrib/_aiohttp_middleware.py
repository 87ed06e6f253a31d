"""The server middleware: one user task per request, a region around its handler."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

import aiotrace

DEFAULT_TASK_TYPE: Final = "http.request"
"""The task type of a request whose ``task_type`` function failed.

``middleware(task_type=DEFAULT_TASK_TYPE)`` gives every request this one
type, as ``middleware()`` did before it named tasks after routes.
"""

_UNMATCHED: Final = "http.unmatched"
_MISUSE: Final = "aiotrace/misuse"
_MAX_MESSAGE: Final = 500

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TaskType = str | Callable[[web.Request], str]


def route_name(request: web.Request) -> str:
    """Returns a task type for ``request`` from the route it matched.

    It is ``middleware()``'s default ``task_type``. A named route gives its
    name; an unnamed one gives the method and the resource's canonical path,
    such as ``"GET /users/{id}"`` (the pattern, not the path, so the number
    of task types stays bounded); a request that matched no route (404, 405)
    gives ``"http.unmatched"``.
    """
    route = request.match_info.route
    if route.name:
        return route.name
    resource = route.resource
    if resource is None:
        return _UNMATCHED
    return f"{request.method} {resource.canonical}"


def middleware(
    *,
    task_type: TaskType = route_name,
    region_type: str | None = "http.handler",
) -> Middleware:
    """Returns an aiohttp middleware that makes each request a user task.

    While tracing is on, each request is a task of ``task_type``: by default
    ``route_name``, the request's route (``"GET /users/{id}"``), so that
    latency is told per route; a string gives every request that one type
    (such as ``DEFAULT_TASK_TYPE``, ``"http.request"``); any other
    function of the request returns the type. Each task has logs
    ``http.method``, ``http.path`` and ``http.status`` (for an
    ``HTTPException``, its status; for any other exception, 500 as aiohttp
    answers, and ``http.exception``), and a region of ``region_type`` around
    the rest of the chain and the handler (``region_type=None`` leaves it
    out: two events fewer per request, and the task still spans the
    handler). The task is current while the handler runs, so the coroutines
    and threads it spawns, and their regions and logs, belong to it.
    Exceptions pass through untouched.

    The task's latency covers the middleware chain and the handler only:
    from when aiohttp calls the middleware to when the handler returns. It
    leaves out the time before (the request waiting on a busy loop, parsing)
    and after (writing the response), which aiohttp does not let a
    middleware time; under load that is most of what clients see. The
    loop's lag and aiohttp's coroutines' scheduler wait show it.

    With tracing off it only checks ``aiotrace.is_enabled()``. A request
    that began before tracing started is not a task. Put it first in
    ``middlewares=[...]`` so that the task covers the other middlewares.

    Raises:
        TypeError: ``task_type`` is neither a string nor callable, or
            ``region_type`` is neither a string nor None.
    """
    if region_type is not None and not isinstance(region_type, str):
        raise TypeError(
            "aiotrace: middleware(region_type=...) must be a str or None, "
            f"got {type(region_type).__name__}"
        )
    fixed: str | None
    if isinstance(task_type, str):
        fixed = task_type
        type_of: Callable[[web.Request], str] = _never
    elif callable(task_type):
        fixed = None
        type_of = task_type
    else:
        raise TypeError(
            "aiotrace: middleware(task_type=...) must be a str or a function of "
            f"the request returning one, got {type(task_type).__name__}"
        )

    is_enabled = aiotrace.is_enabled
    new_task = aiotrace.new_task
    start_region = aiotrace.start_region if region_type is not None else _no_region
    log = aiotrace.log
    http_exception = web.HTTPException

    @web.middleware
    async def aiotrace_middleware(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if not is_enabled():
            return await handler(request)
        problem = None
        if fixed is not None:
            name = fixed
        else:
            name, problem = _task_type(type_of, request)
        with new_task(name):
            if problem is not None:
                _misuse(problem)
            log("http.method", request.method)
            log("http.path", request.path)
            region = start_region(region_type)  # type: ignore[arg-type]
            try:
                response = await handler(request)
            except http_exception as exc:
                region.end()
                log("http.status", str(exc.status))
                raise
            except BaseException as exc:
                region.end()
                log("http.exception", _describe(exc))
                if isinstance(exc, Exception):
                    log("http.status", "500")  # what aiohttp answers
                raise
            region.end()
            log("http.status", str(response.status))
            return response

    return aiotrace_middleware


class _NoRegion:
    """_NoRegion stands for the handler's region when there is none."""

    __slots__ = ()

    def end(self) -> None:
        """Does nothing."""


_NO_REGION: Final = _NoRegion()


def _no_region(type: str | None) -> _NoRegion:
    return _NO_REGION


def _never(request: web.Request) -> str:
    raise AssertionError("unreachable: the task type is fixed")


def _task_type(
    type_of: Callable[[web.Request], str], request: web.Request
) -> tuple[str, str | None]:
    """Calls the user's task-type function; returns the type and any problem.

    Its failure must not fail the request: the request gets the default type.
    """
    try:
        name = type_of(request)
    except Exception as exc:
        problem = f"raised {_describe(exc)}"
    else:
        if isinstance(name, str):
            return name, None
        problem = f"returned {type(name).__name__}, not str"
    return DEFAULT_TASK_TYPE, (
        f"middleware task_type function {getattr(type_of, '__qualname__', type_of)!r} "
        f"{problem}; the request's task type is {DEFAULT_TASK_TYPE!r}"
    )


def _misuse(message: str) -> None:
    """Records misuse in the trace and warns, as aiotrace's own misuse is."""
    aiotrace.log(_MISUSE, message)
    # With warnings as errors this would raise into the request.
    with contextlib.suppress(Exception):
        warnings.warn(f"aiotrace: {message}", aiotrace.TracingWarning, stacklevel=2)


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__qualname__}: {exc}"
    except Exception:  # a broken __str__ must not break the request
        text = f"{type(exc).__qualname__} (str() failed)"
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text
