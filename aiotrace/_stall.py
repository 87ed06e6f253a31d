"""The watchdog: loop stalls caught while they happen, and periodic metrics.

A step or callback that holds its loop longer than the stall threshold is a
stall. The loop hooks publish, per thread, when the running step began
(``ThreadState.t0``). The watchdog thread wakes every ``TICK`` seconds.

- With ``EARLY_SAMPLES`` (off), a step older than half the threshold is
  sampled at each look, provisionally, and the samples go with the stall
  if it becomes one.
- A step older than ``LONG_STEP`` of the threshold (20 ms for the default
  0.1 s) is a long step: it is sampled once per look, and the samples go
  into the trace at once. So a step that blocks for less than the
  threshold (10 steps of 50 ms, each no stall) still has the line where
  its time went; only long steps pay for it. A long step that has taken
  less than half that threshold of its own time (not waiting for a CPU)
  since the watchdog's first reading in it (Linux) is not sampled: the OS
  made it long, not its line.
- A step older than the threshold is a stall: the watchdog records a "loop
  stall" range that begins at the step's start, then one sample every
  ``STALL_TICK`` for as long as the stall lasts.
- The loop thread ends the range itself when the step returns; if the
  watchdog never got the GIL (a C call held it, or the OS did not run the
  loop thread), the loop thread records the whole range then, with the
  samples the watchdog took before.

Samples show the program's frames only: aiotrace's own (its loop hooks, its
GC callback, its metric callbacks) are left out.

On Linux the watchdog also reads each loop thread's CPU time and run-queue
wait (``/proc/self/task/<tid>/schedstat``, a 2 us read of an open file) at
each look: the first reading in a step is kept. The loop thread reads its
own at the stall's end and records, just before the range ends, how much of
the stall it was on a CPU (``STALL_CPU``) and waiting for one
(``STALL_RUNQUEUE``) over the time measured (``STALL_MEASURED``, from the
reading: the last one before the step if that adds less than the step's
length, else the first one in it). A stall the OS caused (the loop thread
was runnable but not running) is then told apart from one the program
caused, even when no sample could be taken.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

from ._format.spec import C, ResourceKind
from ._loop._state import Hooks, ThreadState
from ._recorder import clock
from ._runtime import MetricSampler

TICK: Final = 0.01
"""Seconds between the watchdog's looks at the loops."""

STALL_TICK: Final = 0.002
"""Seconds between two samples of a loop while it stalls."""

SAMPLE_DEPTH: Final = 64
"""Most frames in a stall's stack sample."""

MAX_SAMPLES: Final = 1000
"""Most stack samples per stall; a longer stall keeps one sample in ten."""

EARLY_SAMPLES: Final = False
"""Whether steps are sampled before they are stalls (from half the
threshold), to cover a stall from its start. Off: taking a frame sample of
a step makes frame objects (3.11), which changed when objects are freed in
anyio's refcycle tests under tracing; only stalls pay for that."""

LONG_STEP: Final = 0.2
"""The share of the stall threshold past which a step is a long step, and
is sampled at each look (``TICK``) until it ends or is a stall. A sample
makes frame objects (3.11) and walks the stack (tens of microseconds): a
cost only steps this long pay, once per 10 ms."""

STALL: Final = "loop stall"
"""The name of the stall range."""

stall_listeners: list[Callable[[int, int, int, Any], None]] = []
"""Called (coroutine id or 0, t0, t1, most sampled stack or None) on the loop
thread when a stall ends (contrib.opentelemetry turns them into span events)."""

tick_listeners: list[Callable[[Hooks, int], None]] = []
"""Called (hooks, now) on the watchdog thread every tick."""

STALL_CPU: Final = "/loop/stall/cpu:seconds"
"""Metric (on the loop's thread, at a stall's end): CPU time the loop thread
used over the measured part of the stall."""
STALL_RUNQUEUE: Final = "/loop/stall/runqueue:seconds"
"""Metric (as STALL_CPU): time the loop thread was runnable but waiting for
a CPU (descheduled by the OS) over the measured part of the stall."""
STALL_MEASURED: Final = "/loop/stall/measured:seconds"
"""Metric (as STALL_CPU): the wall time the two figures above cover: from
the watchdog's first reading in the step to the loop thread's reading at
the stall's end. The run-queue wait is at most this."""

_RANGE_BEGIN = C["RangeBegin"]
_RANGE_END = C["RangeEnd"]
_SAMPLE = C["StackSample"]
_METRIC = C["Metric"]
_LOOP = ResourceKind.LOOP
_TICK_NS = int(TICK * 1e9)
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_PROGRAMS: Final = frozenset({"_demo.py"})  # in the package, but programs
# The runner's frames stay: the encoder takes them out with the runpy frames
# outside them (``_encode._user_frames``), which it finds by them.
_RUNNER: Final = (
    _OWN_DIR + "_cli" + os.sep,
    _OWN_DIR + "_run.py",
    _OWN_DIR + "__main__.py",
)
_NEW_GC = sys.version_info >= (3, 12)


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
        # thread ident -> (t0, [sample, ...]) of the long step running there.
        self._early: dict[int, tuple[int, list[tuple[Any, ...]]]] = {}
        # thread ident -> (t0, time, cpu ns, run-queue ns): a reading of the
        # loop thread's schedstat, the first one in the step that began at t0
        # (or, t0 == 0, the latest between steps).
        self._cpu: dict[int, tuple[int, int, int, int]] = {}
        self._cpu_before: dict[int, tuple[int, int, int, int]] = {}  # the one before
        self._schedstat: dict[int, int] = {}  # native thread id -> open fd
        self._max_early = int(hooks.stall_ns / _TICK_NS) + 2
        # Off (EARLY_SAMPLES): sampling steps that are no stalls made frame
        # objects that changed object lifetimes in anyio's refcycle tests.
        self._early_ns = (
            max(_TICK_NS, hooks.stall_ns // 2) if EARLY_SAMPLES else 1 << 62
        )
        self._long_ns = (
            max(1, int(hooks.stall_ns * LONG_STEP))
            if hooks.stall_ns < (1 << 62)
            else 1 << 62
        )
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
        wait = TICK
        try:
            while not self._stop.wait(wait):
                now = clock()
                wait = TICK
                if watch:
                    for ts in hooks.live_threads():
                        t0 = ts.t0
                        early = self._early.get(ts.ident)
                        if early is not None and early[0] != t0:
                            # That long step ended without being a stall.
                            self._early.pop(ts.ident, None)
                        if t0:
                            # Sampled first: reading the CPU lets the GIL
                            # go, and the loop thread would move on.
                            age = now - t0
                            if age > hooks.stall_ns:
                                self._check(ts, t0)
                                wait = STALL_TICK
                            elif age > self._early_ns:
                                self._early_sample(ts, t0, now)
                            elif age > self._long_ns:
                                self._long_sample(ts, t0)
                        reading = self._cpu.get(ts.ident)
                        if reading is None or not t0 or reading[0] != t0:
                            self._read_cpu(ts, t0, now)
                if metrics is not None:
                    metrics.maybe_sample(now)
                for fn in tick_listeners:
                    fn(hooks, now)
        except Exception as exc:  # pragma: no cover - reported, tracing goes on
            hooks.fail("watchdog", exc)
        finally:
            for fd in self._schedstat.values():
                os.close(fd)
            self._schedstat.clear()

    def _read_cpu(self, ts: ThreadState, t0: int, now: int) -> None:
        """Reads the CPU time and run-queue wait of ``ts``'s thread (Linux):
        from its own thread, while it runs a step (or between steps), so
        that a stall's end can tell how much of it the OS ran the thread."""
        fields = self._stat(ts)
        if fields is None:
            self._cpu.pop(ts.ident, None)
            return
        before = self._cpu.get(ts.ident)
        if before is not None:
            self._cpu_before[ts.ident] = before
        self._cpu[ts.ident] = (t0, now, fields[0], fields[1])

    def _stat(self, ts: ThreadState) -> tuple[int, int] | None:
        """The CPU time and run-queue wait of ``ts``'s thread so far (Linux),
        from a file kept open, or None."""
        fd = self._schedstat.get(ts.native)
        try:
            if fd is None:
                fd = os.open(f"/proc/self/task/{ts.native}/schedstat", os.O_RDONLY)
                self._schedstat[ts.native] = fd
            fields = os.pread(fd, 128, 0).split()
            return int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):
            if fd is not None:  # the thread is gone
                os.close(self._schedstat.pop(ts.native))
            return None

    def _sample(self, ts: ThreadState) -> tuple[Any, ...] | None:
        frame = _frame_of(ts.ident)
        if frame is None:
            return None
        return (
            _SAMPLE,
            clock(),
            ts.native,
            ts.loop,
            ts.cur or -1,
            program_stack(frame),
        )

    def _early_sample(self, ts: ThreadState, t0: int, now: int) -> None:
        """Samples a step that may become a stall; reads its thread's CPU."""
        early = self._early.get(ts.ident)
        if early is None or early[0] != t0:
            early = self._early[ts.ident] = (t0, [])
        sample = self._sample(ts)
        if sample is not None and ts.t0 == t0:
            samples = early[1]
            samples.append(sample)
            if len(samples) > self._max_early:
                del samples[0]

    def _long_sample(self, ts: ThreadState, t0: int) -> None:
        """Samples a long step (past ``LONG_STEP`` of the threshold) into the
        trace: the line its time goes to, had it no stall. Should the step
        become one, the samples lie in its range, which begins at t0."""
        reading = self._cpu.get(ts.ident)
        if reading is not None and reading[0] == t0:
            stat = self._stat(ts)
            # Since the watchdog's first reading in the step, the time the
            # step itself took (on a CPU, or blocked in a call) is what it
            # did not spend waiting for a CPU. Under half the long-step
            # threshold, the OS made the step long, and a sample would blame
            # the line it happened to be at; a slow call is sampled however
            # loaded the machine (a CPU-bound step waiting half the time
            # for a CPU still takes its own time).
            if stat is not None:
                own = clock() - reading[1] - (stat[1] - reading[3])
                if own < self._long_ns // 2:
                    return
        sample = self._sample(ts)
        if sample is not None and ts.t0 == t0:  # not taken after the step
            self._hooks.thread_state().events.append(sample)

    def _check(self, ts: ThreadState, t0: int) -> None:
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
                # The samples taken before the stall go with it.
                ts.events.append((_RANGE_BEGIN, t0, STALL, _LOOP, ts.loop, None))
                early = self._early.pop(ts.ident, None)
                if early is not None and early[0] == t0:
                    ts.events.extend(early[1])
                    n = len(early[1])
            else:
                n = self._samples.get(ts.ident, 0)
            self._samples[ts.ident] = n + 1
            if n >= MAX_SAMPLES and n % 10:
                return
            sample = self._sample(ts)
            if sample is not None and ts.t0 == t0:  # not taken after the step
                events.append(sample)
                if stall_listeners:
                    stack = sample[5]
                    seen = self.seen.setdefault(ts.ident, (ts.cur, {}))[1]
                    at = seen.setdefault(stack[0] if stack else None, [0, stack])
                    at[0] += 1

    def stall_end(self, ts: ThreadState, t0: int, t1: int) -> None:
        """Called on the loop thread when a step from t0 to t1 was a stall."""
        with ts.lock:
            if ts.stall_t0 != t0:
                # The watchdog never got the GIL once the step was a stall
                # (a C call held it, or the OS did not run this thread): the
                # range is recorded whole, with the samples taken before.
                ts.events.append((_RANGE_BEGIN, t0, STALL, _LOOP, ts.loop, None))
                early = self._early.get(ts.ident)
                if early is not None and early[0] == t0:
                    ts.events.extend(early[1])
            self._early.pop(ts.ident, None)
            ts.stall_t0 = 0
            # The earliest reading that covers the step: the last one before
            # it (the watchdog may not have run in it at all: the loop thread
            # held the GIL, or the OS ran neither), if the time it adds before
            # the step is shorter than the step; else the first one in it.
            reading = None
            for r in (self._cpu_before.get(ts.ident), self._cpu.get(ts.ident)):
                if r is not None and (
                    2 * t0 - t1 <= r[1] <= t0 or (r[0] == t0 and r[1] < t1)
                ):
                    reading = r
                    break
            if reading is not None:
                cpu = _schedstat(ts.native)
                if cpu is not None:
                    # The time after the read: a wait for a CPU between the
                    # step's end and the read is in the figures, so it is
                    # in the time measured too.
                    _, t, cpu0, wait0 = reading
                    measured = max(0, clock() - t)
                    # Linux adds a wait when it ends: one going on at the
                    # first reading is counted whole, from before it. The
                    # wait is at most the time measured.
                    waited = min(max(0, cpu[1] - wait0), measured)
                    ts.events.extend(
                        (
                            (_METRIC, t1, STALL_CPU, max(0, cpu[0] - cpu0) / 1e9),
                            (_METRIC, t1, STALL_RUNQUEUE, waited / 1e9),
                            (_METRIC, t1, STALL_MEASURED, measured / 1e9),
                        )
                    )
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


def _is_own(filename: str, cache: dict[str, bool] = {}) -> bool:  # noqa: B006
    """Whether ``filename`` is aiotrace's own code (not a program in it)."""
    own = cache.get(filename)
    if own is None:
        path = os.path.abspath(filename)
        own = cache[filename] = (
            path.startswith(_OWN_DIR)
            and os.path.basename(path) not in _PROGRAMS
            and not path.startswith(_RUNNER)
        )
    return own


def program_stack(
    frame: FrameType | None, depth: int = SAMPLE_DEPTH
) -> tuple[Any, ...]:
    """Returns up to ``depth`` frames from ``frame`` outwards, as (code,
    lasti), leaving out aiotrace's own frames."""
    frames: list[tuple[Any, int]] = []
    append = frames.append
    while frame is not None and depth:
        code = frame.f_code
        if not _is_own(code.co_filename):
            append((code, frame.f_lasti))
            depth -= 1
        frame = frame.f_back
    return tuple(frames)


def _schedstat(native: int) -> tuple[int, int] | None:
    """Thread ``native``'s CPU time and run-queue wait so far, in ns (Linux's
    ``/proc/self/task/<tid>/schedstat``), or None where there is none."""
    try:
        with open(f"/proc/self/task/{native}/schedstat", "rb") as f:
            fields = f.read().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def _frame_of(ident: int) -> FrameType | None:
    """The current frame of thread ``ident``.

    Before Python 3.12, ``sys._current_frames()`` could start a collection
    while it holds the interpreter's thread-list lock: that runs Python code
    (GC callbacks, finalizers) that can let another thread take the GIL and
    then wait for that lock, a deadlock. So there, collections are off for
    the call, and back on after it only if they were on before: a program's
    own ``gc.disable()`` is kept. From 3.12 a collection only starts between
    bytecodes, never inside it, and the GC is left alone.
    """
    if _NEW_GC:
        return sys._current_frames().get(ident)
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return sys._current_frames().get(ident)
    finally:
        if enabled:
            gc.enable()
