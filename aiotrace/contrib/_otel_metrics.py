"""Loop health as OpenTelemetry metrics: lag, utilisation, stalls, coroutines.

The instruments are observable: the meter provider's reader asks for their
values when it collects, so nothing here runs per event. Lag is measured by
a probe callback sent to each loop at collection time (its value is read at
the next collection); utilisation is the share of watchdog ticks that found
the loop inside a step or callback; stalls are counted as they end.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Any, Final

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from .. import _recorder, _session
from .._loop._state import Hooks

LAG: Final = "aiotrace.loop.lag"
"""Gauge, seconds: how long the latest probe callback waited to run, per loop."""
UTILIZATION: Final = "aiotrace.loop.utilization"
"""Gauge, 0-1: the share of watchdog ticks since the last collection that
found the loop's thread running a step or callback."""
STALLS: Final = "aiotrace.loop.stalls"
"""Counter: loop stalls ended since ``instrument``."""
STALL_TIME: Final = "aiotrace.loop.stall_time"
"""Counter, seconds: total duration of those stalls."""
ALIVE: Final = "aiotrace.coroutines.alive"
"""Gauge: traced coroutines alive."""

_LOOP: Final = "aiotrace.loop.id"


class LoopMetrics:
    """LoopMetrics registers the instruments and feeds them."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        from .. import __version__

        self.enabled = True
        self._lock = threading.Lock()
        self._lag: dict[int, float] = {}  # loop id -> latest lag
        self._ticks: dict[int, list[int]] = {}  # loop id -> [ticks, busy ticks]
        self._stalls = 0
        self._stall_ns = 0
        meter = meter_provider.get_meter("aiotrace", __version__)
        meter.create_observable_gauge(
            LAG, [self._observe_lag], unit="s", description="event loop lag"
        )
        meter.create_observable_gauge(
            UTILIZATION,
            [self._observe_utilization],
            unit="1",
            description="share of time the event loop was running code",
        )
        meter.create_observable_counter(
            STALLS, [self._observe_stalls], unit="{stall}", description="loop stalls"
        )
        meter.create_observable_counter(
            STALL_TIME,
            [self._observe_stall_time],
            unit="s",
            description="time the loops were stalled",
        )
        meter.create_observable_gauge(
            ALIVE,
            [self._observe_alive],
            unit="{coroutine}",
            description="traced coroutines alive",
        )

    # Fed by aiotrace's listeners.

    def on_stall(self, cid: int, t0: int, t1: int, stack: Any) -> None:
        """Counts a stall (loop thread)."""
        if self.enabled:
            with self._lock:
                self._stalls += 1
                self._stall_ns += t1 - t0

    def on_tick(self, hooks: Hooks, now: int) -> None:
        """Counts whether each loop thread is running code (watchdog thread)."""
        if not self.enabled:
            return
        with contextlib.suppress(Exception):
            for ts in hooks.threads:
                if ts.loop < 0:
                    continue
                counts = self._ticks.get(ts.loop)
                if counts is None:
                    counts = self._ticks[ts.loop] = [0, 0]
                counts[0] += 1
                if ts.t0:
                    counts[1] += 1

    # Observable callbacks (the metric reader's thread).

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        hooks = _hooks()
        if not self.enabled or hooks is None:
            return []
        loops = hooks.loops()
        live = {lid for lid, _ in loops}
        for lid in [lid for lid in self._lag if lid not in live]:
            self._lag.pop(lid, None)  # a loop gone: no more values
        out = [Observation(v, {_LOOP: lid}) for lid, v in list(self._lag.items())]
        for lid, loop in loops:
            with contextlib.suppress(Exception):
                if loop.is_running() and not loop.is_closed():
                    loop.call_soon_threadsafe(self._landed, lid, _recorder.clock())
        return out

    def _landed(self, lid: int, sent: int) -> None:
        self._lag[lid] = (_recorder.clock() - sent) / 1e9

    def _observe_utilization(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self.enabled:
            return []
        out = []
        for lid, counts in list(self._ticks.items()):
            ticks, busy = counts
            counts[0] = counts[1] = 0
            if ticks:
                out.append(Observation(busy / ticks, {_LOOP: lid}))
        return out

    def _observe_stalls(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._stalls)] if self.enabled else []

    def _observe_stall_time(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._stall_ns / 1e9)] if self.enabled else []

    def _observe_alive(self, options: CallbackOptions) -> Iterable[Observation]:
        hooks = _hooks()
        if not self.enabled or hooks is None:
            return []
        return [Observation(len(hooks.coroutines))]


def _hooks() -> Hooks | None:
    session = _session.current()
    runtime = None if session is None else session.runtime
    return None if runtime is None else runtime.hooks
