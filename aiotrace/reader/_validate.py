"""Validation of an event stream's invariants, beyond the format's own.

The Reader checks that a trace is well formed. The Validator checks that
what it says makes sense: state machines move along legal edges, tasks and
ranges begin before they end, regions nest in their coroutine, and it
surfaces the misuse the annotations recorded. Tests run it over the traces
of real programs; ``aiotrace dump --validate`` runs it from the shell.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

from ._model import (
    NO_COROUTINE,
    CoroState,
    Event,
    EventKind,
    LoopState,
    ResourceKind,
)

MISUSE = "aiotrace/misuse"
LOST_METRIC = "/aiotrace/lost:events"

MAX_OPEN_TASKS = 1 << 20
"""Begun tasks remembered until their end; beyond it the oldest half go (a
program that begins tasks and never ends them), as in the reader."""

RECENT_ENDS = 1 << 16
"""Ended tasks remembered, to catch a task that ends twice: the most recent
ones, so memory stays bounded however many tasks a trace has."""

# Legal coroutine edges, as the execution tracer records them.
_CORO_EDGES = {
    (CoroState.NOT_EXIST, CoroState.RUNNABLE),
    (CoroState.RUNNABLE, CoroState.RUNNING),
    (CoroState.RUNNING, CoroState.WAITING),
    (CoroState.RUNNING, CoroState.RUNNABLE),
    (CoroState.RUNNING, CoroState.NOT_EXIST),
    (CoroState.WAITING, CoroState.RUNNABLE),
}


_RANGE_KINDS = frozenset(
    (EventKind.RANGE_BEGIN, EventKind.RANGE_ACTIVE, EventKind.RANGE_END)
)


@dataclass(frozen=True, slots=True)
class Problem:
    """Problem is one broken invariant: when, in which event, and what."""

    time: int
    kind: EventKind
    message: str

    def __str__(self) -> str:
        return f"{self.time} {self.kind.name}: {self.message}"


class Validator:
    """Validator checks the invariants of any event stream, event by event.

    Feed it events in the order a Reader yields them with ``check`` (or call
    ``validate``); ``problems`` lists what it found. Resources first seen
    mid-trace (a flight-recorder snapshot, a coroutine alive before tracing
    began) are taken as they come.

    A trace whose writer dropped events says so: a ``/aiotrace/lost:events``
    metric in the generation where the writer went on after the gap. The
    problems found in that generation are the gap's, not the trace's, and
    what the validator knew may be out of date: it forgets them, and takes
    what follows as it comes (a range that ends without its begin, a
    coroutine in another state than it last saw).

    Memory is bounded: live coroutines and loops, open ranges and regions,
    begun tasks not yet ended (at most ``MAX_OPEN_TASKS``) and the
    ``RECENT_ENDS`` most recent task ends.
    """

    def __init__(self) -> None:
        self._committed: list[Problem] = []
        self._pending: list[Problem] = []  # this generation's, until it ends
        self._coro: dict[int, CoroState] = {}
        self._loop: dict[int, LoopState] = {}
        self._tasks_open: dict[int, None] = {}  # begun, not ended, oldest first
        self._tasks_ended: set[int] = set()
        self._ended_order: deque[int] = deque()
        self._ranges: set[tuple[str, ResourceKind, int]] = set()
        self._regions: dict[int, list[str]] = {}  # coroutine -> open region types
        self._last_time: int | None = None
        self._lossy = False  # events were lost: unmatched range ends go

    @property
    def problems(self) -> list[Problem]:
        """The broken invariants found so far, in the order found."""
        return self._committed + self._pending

    def validate(self, events: Iterable[Event]) -> list[Problem]:
        """Checks every event of ``events``; returns the problems found."""
        for ev in events:
            self.check(ev)
        return self.problems

    def check(self, ev: Event) -> None:
        """Checks one event against what came before it."""
        kind = ev[0]
        if kind is EventKind.SYNC:
            self._last_time = None  # a generation may start a little early
            self._committed += self._pending
            self._pending = []
            return
        if kind is EventKind.METRIC and ev.metric.name == LOST_METRIC:
            self._lost()
        time = ev[1]
        if self._last_time is not None and time < self._last_time:
            self._problem(ev, f"time goes backwards from {self._last_time}")
        self._last_time = time
        if kind is EventKind.STATE_TRANSITION:
            self._transition(ev)
        elif kind is EventKind.TASK_BEGIN:
            self._task_begin(ev)
        elif kind is EventKind.TASK_END:
            self._task_end(ev)
        elif kind in (EventKind.REGION_BEGIN, EventKind.REGION_END):
            self._region(ev)
        elif kind in (
            EventKind.RANGE_BEGIN,
            EventKind.RANGE_ACTIVE,
            EventKind.RANGE_END,
        ):
            self._range(ev)
        elif kind is EventKind.LOG and ev.log.category == MISUSE:
            self._problem(ev, f"annotation misuse: {ev.log.message}")

    def _problem(self, ev: Event, message: str) -> None:
        self._pending.append(Problem(ev.time, ev.kind, message))

    def _lost(self) -> None:
        """Events were dropped in this generation, before this point."""
        self._pending.clear()
        self._lossy = True
        self._coro.clear()
        self._loop.clear()
        self._ranges.clear()
        self._regions.clear()

    def _transition(self, ev: Event) -> None:
        st = ev.state_transition
        rid = st.resource.id
        if st.resource.kind is ResourceKind.COROUTINE:
            old, new = st.old, st.new
            if type(old) is not CoroState:
                old = CoroState(old)
            if type(new) is not CoroState:
                new = CoroState(new)
            known = self._coro.get(rid)
            if old is CoroState.UNDETERMINED:
                pass  # a coroutine that existed before: any state goes
            elif (old, new) not in _CORO_EDGES:
                self._problem(ev, f"coroutine {rid}: illegal {old.name}->{new.name}")
            elif known is not None and known is not old:
                self._problem(
                    ev,
                    f"coroutine {rid} goes {old.name}->{new.name} but was {known.name}",
                )
            if new is CoroState.NOT_EXIST:
                self._coro.pop(rid, None)
                open_regions = self._regions.pop(rid, None)
                if open_regions:
                    self._problem(
                        ev, f"coroutine {rid} ended with regions open: {open_regions}"
                    )
            else:
                self._coro[rid] = new
        elif st.resource.kind is ResourceKind.LOOP:
            old_l, new_l = st.old, st.new
            if type(old_l) is not LoopState:
                old_l = LoopState(old_l)
            if type(new_l) is not LoopState:
                new_l = LoopState(new_l)
            known_l = self._loop.get(rid)
            if (
                known_l is not None
                and old_l is not LoopState.UNDETERMINED
                and known_l is not old_l
            ):
                self._problem(
                    ev,
                    f"loop {rid} goes {old_l.name}->{new_l.name} but was "
                    f"{known_l.name}",
                )
            if new_l is LoopState.NOT_EXIST:
                self._loop.pop(rid, None)
            else:
                self._loop[rid] = new_l

    def _task_begin(self, ev: Event) -> None:
        tid = ev.task.id
        if tid in self._tasks_open or tid in self._tasks_ended:
            self._problem(ev, f"task {tid} begins twice")
        opened = self._tasks_open
        opened[tid] = None
        if len(opened) > MAX_OPEN_TASKS:
            for old in list(islice(opened, MAX_OPEN_TASKS // 2)):
                del opened[old]

    def _task_end(self, ev: Event) -> None:
        tid = ev.task.id
        ended = self._tasks_ended
        if tid in ended:
            self._problem(ev, f"task {tid} ends twice")
            return
        self._tasks_open.pop(tid, None)
        ended.add(tid)
        order = self._ended_order
        order.append(tid)
        if len(order) > RECENT_ENDS:
            ended.discard(order.popleft())

    def _region(self, ev: Event) -> None:
        # Regions nest per coroutine; where the coroutine is unknown (no
        # execution tracer), interleaved coroutines on one thread are normal
        # and nesting cannot be checked.
        coro = ev.coroutine
        if coro == NO_COROUTINE:
            return
        stack = self._regions.setdefault(coro, [])
        rtype = ev.region.type
        if ev.kind is EventKind.REGION_BEGIN:
            stack.append(rtype)
        elif stack and stack[-1] == rtype:
            stack.pop()
        elif rtype in stack:
            self._problem(
                ev, f"region {rtype!r} of coroutine {coro} ends out of order: {stack}"
            )
            stack.reverse()
            stack.remove(rtype)
            stack.reverse()
        # else: begun before the trace did, which is allowed

    def _range(self, ev: Event) -> None:
        r = ev.range
        key = (r.name, r.scope.kind, r.scope.id)
        if ev.kind is EventKind.RANGE_END:
            if key not in self._ranges and not self._lossy:
                # A range active before the trace shows up as RANGE_ACTIVE;
                # an end with neither is a writer bug (or a lost begin).
                self._problem(ev, f"range {r.name!r} on {r.scope} ends without a begin")
            self._ranges.discard(key)
        else:
            if ev.kind is EventKind.RANGE_BEGIN and key in self._ranges:
                self._problem(ev, f"range {r.name!r} on {r.scope} begins twice")
            self._ranges.add(key)


def validate(events: Iterable[Event]) -> list[Problem]:
    """Checks a stream of events; returns the broken invariants, if any."""
    return Validator().validate(events)
