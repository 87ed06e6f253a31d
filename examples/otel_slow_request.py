"""A slow request, from its OpenTelemetry span to the line that stalled it.

Run: ``python examples/otel_slow_request.py [-o DIR]`` (needs
``aiotrace[opentelemetry]``; OpenTelemetry's aiohttp server instrumentation
is used when installed).

Serves an aiohttp app on 127.0.0.1 under the OpenTelemetry SDK with aiotrace's
bridge installed, requests ``/report`` once, and prints every finished span
with its aiotrace events, the way a tracing backend (Jaeger, Tempo) shows
them. The execution trace goes to ``DIR/otel.trace`` (default: the current
directory). Set ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``http://localhost:4318``
for a local Jaeger) to also export the spans over OTLP/HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import aiotrace
from aiotrace.contrib import opentelemetry as aiotrace_otel

tracer = trace.get_tracer("report-service")


def render_rows(rows: list[int]) -> str:
    time.sleep(0.3)  # a blocking call in async code: the loop stalls here
    return ",".join(map(str, rows))


async def report(request: web.Request) -> web.Response:
    with tracer.start_as_current_span("load rows"):
        await asyncio.sleep(0.1)  # stands for a database query
        rows = list(range(10))
    with tracer.start_as_current_span("render"):
        body = render_rows(rows)
    return web.Response(text=body)


@web.middleware
async def server_spans(request: web.Request, handler: Any) -> web.StreamResponse:
    """A SERVER span per request, for when OpenTelemetry's aiohttp server
    instrumentation is not installed."""
    name = f"{request.method} {request.path}"
    with tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER):
        response: web.StreamResponse = await handler(request)
        return response


def make_app() -> web.Application:
    try:
        from opentelemetry.instrumentation.aiohttp_server import (
            AioHttpServerInstrumentor,
        )
    except ImportError:
        app = web.Application(middlewares=[server_spans])
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            AioHttpServerInstrumentor().instrument()
            app = web.Application()
    app.router.add_get("/report", report)
    return app


async def main() -> None:
    runner = web.AppRunner(make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/report") as resp,
    ):
        await resp.text()
    await runner.cleanup()


def show(spans: list[Any]) -> None:
    """Prints the spans as a backend's trace view: root first, then children."""
    by_parent: dict[int | None, list[Any]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent else None
        by_parent.setdefault(parent, []).append(span)

    def walk(parent: int | None, depth: int) -> None:
        pad = "  " * depth
        for span in sorted(by_parent.get(parent, []), key=lambda s: s.start_time):
            ms = (span.end_time - span.start_time) / 1e6
            ctx = span.context
            print(
                f"{pad}{span.name}  {ms:.1f} ms  "
                f"trace_id={ctx.trace_id:032x} span_id={ctx.span_id:016x}"
            )
            for ev in span.events:
                a = dict(ev.attributes)
                line = f"{pad}  * {ev.name} {a['aiotrace.duration_s']:.3f} s"
                if "aiotrace.reason" in a:
                    line += f" reason={a['aiotrace.reason']}"
                if "code.function" in a:
                    path = os.path.relpath(a["code.filepath"])
                    line += f" at {a['code.function']} {path}:{a['code.lineno']}"
                print(line)
            walk(ctx.span_id, depth + 1)

    walk(None, 0)


def run(out: Path) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "report"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    bridge = aiotrace_otel.instrument(provider, wait_threshold=0.05)
    try:
        with aiotrace.tracing(out / "otel.trace"):
            asyncio.run(main())
    finally:
        bridge.uninstall()
    provider.shutdown()
    show(list(memory.get_finished_spans()))
    print(f"execution trace: {out / 'otel.trace'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", type=Path, default=Path("."), help="directory of otel.trace")
    run(ap.parse_args().o)
