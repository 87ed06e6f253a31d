"""The OpenTelemetry bridge with the real SDK, its OTLP/HTTP exporters and
OpenTelemetry's own aiohttp, asyncio and logging instrumentations, exporting
to a receiver on 127.0.0.1 that decodes every request it gets."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aiotrace
from aiotrace import _session, _stall
from aiotrace.contrib import opentelemetry as aotel
from aiotrace.reader import Event, EventKind, read_events, validate

STALL = 0.2
"""The stall threshold of the traces here (seconds): the planted stalls last
until sampled, however long; a higher threshold keeps a loaded machine's
slow steps from counting."""
TRACER = web.AppKey("tracer", object)
RELEASED = web.AppKey("released", asyncio.Event)


class Receiver:
    """Receiver is an OTLP/HTTP collector on 127.0.0.1 in its own thread."""

    def __init__(self) -> None:
        self.spans: list[Any] = []  # opentelemetry.proto Span messages
        self.metrics: list[Any] = []  # opentelemetry.proto Metric messages
        self.requests: list[str] = []  # the path of every request
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-receiver")
        self.port = 0

    def __enter__(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(60), "the receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        # A low-level server: OpenTelemetry's aiohttp instrumentation patches
        # web.Application, and must not trace the exports themselves.
        server = web.Server(self._handle)
        runner = web.ServerRunner(server)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.method == "POST"
        assert request.headers["Content-Type"] == "application/x-protobuf"
        self.requests.append(request.path)
        if request.path == "/v1/traces":
            traces = trace_service_pb2.ExportTraceServiceRequest()
            traces.ParseFromString(body)
            for rs in traces.resource_spans:
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
            reply = trace_service_pb2.ExportTraceServiceResponse()
        elif request.path == "/v1/metrics":
            metrics = metrics_service_pb2.ExportMetricsServiceRequest()
            metrics.ParseFromString(body)
            for rm in metrics.resource_metrics:
                for sm in rm.scope_metrics:
                    self.metrics.extend(sm.metrics)
            reply = metrics_service_pb2.ExportMetricsServiceResponse()
        else:
            return web.Response(status=404)
        return web.Response(
            body=reply.SerializeToString(), content_type="application/x-protobuf"
        )

    def span(self, name: str) -> Any:
        """The one exported span called ``name``."""
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]


class Otel:
    """Otel is an SDK set-up exporting over OTLP/HTTP to a Receiver."""

    def __init__(self, receiver: Receiver) -> None:
        base = f"http://127.0.0.1:{receiver.port}"
        resource = Resource.create({"service.name": "aiotrace-test"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        self.reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
            export_interval_millis=3_600_000,  # only when flushed
        )
        self.meter_provider = MeterProvider(
            resource=resource, metric_readers=[self.reader]
        )
        self.tracer = self.tracer_provider.get_tracer("test")

    def flush(self) -> None:
        """Exports every ended span and a collection of every instrument."""
        assert self.tracer_provider.force_flush(60_000)
        assert self.meter_provider.force_flush(60_000)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP receiver on 127.0.0.1."""
    with Receiver() as r:
        yield r


@pytest.fixture
def otel(receiver: Receiver) -> Iterator[Otel]:
    """The SDK exporting to ``receiver``, with OpenTelemetry's aiohttp server
    and client, asyncio and logging instrumentations installed."""
    o = Otel(receiver)
    kw = {"tracer_provider": o.tracer_provider, "meter_provider": o.meter_provider}
    instrumentors = [
        AioHttpServerInstrumentor(),
        AioHttpClientInstrumentor(),
        AsyncioInstrumentor(),
        LoggingInstrumentor(),
    ]
    with warnings.catch_warnings():
        # aiohttp discourages the subclass of web.Application that
        # OpenTelemetry's server instrumentation makes: their business.
        warnings.filterwarnings(
            "ignore", "Inheritance class _InstrumentedApplication", DeprecationWarning
        )
        for inst in instrumentors:
            inst.instrument(**kw)
    try:
        yield o
    finally:
        for inst in reversed(instrumentors):
            inst.uninstrument()
        o.shutdown()


# The service. Each stalling handler blocks the loop until the stall
# watchdog has sampled the loop thread at least once, so the test depends on
# that event, not on how long the machine takes to notice.


def _sampled(ident: int) -> bool:
    """Whether the watchdog has sampled thread ``ident``'s stall 3 times: the
    line that blocks is then the most sampled, even if the machine is so
    loaded that one more sample lands after the blocking loop."""
    session = _session.current()
    runtime = None if session is None else session.runtime
    watchdog = None if runtime is None else runtime._watchdog
    seen = None if watchdog is None else watchdog.seen.get(ident)
    return seen is not None and sum(n for n, _ in list(seen[1].values())) >= 3


async def stall_in_span(request: web.Request) -> web.Response:
    tracer = request.app[TRACER]
    # On 3.12+ aiohttp runs the handler as an eager task made by asyncio.Task()
    # itself, whose first step aiotrace counts in the enclosing coroutine; the
    # bridge makes a span begun there a task (the example's test covers
    # that). After this await, "render" is a region on every version.
    await asyncio.sleep(0)
    ident = threading.get_ident()
    with tracer.start_as_current_span("render"):
        while not _sampled(ident):
            time.sleep(0.001)  # PLANTED-IN-SPAN
        await asyncio.sleep(0)  # the stall ends here, inside "render"
    return web.Response(text="rendered")


async def stall_to_the_end(request: web.Request) -> web.Response:
    ident = threading.get_ident()
    while not _sampled(ident):
        time.sleep(0.001)  # PLANTED-AT-END
    return web.Response(text="stalled")  # the server span ends in the stall


async def long_wait(request: web.Request) -> web.Response:
    released: asyncio.Event = request.app[RELEASED]
    await released.wait()  # PLANTED-WAIT
    return web.Response(text="waited")


def _line(marker: str) -> int:
    """The number of the line that ends with the comment ``# marker``."""
    lines = Path(__file__).read_text().splitlines()
    (found,) = [i for i, text in enumerate(lines, 1) if f"# {marker}" in text]
    return found


def make_app(tracer: Any) -> web.Application:
    app = web.Application()
    app[TRACER] = tracer
    app[RELEASED] = asyncio.Event()
    app.router.add_get("/in-span", stall_in_span)
    app.router.add_get("/at-end", stall_to_the_end)
    app.router.add_get("/wait", long_wait)
    return app


async def serve_and_call(
    otel: Otel, inst: aotel.Instrumentation, paths: list[str]
) -> list[str]:
    """Serves the app on 127.0.0.1 and GETs ``paths`` one after the other
    (``/wait`` is released once the bridge has seen it wait long)."""
    app = make_app(otel.tracer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    bodies = []
    try:
        async with aiohttp.ClientSession() as session:
            for path in paths:
                call = asyncio.create_task(
                    session.get(f"http://127.0.0.1:{port}{path}")
                )
                if path == "/wait":
                    while not _long_wait_seen(inst, "long_wait"):
                        await asyncio.sleep(0.005)
                    app[RELEASED].set()
                async with await call as resp:
                    assert resp.status == 200
                    bodies.append(await resp.text())
    finally:
        await runner.cleanup()
    return bodies


def _long_wait_seen(inst: aotel.Instrumentation, function: str) -> bool:
    """Whether the bridge has seen a wait in ``function`` last long (the
    client's span waits long too, and may be seen first)."""
    return any(
        w.attrs is not None
        and str(w.attrs.get("code.function")).split(".")[-1] == function
        for w in list(inst._processor._waits.values())
    )


def _hex(b: bytes) -> str:
    return b.hex()


def _attrs(event: Any) -> dict[str, Any]:
    out = {}
    for kv in event.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which)
    return out


def _logs(events: list[Event], category: str) -> dict[str, list[int]]:
    """message -> task ids of the LOG events of ``category``."""
    out: dict[str, list[int]] = {}
    for e in events:
        if e.kind is EventKind.LOG and e.log.category == category:
            out.setdefault(e.log.message, []).append(e.log.task)
    return out


def _tasks(events: list[Event]) -> dict[int, str]:
    return {e.task.id: e.task.type for e in events if e.kind is EventKind.TASK_BEGIN}


def test_slow_request_shows_the_stalling_line(
    tmp_path: Path, receiver: Receiver, otel: Otel
) -> None:
    """A request whose handler stalls the loop inside a child span exports
    that span with an aiotrace.loop_stall event naming the planted line; a
    request whose server span ends during its stall gets the event on the
    server span. Each server span is an aiotrace task and the child span a
    region in it, logging the exported trace and span ids; the client spans
    are tasks too; the trace validates."""
    path = tmp_path / "otel.trace"
    inst = aotel.instrument(otel.tracer_provider, meter_provider=otel.meter_provider)
    try:
        with aiotrace.tracing(path, stall_threshold=STALL):
            bodies = asyncio.run(serve_and_call(otel, inst, ["/in-span", "/at-end"]))
    finally:
        inst.uninstall()
    assert bodies == ["rendered", "stalled"]
    otel.flush()
    events = read_events(path)
    assert validate(events) == []

    render = receiver.span("render")
    server = receiver.span("GET /in-span")
    assert render.parent_span_id == server.span_id
    assert server.kind == server.SPAN_KIND_SERVER
    # Other steps may stall too on a loaded machine: the planted stall is
    # the one that names its line, and it went to "render", not its parent.
    in_span = _line("PLANTED-IN-SPAN")
    (stall,) = _stalls_at(render, in_span)
    attrs = _attrs(stall)
    assert attrs["code.function"] == "stall_in_span"
    assert attrs["code.filepath"] == __file__
    assert attrs["aiotrace.duration_s"] > STALL
    assert "aiotrace.stall.ongoing" not in attrs
    assert render.start_time_unix_nano <= stall.time_unix_nano
    assert stall.time_unix_nano <= render.end_time_unix_nano
    assert _stalls_at(server, in_span) == []

    at_end = receiver.span("GET /at-end")
    (stall,) = _stalls_at(at_end, _line("PLANTED-AT-END"))
    attrs = _attrs(stall)
    assert attrs["code.function"] == "stall_to_the_end"
    assert attrs["code.filepath"] == __file__
    assert attrs["aiotrace.stall.ongoing"] is True
    assert attrs["aiotrace.duration_s"] > STALL

    # Each span logged its ids, in hex, under its task: the server spans'
    # own tasks, named after them, and the child span's region in its
    # parent's task.
    trace_logs = _logs(events, aotel.TRACE_ID)
    span_logs = _logs(events, aotel.SPAN_ID)
    tasks = _tasks(events)
    for span in (server, at_end):
        (task,) = span_logs[_hex(span.span_id)]
        assert tasks[task] == span.name
        assert task in trace_logs[_hex(span.trace_id)]
    (task,) = span_logs[_hex(server.span_id)]
    regions = [
        e
        for e in events
        if e.kind in (EventKind.REGION_BEGIN, EventKind.REGION_END)
        and e.region.type == "render"
    ]
    assert [(e.kind, e.region.task) for e in regions] == [
        (EventKind.REGION_BEGIN, task),
        (EventKind.REGION_END, task),
    ]
    assert span_logs[_hex(render.span_id)] == [task]
    assert len(_hex(render.trace_id)) == 32 and len(_hex(render.span_id)) == 16
    # Client spans (started without being made current) are tasks too.
    clients = [s for s in receiver.spans if s.kind == s.SPAN_KIND_CLIENT]
    assert len(clients) == 2
    for span in clients:
        (task,) = span_logs[_hex(span.span_id)]
        assert tasks[task] == span.name
    # The execution trace has the planted stalls' samples at those lines.
    sampled = {
        e.stack.frames[0].line
        for e in events
        if e.kind is EventKind.STACK_SAMPLE and e.stack.frames
    }
    assert {in_span, _line("PLANTED-AT-END")} <= sampled


def _stalls_at(span: Any, line: int) -> list[Any]:
    """The aiotrace.loop_stall events of ``span`` naming line ``line``."""
    return [
        e
        for e in span.events
        if e.name == "aiotrace.loop_stall"
        and _attrs(e).get("code.lineno") == line
        and _attrs(e).get("code.filepath") == __file__
    ]


def test_long_wait_becomes_a_span_event(
    tmp_path: Path, receiver: Receiver, otel: Otel
) -> None:
    """A handler that waits longer than wait_threshold exports its server span
    with an aiotrace.long_wait event giving the wait's reason and the line
    where the handler waits."""
    path = tmp_path / "wait.trace"
    inst = aotel.instrument(
        otel.tracer_provider, meter_provider=otel.meter_provider, wait_threshold=0.02
    )
    try:
        with aiotrace.tracing(path, stall_threshold=STALL):
            bodies = asyncio.run(serve_and_call(otel, inst, ["/wait"]))
    finally:
        inst.uninstall()
    assert bodies == ["waited"]
    otel.flush()
    assert validate(read_events(path)) == []
    server = receiver.span("GET /wait")
    (wait,) = [e for e in server.events if e.name == "aiotrace.long_wait"]
    attrs = _attrs(wait)
    assert attrs["aiotrace.reason"] == "event"
    assert attrs["code.function"] == "long_wait"
    assert attrs["code.filepath"] == __file__
    assert attrs["code.lineno"] == _line("PLANTED-WAIT")
    assert attrs["aiotrace.duration_s"] >= 0.02


def test_long_wait_the_poller_saw_end_stays_with_its_span(tmp_path: Path) -> None:
    """A long wait that ends while its task's span goes on is added to that
    span, with the end the poller saw: not to a span the task begins after
    it, and not lost when the span ends right after (the poller, on the
    watchdog thread, never adds to a span that may be ending)."""
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("t")
    inst = aotel.instrument(provider, metrics=False, wait_threshold=0.02)
    waits = inst._processor._waits

    def over() -> bool:  # the poller has seen the long wait end
        return not any(w.attrs is not None for w in list(waits.values()))

    async def main() -> None:
        released = asyncio.Event()

        async def release() -> None:
            while not _long_wait_seen(inst, "main"):
                await asyncio.sleep(0.005)
            released.set()

        releaser = asyncio.create_task(release())
        for name in ("outer", "ending"):
            released.clear()
            with tracer.start_as_current_span(name):
                await released.wait()  # WAIT-IN-SPAN
                # Running, not waiting: the loop is held until the poller
                # has seen the wait end (a step of the poll interval or so).
                while not over():
                    time.sleep(0.001)
                if name == "outer":
                    with tracer.start_as_current_span("inner"):
                        pass
            if name == "outer":
                releaser = asyncio.create_task(release())
        await releaser

    try:
        with aiotrace.tracing(tmp_path / "w.trace", stall_threshold=60):
            asyncio.run(main())
    finally:
        inst.uninstall()
    assert validate(read_events(tmp_path / "w.trace")) == []
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert sorted(by_name) == ["ending", "inner", "outer"]
    assert not [e for e in by_name["inner"].events if e.name == "aiotrace.long_wait"]
    for name in ("outer", "ending"):
        (wait,) = [e for e in by_name[name].events if e.name == "aiotrace.long_wait"]
        assert wait.attributes is not None
        assert wait.attributes["aiotrace.reason"] == "event"
        assert wait.attributes["code.lineno"] == _line("WAIT-IN-SPAN")
        assert wait.attributes["aiotrace.duration_s"] >= 0.02  # type: ignore[operator]
        assert by_name[name].start_time <= wait.timestamp  # type: ignore[operator]


def _metric(receiver: Receiver, name: str) -> list[Any]:
    """The data points of every export of metric ``name``."""
    points = []
    for m in receiver.metrics:
        if m.name == name:
            data = m.WhichOneof("data")
            points.extend(getattr(m, data).data_points)
    return points


def test_loop_health_metrics(tmp_path: Path, receiver: Receiver, otel: Otel) -> None:
    """The loop's lag, utilisation, stalls, stall time and coroutines alive
    are exported as OTLP metrics with sane values while tracing."""
    path = tmp_path / "metrics.trace"
    inst = aotel.instrument(otel.tracer_provider, meter_provider=otel.meter_provider)

    async def main() -> None:
        await serve_and_call(otel, inst, ["/at-end"])
        # The lag probe is sent at one collection and read at the next.
        await asyncio.to_thread(otel.flush)
        await asyncio.sleep(0)  # the probe queued before the flush returned runs
        await asyncio.to_thread(otel.flush)

    try:
        with aiotrace.tracing(path, stall_threshold=STALL, metrics_interval=None):
            asyncio.run(main())
    finally:
        inst.uninstall()
    assert validate(read_events(path)) == []
    (stalls, *_) = _metric(receiver, aotel.STALLS)
    assert stalls.as_int >= 1
    (stall_time, *_) = _metric(receiver, aotel.STALL_TIME)
    assert stall_time.as_double > STALL * stalls.as_int
    lags = _metric(receiver, aotel.LAG)
    assert lags and all(0 <= p.as_double < 60 for p in lags)
    assert {kv.key for p in lags for kv in p.attributes} == {"aiotrace.loop.id"}
    util = _metric(receiver, aotel.UTILIZATION)
    assert util and all(0 <= p.as_double <= 1 for p in util)
    alive = _metric(receiver, aotel.ALIVE)
    assert alive and all(p.as_int >= 1 for p in alive)


def test_uninstall_restores_everything(
    tmp_path: Path, receiver: Receiver, otel: Otel
) -> None:
    """After uninstall the provider has its own span processors only,
    aiotrace's listeners are as before, spans leave no trace in aiotrace,
    the instruments report nothing, and a second uninstall is a no-op."""
    provider = otel.tracer_provider
    before = provider._active_span_processor._span_processors
    listeners = (_stall.stall_listeners, _stall.tick_listeners)
    inst = aotel.instrument(provider, meter_provider=otel.meter_provider)
    assert inst.installed
    assert len(provider._active_span_processor._span_processors) == len(before) + 1
    inst.uninstall()
    inst.uninstall()
    assert not inst.installed
    assert provider._active_span_processor._span_processors == before
    assert (_stall.stall_listeners, _stall.tick_listeners) == listeners
    path = tmp_path / "after.trace"
    with aiotrace.tracing(path), otel.tracer.start_as_current_span("after"):
        aiotrace.log("still", "here")
    events = read_events(path)
    assert validate(events) == []
    assert [e.log.category for e in events if e.kind is EventKind.LOG] == ["still"]
    assert not any(e.kind is EventKind.TASK_BEGIN for e in events)
    otel.flush()
    assert receiver.span("after").events == []
    assert not [m for m in receiver.metrics if m.name.startswith("aiotrace.")]


def test_spans_without_tracing_and_ended_elsewhere(tmp_path: Path) -> None:
    """Spans started while aiotrace is off leave nothing. Spans started
    without being made current (``start_span``), which may end anywhere,
    are tasks, children of the current one, and never made current: ended
    in a loop callback, in another task or in a thread, they neither warn
    nor raise, their tasks end, and the trace validates."""
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    inst = aotel.instrument(provider, metrics=False)
    path = tmp_path / "elsewhere.trace"

    async def main() -> None:
        with tracer.start_as_current_span("root"):
            in_callback = tracer.start_span("in-callback")
            fut = asyncio.get_running_loop().create_future()
            fut.add_done_callback(lambda _: in_callback.end())
            fut.get_loop().call_soon(fut.set_result, None)
            await fut
            in_task = tracer.start_span("in-task")
            await asyncio.create_task(_end(in_task))
            in_thread = tracer.start_span("in-thread")
            await asyncio.to_thread(in_thread.end)
            orphan = tracer.start_span(
                "orphan", context=trace.set_span_in_context(trace.INVALID_SPAN)
            )
            await asyncio.create_task(_end(orphan))
            aiotrace.log("after", "spans")

    async def _end(span: Any) -> None:
        span.end()

    try:
        with tracer.start_as_current_span("untraced"):
            pass
        with aiotrace.tracing(path):
            asyncio.run(main())
    finally:
        inst.uninstall()
    events = read_events(path)
    assert validate(events) == []
    begins = {e.task.type: e.task for e in events if e.kind is EventKind.TASK_BEGIN}
    ends = {e.task.id for e in events if e.kind is EventKind.TASK_END}
    assert sorted(begins) == ["in-callback", "in-task", "in-thread", "orphan", "root"]
    assert ends == {t.id for t in begins.values()}
    root = begins["root"].id
    for name in ("in-callback", "in-task", "in-thread", "orphan"):
        assert begins[name].parent == root
    # None of them became current: the root's log is the root's.
    (after,) = [
        e for e in events if e.kind is EventKind.LOG and e.log.category == "after"
    ]
    assert after.log.task == root
    assert not any(e.kind is EventKind.REGION_BEGIN for e in events)


def test_uninstall_ends_what_open_spans_began(tmp_path: Path) -> None:
    """Uninstalling while spans are open ends their task and region at once
    (the trace stays valid); ending those spans afterwards records nothing
    more and neither warns nor raises."""
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    inst = aotel.instrument(provider, metrics=False)
    path = tmp_path / "open.trace"
    with aiotrace.tracing(path):
        with tracer.start_as_current_span("outer"), tracer.start_as_current_span("in"):
            inst.uninstall()
            aiotrace.log("after", "uninstall")
        assert aiotrace.current_task() is None
    events = read_events(path)
    assert validate(events) == []
    kinds = [
        (e.kind, e.task.type if e.kind is EventKind.TASK_BEGIN else None)
        for e in events
        if e.kind
        in (
            EventKind.TASK_BEGIN,
            EventKind.TASK_END,
            EventKind.REGION_BEGIN,
            EventKind.REGION_END,
        )
    ]
    assert kinds == [
        (EventKind.TASK_BEGIN, "outer"),
        (EventKind.REGION_BEGIN, None),
        (EventKind.REGION_END, None),
        (EventKind.TASK_END, None),
    ]


def test_bad_arguments() -> None:
    """instrument() names what is wrong: a provider that is not the SDK's,
    or a wait threshold that is not a positive number."""
    with pytest.raises(TypeError, match=r"needs an opentelemetry\.sdk\.trace"):
        aotel.instrument(trace.NoOpTracerProvider())
    for bad in (0, -1.0, "1", True):
        with pytest.raises(ValueError, match="wait_threshold must be a positive"):
            aotel.instrument(TracerProvider(), wait_threshold=bad)  # type: ignore[arg-type]


def test_missing_opentelemetry_names_the_extra() -> None:
    """Without the opentelemetry packages, importing the bridge raises an
    ImportError that names the aiotrace[opentelemetry] extra."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import aiotrace.contrib.opentelemetry\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'aiotrace[opentelemetry]'" in out.stdout
    assert "opentelemetry-sdk" in out.stdout


def test_example_leads_from_the_span_to_the_line(tmp_path: Path) -> None:
    """examples/otel_slow_request.py, as docs/opentelemetry.md runs it: the
    render span carries the stall at the blocking line of render_rows, and
    the execution trace it writes validates and holds the request's trace id
    as a log of the task named after the server span."""
    example = Path(__file__).resolve().parents[2] / "examples" / "otel_slow_request.py"
    out = subprocess.run(
        [sys.executable, str(example), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    lines = example.read_text().splitlines()
    (blocking,) = [
        i
        for i, text in enumerate(lines, 1)
        if "# a blocking call in async code" in text
    ]
    render = next(
        i for i, line in enumerate(out) if line.lstrip().startswith("render ")
    )
    assert out[render + 1].strip().startswith("* aiotrace.loop_stall 0.")
    assert " at render_rows " in out[render + 1]
    assert out[render + 1].endswith(f"otel_slow_request.py:{blocking}")
    trace_id = out[0].split("trace_id=")[1].split()[0]
    events = read_events(tmp_path / "otel.trace")
    assert validate(events) == []
    (task,) = _logs(events, aotel.TRACE_ID)[trace_id][:1]
    assert _tasks(events)[task] == "GET /report"
