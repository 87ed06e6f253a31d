"""The ASGI service of tests/test_otel_workers.py, run by uvicorn --workers
under `aiotrace run`. Each worker installs the OpenTelemetry SDK, exporting
over OTLP/HTTP to $AIOTRACE_TEST_OTLP, and the aiotrace bridge at start-up;
each request is a SERVER span, and GET /slow blocks the loop on a known line.
At start-up each worker writes ready.<pid> in the working directory."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from aiotrace import _session
from aiotrace.contrib import opentelemetry as aotel

_state: dict[str, Any] = {}


def _sampled(ident: int) -> bool:
    """Whether the stall watchdog has sampled thread ``ident``'s stall 3
    times for the bridge: the blocking line is then the most sampled one.
    White-box, as in tests/contrib/test_otel.py: the stall lasts until seen,
    not for a time. Without the bridge's listener nothing is seen for it, so
    20 samples taken end the stall too (and the test fails, not hangs)."""
    session = _session.current()
    runtime = None if session is None else session.runtime
    watchdog = None if runtime is None else runtime._watchdog
    if watchdog is None:
        return True  # not tracing: nothing would ever sample it
    seen = watchdog.seen.get(ident)
    if seen is not None and sum(n for n, _ in list(seen[1].values())) >= 3:
        return True
    return watchdog._samples.get(ident, 0) >= 20


def _start() -> None:
    resource = Resource.create({"service.name": "otel-workers"})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=os.environ["AIOTRACE_TEST_OTLP"])
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    _state["provider"] = provider
    _state["tracer"] = provider.get_tracer("otel-workers")
    _state["bridge"] = aotel.instrument(provider, metrics=False)
    Path(f"ready.{os.getpid()}").write_text("")


def _stop() -> None:
    _state.pop("bridge").uninstall()
    _state.pop("provider").shutdown()


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            _stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _slow() -> None:
    ident = threading.get_ident()
    while not _sampled(ident):
        time.sleep(0.001)  # PLANTED-STALL
    await asyncio.sleep(0)  # the stall ends here, inside the span


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The service: answers every GET with the worker's pid."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    tracer = _state["tracer"]
    name = f"{scope['method']} {scope['path']}"
    attrs = {"process.pid": os.getpid()}
    with tracer.start_as_current_span(
        name, kind=trace.SpanKind.SERVER, attributes=attrs
    ):
        await asyncio.sleep(0)
        if scope["path"] == "/slow":
            await _slow()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
