"""Loop utilisation: time each loop spends running callbacks and idle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..reader import NO_THREAD, LoopID, LoopState, ThreadID

_RUNNING, _IDLE, _NOT_EXIST = LoopState.RUNNING, LoopState.IDLE, LoopState.NOT_EXIST


@dataclass
class LoopUsage:
    """LoopUsage is how busy one event loop was over the time it was traced.

    ``busy_ns`` is time RUNNING (running callbacks and coroutine steps),
    ``idle_ns`` time IDLE (waiting in its selector with a timeout), and
    ``span_ns`` the time from its first to its last transition in the trace
    (its ``close()``, or the end of the trace). A loop that never reports
    idle time (uvloop waits in C) looks fully busy.
    """

    loop: LoopID
    thread: ThreadID
    label: str = ""
    busy_ns: int = 0
    idle_ns: int = 0
    span_ns: int = 0
    start_ns: int = 0

    @property
    def utilisation(self) -> float:
        """Busy time over the traced span, 0..1."""
        return self.busy_ns / self.span_ns if self.span_ns > 0 else 0.0

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
        }


class LoopAccounting:
    """LoopAccounting sums each loop's RUNNING and IDLE time from its transitions."""

    def __init__(self) -> None:
        self.usage: dict[int, LoopUsage] = {}
        # loop -> [state, since]; gone once the loop is closed.
        self.state: dict[int, list[Any]] = {}

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
        return sorted(self.usage.values(), key=lambda u: u.loop)
