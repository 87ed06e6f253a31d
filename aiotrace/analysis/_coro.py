"""Coroutine accounting: execution, scheduler wait and block time, by function."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..reader import CoroState

_RUNNABLE, _RUNNING, _WAITING, _NOT_EXIST = (
    CoroState.RUNNABLE,
    CoroState.RUNNING,
    CoroState.WAITING,
    CoroState.NOT_EXIST,
)

UNKNOWN = "(unlabelled)"
"""The group of coroutines whose label is not in the trace."""

UNKNOWN_REASON = "unknown"
"""The block reason of a coroutine first seen already WAITING."""


@dataclass
class CoroGroup:
    """CoroGroup sums the time of every coroutine of one coroutine function.

    ``name`` is the function's qualified name, as the trace labels the
    coroutine (the label's first word; the task's own name, if any, is left
    out). ``exec_ns`` is time RUNNING, ``sched_wait_ns`` time RUNNABLE
    (from creation, a yield or a wake-up to the next start), ``block_ns``
    time WAITING, split by the reason recorded when it blocked. Coroutines
    still alive at the end of the trace count up to its end.
    """

    name: str
    count: int = 0
    ended: int = 0
    exec_ns: int = 0
    sched_wait_ns: int = 0
    block_ns: dict[str, int] = field(default_factory=dict)

    @property
    def alive(self) -> int:
        """Coroutines of this group still alive at the end of the trace."""
        return self.count - self.ended

    @property
    def mean_exec_ns(self) -> float:
        """Execution time per coroutine."""
        return self.exec_ns / self.count if self.count else 0.0

    @property
    def mean_sched_wait_ns(self) -> float:
        """Scheduler wait (time RUNNABLE) per coroutine."""
        return self.sched_wait_ns / self.count if self.count else 0.0

    @property
    def blocked_ns(self) -> int:
        """Total block time, every reason together."""
        return sum(self.block_ns.values())

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict of the group's figures."""
        return {
            "name": self.name,
            "count": self.count,
            "ended": self.ended,
            "exec_ns": self.exec_ns,
            "mean_exec_ns": round(self.mean_exec_ns),
            "sched_wait_ns": self.sched_wait_ns,
            "mean_sched_wait_ns": round(self.mean_sched_wait_ns),
            "block_ns": dict(sorted(self.block_ns.items(), key=lambda kv: -kv[1])),
        }


def function_name(label: str) -> str:
    """Returns the coroutine function's name from a coroutine's label.

    The label is the function's qualified name, then the task's name if it
    has one. A name in angle brackets (trio's ``<TrioToken.run_sync_soon
    task>``) is kept whole.
    """
    if not label:
        return UNKNOWN
    if label[0] == "<":
        close = label.find(">")
        if close > 0:
            return label[: close + 1]
    return label.split(" ", 1)[0]


class CoroAccounting:
    """CoroAccounting follows each live coroutine's state and sums it into groups.

    Invariant: ``live`` holds exactly the coroutines seen and not yet at
    NOT_EXIST, so memory follows the coroutines alive, not the total.
    Each entry is ``[state, since_ns, block_reason, exec, sched, block, label]``
    (``block`` a dict by reason, or None). The analysis pass updates entries
    itself, in its hot loop; this class names, folds and finishes them.
    """

    def __init__(self) -> None:
        self.live: dict[int, list[Any]] = {}
        self.groups: dict[str, CoroGroup] = {}

    def label(self, coro: int, label: str) -> None:
        """Names a coroutine (the last label counts)."""
        st = self.live.get(coro)
        if st is not None:
            st[6] = label

    def name(self, coro: int) -> str:
        """Returns the live coroutine's label, or ""."""
        st = self.live.get(coro)
        return st[6] if st is not None else ""

    @staticmethod
    def _close(st: list[Any], t: int) -> None:
        dt = t - st[1]
        if dt <= 0:
            return
        state = st[0]
        if state is _RUNNING:
            st[3] += dt
        elif state is _RUNNABLE:
            st[4] += dt
        elif state is _WAITING:
            block = st[5]
            if block is None:
                block = st[5] = {}
            block[st[2]] = block.get(st[2], 0) + dt

    def fold(self, st: list[Any], *, ended: bool) -> None:
        """Adds a coroutine's state (a ``live`` entry) to its group."""
        name = function_name(st[6])
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = CoroGroup(name)
        g.count += 1
        g.ended += ended
        g.exec_ns += st[3]
        g.sched_wait_ns += st[4]
        if st[5]:
            for reason, ns in st[5].items():
                g.block_ns[reason] = g.block_ns.get(reason, 0) + ns

    def finish(self, end_ns: int) -> list[CoroGroup]:
        """Counts live coroutines up to ``end_ns``; returns the groups.

        Groups come most execution time first.
        """
        for st in self.live.values():
            self._close(st, end_ns)
            self.fold(st, ended=False)
        self.live.clear()
        return sorted(self.groups.values(), key=lambda g: (-g.exec_ns, g.name))
