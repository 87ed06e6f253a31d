"""Typed events: order a generation's raw events and give them context.

The reader tracks, per thread, the loop it runs and the coroutine it is
executing, the way Go's reader tracks Ms, Ps and Gs. That is what fills
``Event.coroutine`` and ``Event.loop`` for annotations and transitions.

A transition's old state is the one its event type implies, as in Go;
checking it against the coroutine's history is the validator's job.

Events arrive from the decoder as flat tuples ``(time, thread, code,
*args)``, stacks as ids into the generation's table, each step record
followed by its second transition (see ``_decode``); they are dispatched
on their integer code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from operator import itemgetter
from typing import Any

from .._format.spec import STEPS, C
from . import _impl
from ._decode import STEP_END, Generation
from ._model import (
    NO_COROUTINE,
    NO_LOOP,
    NO_STACK,
    NO_TASK,
    NO_THREAD,
    CoroState,
    Event,
    EventKind,
    Label,
    Log,
    LoopState,
    Metric,
    Range,
    Region,
    ResourceID,
    ResourceKind,
    StateTransition,
    Sync,
    Task,
)

LOST_METRIC = "/aiotrace/lost:events"
"""The metric under which the reader reports events dropped by the writer."""

MAX_OPEN_TASKS = 1 << 20
"""Begun tasks remembered for their TASK_END; beyond it the oldest half go.

Only a program that leaks tasks (begins and never ends them) gets near it;
an evicted task's TASK_END reads as one whose TASK_BEGIN is not in the trace.
"""

_new = tuple.__new__
_by_time = itemgetter(0)

_ST = EventKind.STATE_TRANSITION
_COROUTINE, _LOOP = ResourceKind.COROUTINE, ResourceKind.LOOP
_NOT_EXIST, _RUNNABLE, _RUNNING, _WAITING = (
    CoroState.NOT_EXIST,
    CoroState.RUNNABLE,
    CoroState.RUNNING,
    CoroState.WAITING,
)

# Handler(event tuple, [loop, coroutine, outer coroutines] of its thread) ->
# Event, or None for a restated status that says nothing new.
_Handler = Callable[[tuple[Any, ...], list[Any]], Event | None]


class Typer:
    """Typer turns generations into ordered, typed Events with their context.

    Each generation restates the coroutines, loops and open ranges alive at
    its start (docs/format.md). As Go's trace reader, the Typer yields a
    restated status only when it tells something new: for a resource first
    seen there (a flight-recorder snapshot), or whose state it did not
    know. So a whole trace reads the same however many generations it has.
    """

    def __init__(self) -> None:
        # thread -> [loop, coroutine, coroutines it interrupted]: an eager
        # task's first step runs inside its creator's step, on its thread.
        self._ctx: dict[int, list[Any]] = {}
        self._loop: dict[int, LoopState] = {}
        self._coro: dict[int, CoroState] = {}
        self._labels: dict[tuple[int, int], str] = {}
        self._open: set[tuple[Any, int, int]] = set()
        self._tasks: dict[int, tuple[int, str]] = {}  # id -> (parent, type)
        self._stacks: list[Any] = [NO_STACK]  # the generation's stack table
        self.lost_events = 0
        by_name: dict[str, _Handler] = {
            "EventsLost": self._lost,
            "Metric": self._metric,
            "Label": self._label,
            "StackSample": self._sample,
            "RangeBegin": self._range(EventKind.RANGE_BEGIN),
            "RangeActive": self._range_active,
            "RangeEnd": self._range(EventKind.RANGE_END),
            "TaskBegin": self._task_begin,
            "TaskEnd": self._task_end,
            "RegionBegin": self._region(EventKind.REGION_BEGIN),
            "RegionEnd": self._region(EventKind.REGION_END),
            "Log": self._log,
            "CoroCreate": self._coro_create,
            "CoroStart": self._coro_start,
            "CoroBlock": self._coro_block,
            "CoroYield": self._coro_yield,
            "CoroUnblock": self._coro_unblock,
            "CoroEnd": self._coro_end,
            "CoroStatus": self._coro_status,
            "CoroWaiting": self._coro_waiting,
            "LoopStatus": self._loop_status,
            "LoopRun": self._loop_change(LoopState.RUNNING),
            "LoopIdle": self._loop_change(LoopState.IDLE),
            "LoopDestroy": self._loop_change(LoopState.NOT_EXIST),
        }
        self._handlers = [by_name[n] if n else None for n in handler_names()]
        self._c = _impl.C  # the C twin of events(), or None

    def events(self, gen: Generation) -> Iterator[Event]:
        """Returns the generation's events: its SYNC, then the rest by time."""
        if self._c is None:
            return self._events(gen)
        sync = self._sync(gen)
        raw = self._records(gen)
        it: Iterator[Event] = self._c.TypeIter(
            raw,
            self._ctx,
            self._loop,
            self._coro,
            self._labels,
            self._open,
            self._tasks,
            gen.stacks,
            self,
            sync,
            self._forget_idle_threads,
        )
        return it

    def _events(self, gen: Generation) -> Iterator[Event]:
        """Yields the generation's events: its SYNC, then the rest by time."""
        yield self._sync(gen)
        raw = self._records(gen)
        handlers = self._handlers
        ctx = self._ctx
        for ev in raw:
            c = ctx.get(ev[1])
            if c is None:
                c = ctx[ev[1]] = [NO_LOOP, NO_COROUTINE, []]
            out = handlers[ev[2]](ev, c)
            if out is not None:
                yield out
        self._forget_idle_threads()

    def _sync(self, gen: Generation) -> Event:
        """The generation's SYNC event; counts the losses it reports."""
        self.lost_events = max(self.lost_events, gen.lost_events)
        sync = Sync(gen.wall_time_ns, gen.lost_events, gen.number)
        return _new(
            Event,
            (
                EventKind.SYNC,
                gen.time,
                NO_COROUTINE,
                NO_LOOP,
                NO_THREAD,
                NO_STACK,
                sync,
            ),
        )

    def _records(self, gen: Generation) -> list[tuple[Any, ...]]:
        """Takes the generation's stack table, and returns its records
        sorted by time (stable: same-time records keep their order)."""
        self._stacks = gen.stacks
        raw = gen.records
        c = self._c
        if c is None or not c.sort_by_time(raw):  # C: unless a time needs > 64 bits
            raw.sort(key=_by_time)
        return raw

    def _forget_idle_threads(self) -> None:
        # A thread that runs no loop and no coroutine has the context a new
        # thread gets: forgetting it changes nothing, and bounds _ctx by the
        # threads that are busy, not by every thread the program ever had.
        ctx = self._ctx
        idle = [NO_LOOP, NO_COROUTINE, []]
        for thread in [t for t, c in ctx.items() if c == idle]:
            del ctx[thread]

    # Annotations and other events in the thread's context.

    def _metric(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        d = _new(Metric, (ev[3], ev[4]))
        return _new(Event, (EventKind.METRIC, ev[0], c[1], c[0], ev[1], NO_STACK, d))

    def _lost(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        self.lost_events += ev[3]
        d = Metric(LOST_METRIC, self.lost_events)
        return _new(Event, (EventKind.METRIC, ev[0], c[1], c[0], ev[1], NO_STACK, d))

    def _label(self, ev: tuple[Any, ...], c: list[Any]) -> Event | None:
        _, _, _, kind, rid, label = ev
        if kind in (_COROUTINE, _LOOP):
            if self._labels.get((kind, rid)) == label:
                return None
            self._labels[kind, rid] = label
        d = Label(label, ResourceID(ResourceKind(kind), rid))
        return _new(Event, (EventKind.LABEL, ev[0], c[1], c[0], ev[1], NO_STACK, d))

    def _sample(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        t, _, _, thread, loop, coro, stack = ev
        return _new(
            Event,
            (EventKind.STACK_SAMPLE, t, coro, loop, thread, self._stacks[stack], None),
        )

    def _range_active(self, ev: tuple[Any, ...], c: list[Any]) -> Event | None:
        _, _, _, name, scope_kind, scope_id = ev
        key = (name, scope_kind, scope_id)
        if key in self._open:
            return None
        self._open.add(key)
        d = Range(name, ResourceID(ResourceKind(scope_kind), scope_id))
        return _new(
            Event, (EventKind.RANGE_ACTIVE, ev[0], c[1], c[0], ev[1], NO_STACK, d)
        )

    def _range(self, kind: EventKind) -> _Handler:
        opened = self._open
        begin = kind is EventKind.RANGE_BEGIN

        def handle(ev: tuple[Any, ...], c: list[Any]) -> Event:
            _, _, _, name, scope_kind, scope_id, stack = ev
            if begin:
                opened.add((name, scope_kind, scope_id))
            else:
                opened.discard((name, scope_kind, scope_id))
            d = Range(name, ResourceID(ResourceKind(scope_kind), scope_id))
            return _new(Event, (kind, ev[0], c[1], c[0], ev[1], self._stacks[stack], d))

        return handle

    def _task_begin(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        _, _, _, task, parent, type_, stack = ev
        tasks = self._tasks
        tasks[task] = (parent, type_)
        if len(tasks) > MAX_OPEN_TASKS:
            for old in list(islice(tasks, MAX_OPEN_TASKS // 2)):
                del tasks[old]
        d = _new(Task, (task, parent, type_))
        stack = self._stacks[stack]
        return _new(Event, (EventKind.TASK_BEGIN, ev[0], c[1], c[0], ev[1], stack, d))

    def _task_end(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        _, _, _, task, stack = ev
        parent, type_ = self._tasks.pop(task, (NO_TASK, ""))
        d = _new(Task, (task, parent, type_))
        stack = self._stacks[stack]
        return _new(Event, (EventKind.TASK_END, ev[0], c[1], c[0], ev[1], stack, d))

    def _region(self, kind: EventKind) -> _Handler:
        def handle(ev: tuple[Any, ...], c: list[Any]) -> Event:
            _, _, _, task, type_, stack = ev
            d = _new(Region, (task, type_))
            return _new(Event, (kind, ev[0], c[1], c[0], ev[1], self._stacks[stack], d))

        return handle

    def _log(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        _, _, _, task, category, message, stack = ev
        d = _new(Log, (task, category, message))
        stack = self._stacks[stack]
        return _new(Event, (EventKind.LOG, ev[0], c[1], c[0], ev[1], stack, d))

    # Coroutine transitions. ev.coroutine is the context before the event.

    def _coro_create(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        _, _, _, coro, stack = ev
        self._coro[coro] = _RUNNABLE
        r = _new(ResourceID, (_COROUTINE, coro))
        d = _new(StateTransition, (r, "", NO_STACK, _NOT_EXIST, _RUNNABLE))
        return _new(Event, (_ST, ev[0], c[1], c[0], ev[1], self._stacks[stack], d))

    def _coro_start(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        coro = ev[3]
        self._coro[coro] = _RUNNING
        r = _new(ResourceID, (_COROUTINE, coro))
        d = _new(StateTransition, (r, "", NO_STACK, _RUNNABLE, _RUNNING))
        out = _new(Event, (_ST, ev[0], c[1], c[0], ev[1], NO_STACK, d))
        if c[1] != NO_COROUTINE:  # enter: an eager task runs inside its creator
            c[2].append(c[1])
        c[1] = coro
        return out

    def _coro_block(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        _, _, _, coro, reason, stack = ev
        self._coro[coro] = _WAITING
        stack = self._stacks[stack]
        r = _new(ResourceID, (_COROUTINE, coro))
        d = _new(StateTransition, (r, reason, stack, _RUNNING, _WAITING))
        out = _new(Event, (_ST, ev[0], c[1], c[0], ev[1], stack, d))
        if c[1] == coro:
            _leave(c)
        return out

    def _coro_yield(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        _, _, _, coro, stack = ev
        self._coro[coro] = _RUNNABLE
        stack = self._stacks[stack]
        r = _new(ResourceID, (_COROUTINE, coro))
        d = _new(StateTransition, (r, "yield", stack, _RUNNING, _RUNNABLE))
        out = _new(Event, (_ST, ev[0], c[1], c[0], ev[1], stack, d))
        if c[1] == coro:
            _leave(c)
        return out

    def _coro_end(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        _, _, _, coro, reason = ev
        self._coro.pop(coro, None)
        self._labels.pop((_COROUTINE, coro), None)
        r = _new(ResourceID, (_COROUTINE, coro))
        d = _new(StateTransition, (r, reason, NO_STACK, _RUNNING, _NOT_EXIST))
        out = _new(Event, (_ST, ev[0], c[1], c[0], ev[1], NO_STACK, d))
        if c[1] == coro:
            _leave(c)
        return out

    def _coro_unblock(self, ev: tuple[Any, ...], c: list[Any]) -> Event:
        _, _, _, coro, reason = ev
        self._coro[coro] = _RUNNABLE
        r = _new(ResourceID, (_COROUTINE, coro))
        d = _new(StateTransition, (r, reason, NO_STACK, _WAITING, _RUNNABLE))
        return _new(Event, (_ST, ev[0], c[1], c[0], ev[1], NO_STACK, d))

    def _coro_status(self, ev: tuple[Any, ...], c: list[Any]) -> Event | None:
        _, _, _, coro, state = ev
        new = CoroState(state)
        if self._coro.get(coro) is new:
            return None  # restated: nothing new
        if new is _NOT_EXIST:
            self._coro.pop(coro, None)
        else:
            self._coro[coro] = new
        r = ResourceID(_COROUTINE, coro)
        d = StateTransition(r, "", NO_STACK, CoroState.UNDETERMINED, new)
        out = _new(Event, (_ST, ev[0], c[1], c[0], ev[1], NO_STACK, d))
        if new is _RUNNING and c[1] != coro:  # a generation restates it
            if c[1] != NO_COROUTINE:
                c[2].append(c[1])
            c[1] = coro
        return out

    def _coro_waiting(self, ev: tuple[Any, ...], c: list[Any]) -> Event | None:
        _, _, _, coro, reason, stack = ev
        if self._coro.get(coro) is _WAITING:
            return None  # restated: nothing new
        self._coro[coro] = _WAITING
        stack = self._stacks[stack]
        r = ResourceID(_COROUTINE, coro)
        d = StateTransition(r, reason, stack, CoroState.UNDETERMINED, _WAITING)
        return _new(Event, (_ST, ev[0], c[1], c[0], ev[1], stack, d))

    # Loop transitions; the thread's loop is the last one it ran.

    def _loop_status(self, ev: tuple[Any, ...], c: list[Any]) -> Event | None:
        _, _, _, loop, state = ev
        new = LoopState(state)
        if self._loop.get(loop) is new:
            c[0] = loop  # restated: nothing new, but it sets the context
            return None
        self._loop[loop] = new
        d = StateTransition(
            ResourceID(_LOOP, loop), "", NO_STACK, LoopState.UNDETERMINED, new
        )
        out = _new(Event, (_ST, ev[0], c[1], c[0], ev[1], NO_STACK, d))
        c[0] = loop if new is not LoopState.NOT_EXIST else NO_LOOP
        return out

    def _loop_change(self, new: LoopState) -> _Handler:
        implied = {LoopState.RUNNING: LoopState.IDLE, LoopState.IDLE: LoopState.RUNNING}
        states = self._loop

        def handle(ev: tuple[Any, ...], c: list[Any]) -> Event:
            loop = ev[3]
            old = implied.get(new) or states.get(loop, LoopState.UNDETERMINED)
            if new is LoopState.NOT_EXIST:
                states.pop(loop, None)
            else:
                states[loop] = new
            d = StateTransition(ResourceID(_LOOP, loop), "", NO_STACK, old, new)
            out = _new(Event, (_ST, ev[0], c[1], c[0], ev[1], NO_STACK, d))
            c[0] = loop if new is not LoopState.NOT_EXIST else NO_LOOP
            return out

        return handle


def _leave(c: list[Any]) -> None:
    c[1] = c[2].pop() if c[2] else NO_COROUTINE


def handler_names() -> list[str | None]:
    """The name of the handler of each record code (the Typer's and the C
    twin's dispatch table).

    Indexed by wire code. A step record reads as its CoroStart; the decoder
    stores its second transition under that one's code plus STEP_END. Sync
    never reaches the Typer: it makes a Generation.
    """
    names: list[str | None] = [None] * (2 * STEP_END)
    for name, code in C.items():
        if name != "Sync" and name not in STEPS:
            names[code] = name
    for step, (start, end) in STEPS.items():
        names[C[step]] = start
        names[C[end] + STEP_END] = end
    return names
