"""The runtime's own events: GC pauses as ranges, and sampled metrics."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import threading
import time
from typing import Any, Final

from ._format.spec import C, ResourceKind
from ._loop._state import Hooks
from ._recorder import clock

_RANGE_BEGIN = C["RangeBegin"]
_RANGE_END = C["RangeEnd"]
_METRIC = C["Metric"]
_NONE = ResourceKind.NONE

GC_RANGES: Final = ("GC gen0", "GC gen1", "GC gen2")
"""Range names of a collection of each generation."""

COLLECTED: Final = "/gc/collected:objects"
"""Metric: objects the collection that just ended freed."""
ALIVE: Final = "/coroutines/alive:coroutines"
"""Metric: traced coroutines alive."""
RSS: Final = "/memory/rss:bytes"
"""Metric: the process's resident memory."""
LAG: Final = "/loop/lag:seconds"
"""Metric (on the loop's thread): how long a callback waited to run."""
READY: Final = "/loop/ready:callbacks"
"""Metric (on the loop's thread): callbacks ready to run."""
CPU: Final = "/loop/cpu:seconds"
"""Metric (on the loop's thread): the CPU time that thread has used so far.
Its rise over wall time is how much of a CPU the loop really had, where the
loop's busy time counts a loop the OS did not run as busy."""
RUNQUEUE: Final = "/loop/runqueue:seconds"
"""Metric (on the loop's thread, Linux): the time that thread has waited
for a CPU while runnable, so far."""


def install_gc(hooks: Hooks) -> None:
    """Records every collection as a range, until ``hooks.uninstall()``."""
    events = hooks.rec.events
    # A collection holds the GIL from start to stop: nothing else records in
    # between, and no two overlap. The range is recorded whole at the stop,
    # in one extend, so a generation boundary cannot fall inside it.
    started = [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        try:
            if phase == "start":
                started[0] = clock()
                return
            now = clock()
            name = GC_RANGES[info["generation"]]
            events().extend(
                (
                    (_RANGE_BEGIN, started[0] or now, name, _NONE, 0, None),
                    (_RANGE_END, now, name, _NONE, 0, None),
                    (_METRIC, now, COLLECTED, info["collected"]),
                )
            )
        except Exception as exc:
            hooks.fail("gc.callbacks", exc)

    gc.callbacks.append(on_gc)

    def undo() -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(on_gc)

    hooks.on_uninstall("gc.callbacks", undo)


class MetricSampler:
    """MetricSampler records the process's and each loop's metrics every interval."""

    def __init__(self, hooks: Hooks, interval: float) -> None:
        self._hooks = hooks
        self._interval_ns = int(interval * 1e9)
        self._next = 0
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def maybe_sample(self, now: int) -> None:
        """Samples if an interval has passed since the last sample."""
        if now < self._next:
            return
        self._next = now + self._interval_ns
        hooks = self._hooks
        hooks.thread_state().events.extend(
            (
                (_METRIC, now, ALIVE, len(hooks.coroutines)),
                (_METRIC, now, RSS, self._rss()),
            )
        )
        for _, loop in hooks.loops():
            if loop.is_running() and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(self._on_loop, loop, clock())

    def _on_loop(self, loop: Any, sent: int) -> None:
        now = clock()
        ready = getattr(loop, "_ready", None)
        events = self._hooks.thread_state().events
        events.append((_METRIC, now, LAG, (now - sent) / 1e9))
        if ready is not None:
            events.append((_METRIC, now, READY, len(ready)))
        events.append((_METRIC, now, CPU, time.thread_time()))
        waited = _runqueue_ns()
        if waited is not None:
            events.append((_METRIC, now, RUNQUEUE, waited / 1e9))

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _runqueue_ns() -> int | None:
    """The calling thread's run-queue wait so far (Linux), or None."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
