"""aiotrace and OpenTelemetry together (extra ``aiotrace[opentelemetry]``).

``instrument()`` joins the two traces while aiotrace is tracing:

- every span started in this process opens a region named after the span in
  the current aiotrace task; a span with no local parent (or a SERVER or
  CONSUMER span) opens a user task instead; each logs ``otel.trace_id`` and
  ``otel.span_id`` (lowercase hex), so a slow span leads to its execution
  trace and back;
- a loop stall that held the coroutine running a span becomes the span
  event ``aiotrace.loop_stall`` (duration, and the blocking frame as
  ``code.function``, ``code.filepath``, ``code.lineno``); a wait longer than
  ``wait_threshold`` becomes ``aiotrace.long_wait`` with its reason;
- loop lag, utilisation, stalls and coroutines alive are observable
  instruments on the meter provider.

See docs/opentelemetry.md.
"""

from __future__ import annotations

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
    from opentelemetry.sdk.trace import TracerProvider as _SdkTracerProvider
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aiotrace.contrib.opentelemetry needs opentelemetry-api and "
        f"opentelemetry-sdk ({_exc}): pip install 'aiotrace[opentelemetry]'"
    ) from _exc

import contextlib
import threading
from typing import Any

from .. import _stall
from ._otel_metrics import ALIVE as ALIVE
from ._otel_metrics import LAG as LAG
from ._otel_metrics import STALL_TIME as STALL_TIME
from ._otel_metrics import STALLS as STALLS
from ._otel_metrics import UTILIZATION as UTILIZATION
from ._otel_metrics import LoopMetrics
from ._otel_spans import SPAN_ID as SPAN_ID
from ._otel_spans import STALL_EVENT as STALL_EVENT
from ._otel_spans import TRACE_ID as TRACE_ID
from ._otel_spans import WAIT_EVENT as WAIT_EVENT
from ._otel_spans import Processor

DEFAULT_WAIT_THRESHOLD = 0.5
"""Seconds a coroutine with an open span may wait before the wait becomes an
``aiotrace.long_wait`` event."""

_lock = threading.Lock()


class Instrumentation:
    """Instrumentation is the bridge ``instrument()`` installed.

    ``uninstall()`` undoes it: the span processor stops mirroring (and is
    removed from the provider where the SDK allows), open spans' tasks and
    regions end, the listeners leave aiotrace, and the instruments report
    nothing more.
    """

    def __init__(
        self,
        tracer_provider: _SdkTracerProvider,
        processor: Processor,
        loop_metrics: LoopMetrics | None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self._processor = processor
        self._metrics = loop_metrics
        self._installed = True

    @property
    def installed(self) -> bool:
        """Whether the bridge is still installed."""
        return self._installed

    def uninstall(self) -> None:
        """Removes the bridge; only the first call counts."""
        with _lock:
            if not self._installed:
                return
            self._installed = False
            processor, loop_metrics = self._processor, self._metrics
            gone = {processor.on_stall, processor.on_tick}
            if loop_metrics is not None:
                loop_metrics.enabled = False
                gone |= {loop_metrics.on_stall, loop_metrics.on_tick}
            # New lists, never edited in place: the loop and watchdog threads
            # iterate the current ones without a lock.
            _stall.stall_listeners = [
                f for f in _stall.stall_listeners if f not in gone
            ]
            _stall.tick_listeners = [f for f in _stall.tick_listeners if f not in gone]
        processor.close()
        # The SDK has no public way to remove a span processor: drop it from
        # the multi-processor's tuple if it has the expected shape.
        with contextlib.suppress(Exception):
            multi = self.tracer_provider._active_span_processor
            with multi._lock:
                multi._span_processors = tuple(
                    p for p in multi._span_processors if p is not processor
                )

    def __repr__(self) -> str:
        state = "installed" if self._installed else "uninstalled"
        return f"<aiotrace.contrib.opentelemetry.Instrumentation {state}>"


def instrument(
    tracer_provider: Any = None,
    *,
    meter_provider: Any = None,
    wait_threshold: float | None = DEFAULT_WAIT_THRESHOLD,
    metrics: bool = True,
) -> Instrumentation:
    """Bridges OpenTelemetry and aiotrace until ``.uninstall()``.

    ``tracer_provider``: an SDK ``TracerProvider`` (default: the global one,
    which must then be an SDK provider). ``meter_provider``: where the loop
    instruments go (default: the global one); ``metrics=False`` registers
    none. ``wait_threshold``: seconds after which a wait of a coroutine
    inside a span becomes an ``aiotrace.long_wait`` event (``None``: never).

    It may be called before or during tracing; spans mirror only while
    aiotrace is tracing.
    """
    provider = (
        _trace.get_tracer_provider() if tracer_provider is None else tracer_provider
    )
    if not isinstance(provider, _SdkTracerProvider):
        raise TypeError(
            "aiotrace.contrib.opentelemetry.instrument needs an "
            "opentelemetry.sdk.trace.TracerProvider, got "
            f"{type(provider).__name__}: pass one as tracer_provider, or call "
            "opentelemetry.trace.set_tracer_provider first"
        )
    if wait_threshold is not None and (
        isinstance(wait_threshold, bool)
        or not isinstance(wait_threshold, (int, float))
        or not wait_threshold > 0
    ):
        raise ValueError(
            "aiotrace.contrib.opentelemetry.instrument: wait_threshold must be "
            f"a positive number of seconds or None, got {wait_threshold!r}"
        )
    processor = Processor(wait_threshold)
    loop_metrics = None
    if metrics:
        mp = _metrics.get_meter_provider() if meter_provider is None else meter_provider
        loop_metrics = LoopMetrics(mp)
    provider.add_span_processor(processor)
    with _lock:
        stalls: list[Any] = [processor.on_stall]
        ticks: list[Any] = [processor.on_tick]
        if loop_metrics is not None:
            stalls.append(loop_metrics.on_stall)
            ticks.append(loop_metrics.on_tick)
        _stall.stall_listeners = [*_stall.stall_listeners, *stalls]
        _stall.tick_listeners = [*_stall.tick_listeners, *ticks]
    return Instrumentation(provider, processor, loop_metrics)


__all__ = (
    "ALIVE",
    "DEFAULT_WAIT_THRESHOLD",
    "LAG",
    "SPAN_ID",
    "STALLS",
    "STALL_EVENT",
    "STALL_TIME",
    "TRACE_ID",
    "UTILIZATION",
    "WAIT_EVENT",
    "Instrumentation",
    "instrument",
)
