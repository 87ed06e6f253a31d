"""The watchdog: loop stalls caught while they happen, and periodic metrics.

A step or callback that holds its loop longer than the stall threshold is a
stall. The loop hooks publish, per thread, when the running step began
(``ThreadState.t0``). The watchdog thread wakes every ``TICK`` seconds and,
for a step older than the threshold, records a "loop stall" range that
begins at the step's start, then one stack sample of the loop thread per
tick for as long as the stall lasts. The loop thread ends the range itself
when the step returns; if the watchdog never got the GIL (a C call held it),
the loop thread records the whole range then, with no samples.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

from ._format.spec import C, ResourceKind
from ._loop._state import Hooks, ThreadState
from ._recorder import clock, stack_of
from ._runtime import MetricSampler

TICK: Final = 0.01
"""Seconds between the watchdog's looks at the loops."""

SAMPLE_DEPTH: Final = 64
"""Most frames in a stall's stack sample."""

MAX_SAMPLES: Final = 1000
"""Most stack samples per stall; a longer stall keeps one sample in ten."""

STALL: Final = "loop stall"
"""The name of the stall range."""

stall_listeners: list[Callable[[int, int, int, Any], None]] = []
"""Called (coroutine id or 0, t0, t1, most sampled stack or None) on the loop
thread when a stall ends (contrib.opentelemetry turns them into span events)."""

tick_listeners: list[Callable[[Hooks, int], None]] = []
"""Called (hooks, now) on the watchdog thread every tick."""

_RANGE_BEGIN = C["RangeBegin"]
_RANGE_END = C["RangeEnd"]
_SAMPLE = C["StackSample"]
_LOOP = ResourceKind.LOOP


class Watchdog:
    """Watchdog watches every traced loop's heartbeat from its own thread."""

    def __init__(self, hooks: Hooks, metrics: MetricSampler | None) -> None:
        self._hooks = hooks
        self._metrics = metrics
        self._stop = threading.Event()
        self._samples: dict[int, int] = {}  # thread ident -> samples this stall
        # thread ident -> (coroutine id, {innermost frame: [samples, stack]})
        # of the stall going on, for stall_listeners
        self.seen: dict[int, tuple[int, dict[Any, list[Any]]]] = {}
        self._thread = threading.Thread(
            target=self._run, name="aiotrace-watchdog", daemon=True
        )
        hooks.stall_end = self.stall_end

    def start(self) -> None:
        """Starts the watchdog thread."""
        self._thread.start()

    def stop(self, *, join: bool = True) -> None:
        """Stops the watchdog thread; with ``join``, waits for it to exit
        (unless called from it)."""
        self._stop.set()
        if (
            join
            and self._thread.is_alive()
            and threading.current_thread() is not self._thread
        ):
            self._thread.join()

    def _run(self) -> None:
        hooks = self._hooks
        watch = hooks.stall_ns < (1 << 62)
        metrics = self._metrics
        try:
            while not self._stop.wait(TICK):
                now = clock()
                if watch:
                    for ts in hooks.live_threads():
                        t0 = ts.t0
                        if t0 and now - t0 > hooks.stall_ns:
                            self._check(ts, t0, now)
                if metrics is not None:
                    metrics.maybe_sample(now)
                for fn in tick_listeners:
                    fn(hooks, now)
        except Exception as exc:  # pragma: no cover - reported, tracing goes on
            hooks.fail("watchdog", exc)

    def _check(self, ts: ThreadState, t0: int, now: int) -> None:
        events = self._hooks.thread_state().events
        with ts.lock:
            if ts.t0 != t0:
                return  # that step just ended
            n = 0
            if ts.stall_t0 != t0:
                ts.stall_t0 = t0
                # Into the loop thread's own buffer, ahead of the end that
                # thread will append: the drainer puts a thread's events in
                # generations in buffer order, so the begin can never land in
                # a later generation than its end (list.append is atomic).
                ts.events.append((_RANGE_BEGIN, t0, STALL, _LOOP, ts.loop, None))
            else:
                n = self._samples.get(ts.ident, 0)
            self._samples[ts.ident] = n + 1
            if n >= MAX_SAMPLES and n % 10:
                return
            frame = _frame_of(ts.ident)
            if frame is None:
                return
            stack = stack_of(frame, SAMPLE_DEPTH)
            cur = ts.cur or -1
            events.append((_SAMPLE, clock(), ts.native, ts.loop, cur, stack))
            if stall_listeners:
                seen = self.seen.setdefault(ts.ident, (ts.cur, {}))[1]
                at = seen.setdefault(stack[0] if stack else None, [0, stack])
                at[0] += 1

    def stall_end(self, ts: ThreadState, t0: int, t1: int) -> None:
        """Called on the loop thread when a step from t0 to t1 was a stall."""
        with ts.lock:
            if ts.stall_t0 != t0:
                # The watchdog never ran during it: a C call held the GIL.
                ts.events.append((_RANGE_BEGIN, t0, STALL, _LOOP, ts.loop, None))
            ts.stall_t0 = 0
            ts.events.append((_RANGE_END, t1, STALL, _LOOP, ts.loop, None))
            self._samples.pop(ts.ident, None)
            seen = self.seen.pop(ts.ident, None)
        if stall_listeners:
            cid, stack = self.blocking(seen)
            for fn in stall_listeners:
                fn(cid, t0, t1, stack)

    def blocking(
        self, seen: tuple[int, dict[Any, list[Any]]] | None
    ) -> tuple[int, Any]:
        """(coroutine id, stack sampled most often at its innermost frame)
        of a stall's samples (``seen``), or (0, None) without samples."""
        if not seen or not seen[1]:
            return 0, None
        return seen[0], max(seen[1].values(), key=lambda at: at[0])[1]


def _frame_of(ident: int) -> FrameType | None:
    """The current frame of thread ``ident``.

    ``sys._current_frames()`` allocates while it holds the interpreter's
    thread-list lock. A collection there would run Python code (GC
    callbacks, finalizers) that can let another thread take the GIL and then
    wait for that lock: a deadlock. So no collection may start inside it.
    """
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return sys._current_frames().get(ident)
    finally:
        if enabled:
            gc.enable()
