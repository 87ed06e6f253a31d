"""aiotrace for aiohttp servers and clients (extra ``aiotrace[aiohttp]``).

- ``middleware()``: each request is a user task named after its route
  (``"GET /users/{id}"``), with a region around its handler and logs for
  its method, path, status and exception; what the handler spawns belongs
  to the request's task.
- ``trace_config()``: an ``aiohttp.TraceConfig`` that makes each outgoing
  request a region (``"http.client GET host:port/path"``), with its
  connection-queue wait, DNS lookup and connect as nested regions.
- ``add_debug_routes(app)``: ``GET /debug/aiotrace/trace?seconds=N`` streams
  a live trace, ``GET /debug/aiotrace/flight`` returns a flight recorder's
  snapshot; loopback clients only by default, with an optional bearer token.

See docs/aiohttp.md.
"""

from __future__ import annotations

try:
    import aiohttp as _aiohttp  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aiotrace.contrib.aiohttp needs aiohttp 3.9 or later: "
        "pip install 'aiotrace[aiohttp]'"
    ) from _exc

from ._aiohttp_client import trace_config as trace_config
from ._aiohttp_endpoints import add_debug_routes as add_debug_routes
from ._aiohttp_middleware import DEFAULT_TASK_TYPE as DEFAULT_TASK_TYPE
from ._aiohttp_middleware import middleware as middleware
from ._aiohttp_middleware import route_name as route_name

__all__ = (
    "DEFAULT_TASK_TYPE",
    "add_debug_routes",
    "middleware",
    "route_name",
    "trace_config",
)
