"""Loop utilisation: time each loop spends running callbacks and idle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..reader import NO_THREAD, LoopID, LoopState, ThreadID

_RUNNING, _IDLE, _NOT_EXIST = LoopState.RUNNING, LoopState.IDLE, LoopState.NOT_EXIST

LOOP_CPU = "/loop/cpu:seconds"
"""Metric (on the loop's thread): the CPU time that thread has used."""
LOOP_RUNQUEUE = "/loop/runqueue:seconds"
"""Metric (on the loop's thread, Linux): the time that thread has waited
for a CPU while runnable."""


@dataclass
class LoopUsage:
    """LoopUsage is how busy one event loop was over the time it was traced.

    ``busy_ns`` is time RUNNING (running callbacks and coroutine steps),
    ``idle_ns`` time IDLE (waiting in its selector with a timeout), and
    ``span_ns`` the time from its first to its last transition in the trace
    (its ``close()``, or the end of the trace). A loop that never reports
    idle time (uvloop waits in C) looks fully busy.

    Busy is wall-clock time: a loop the OS does not run while it has work
    counts as busy. ``cpu_ns`` is the CPU time the loop's thread used, and
    ``runqueue_ns`` the time it waited for a CPU (Linux), over ``cpu_span_ns``
    (from the first to the last of the metric samples that measure them;
    all 0 in a trace without them, e.g. with metrics off).
    """

    loop: LoopID
    thread: ThreadID
    label: str = ""
    busy_ns: int = 0
    idle_ns: int = 0
    span_ns: int = 0
    start_ns: int = 0
    cpu_ns: int = 0
    runqueue_ns: int = 0
    cpu_span_ns: int = 0

    @property
    def utilisation(self) -> float:
        """Busy time over the traced span, 0..1."""
        return self.busy_ns / self.span_ns if self.span_ns > 0 else 0.0

    @property
    def cpu_utilisation(self) -> float | None:
        """CPU time of the loop's thread over the time measured, 0..1, or
        None if the trace does not measure it."""
        if self.cpu_span_ns <= 0:
            return None
        return self.cpu_ns / self.cpu_span_ns

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict of the loop's figures."""
        return {
            "loop": self.loop,
            "thread": self.thread,
            "label": self.label,
            "busy_ns": self.busy_ns,
            "idle_ns": self.idle_ns,
            "span_ns": self.span_ns,
            "utilisation": round(self.utilisation, 6),
            "cpu_ns": self.cpu_ns,
            "runqueue_ns": self.runqueue_ns,
            "cpu_span_ns": self.cpu_span_ns,
            "cpu_utilisation": (
                None if (c := self.cpu_utilisation) is None else round(c, 6)
            ),
        }


class LoopAccounting:
    """LoopAccounting sums each loop's RUNNING and IDLE time from its transitions."""

    def __init__(self) -> None:
        self.usage: dict[int, LoopUsage] = {}
        # loop -> [state, since]; gone once the loop is closed.
        self.state: dict[int, list[Any]] = {}
        # (loop, metric) -> [first time, first value, last time, last value]
        self._cpu: dict[tuple[int, str], list[float]] = {}

    def transition(
        self, loop: int, t: int, new: LoopState, thread: int, *, restated: bool
    ) -> None:
        """Records that ``loop`` entered ``new`` at ``t`` on ``thread``.

        ``restated`` marks a status record (old state UNDETERMINED): each
        generation restates the loops alive, and a restatement of the state
        already known changes nothing.
        """
        u = self.usage.get(loop)
        if u is None:
            u = self.usage[loop] = LoopUsage(LoopID(loop), ThreadID(thread))
            u.start_ns = t
        elif u.thread == NO_THREAD:
            u.thread = ThreadID(thread)
        st = self.state.get(loop)
        if st is not None:
            if new is st[0] and restated:
                return  # a generation restating what is known
            self._close(u, st, t)
        if new is _NOT_EXIST:
            self.state.pop(loop, None)
        else:
            self.state[loop] = [new, t]

    def metric(self, loop: int, thread: int, t: int, name: str, value: float) -> None:
        """Takes a loop's CPU or run-queue metric (cumulative seconds)."""
        if loop < 0:
            found = next(
                (u.loop for u in self.usage.values() if u.thread == thread), None
            )
            if found is None:
                return
            loop = found
        m = self._cpu.get((loop, name))
        if m is None:
            self._cpu[(loop, name)] = [t, value, t, value]
        elif value >= m[3]:
            m[2], m[3] = t, value

    def label(self, loop: int, label: str) -> None:
        """Names a loop."""
        u = self.usage.get(loop)
        if u is not None:
            u.label = label

    def thread_of(self, loop: int) -> int | None:
        """Returns the thread ``loop`` last ran on, if known."""
        u = self.usage.get(loop)
        return u.thread if u is not None else None

    @staticmethod
    def _close(u: LoopUsage, st: list[Any], t: int) -> None:
        dt = t - st[1]
        if dt > 0:
            if st[0] is _RUNNING:
                u.busy_ns += dt
            elif st[0] is _IDLE:
                u.idle_ns += dt
        u.span_ns = max(u.span_ns, t - u.start_ns)

    def finish(self, end_ns: int) -> list[LoopUsage]:
        """Counts open loops up to ``end_ns``; returns loops by id."""
        for loop, st in self.state.items():
            self._close(self.usage[loop], st, end_ns)
        self.state.clear()
        for (loop, name), (t0, v0, t1, v1) in self._cpu.items():
            u = self.usage.get(loop)
            if u is None:
                continue
            ns = round((v1 - v0) * 1e9)
            if name == LOOP_CPU:
                u.cpu_ns, u.cpu_span_ns = ns, int(t1 - t0)
            else:
                u.runqueue_ns = ns
        return sorted(self.usage.values(), key=lambda u: u.loop)
