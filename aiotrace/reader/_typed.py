"""Typed events: order a generation's raw events and give them context.

The reader tracks, per thread, the loop it runs and the coroutine it is
executing, and per coroutine and loop their last known state, the way Go's
reader tracks Ms, Ps and Gs. That is what fills ``Event.coroutine`` and
``Event.loop`` for annotations, and ``old`` for state transitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any

from ._decode import Generation, RawEvent
from ._model import (
    NO_COROUTINE,
    NO_LOOP,
    NO_STACK,
    NO_TASK,
    CoroID,
    CoroState,
    Event,
    EventKind,
    Label,
    Log,
    LoopID,
    LoopState,
    Metric,
    Range,
    Region,
    ResourceID,
    ResourceKind,
    StateTransition,
    Sync,
    Task,
    TaskID,
    ThreadID,
)

LOST_METRIC = "/aiotrace/lost:events"
"""The metric under which the reader reports events dropped by the writer."""

_by_time = attrgetter("time")

_COROUTINE, _LOOP = ResourceKind.COROUTINE, ResourceKind.LOOP
_NOT_EXIST, _RUNNABLE, _RUNNING = (
    CoroState.NOT_EXIST,
    CoroState.RUNNABLE,
    CoroState.RUNNING,
)


class Typer:
    """Typer turns generations into ordered, typed Events with their context."""

    def __init__(self) -> None:
        # Per thread: [loop, coroutine] currently on it.
        self._ctx: dict[int, list[int]] = {}
        self._loop: dict[int, LoopState] = {}
        self._tasks: dict[int, tuple[int, str]] = {}  # id -> (parent, type)
        self.lost_events = 0
        handlers: dict[str, Callable[[RawEvent, list[int]], Event]] = {
            "EventsLost": self._lost,
            "Metric": self._metric,
            "Label": self._label,
            "StackSample": self._sample,
            "RangeBegin": self._range,
            "RangeActive": self._range,
            "RangeEnd": self._range,
            "TaskBegin": self._task_begin,
            "TaskEnd": self._task_end,
            "RegionBegin": self._region,
            "RegionEnd": self._region,
            "Log": self._log,
            "CoroCreate": self._coro_create,
            "CoroStart": self._coro_start,
            "CoroBlock": self._coro_stop,
            "CoroYield": self._coro_stop,
            "CoroUnblock": self._coro_unblock,
            "CoroEnd": self._coro_stop,
            "CoroStatus": self._coro_status,
            "LoopStatus": self._loop_status,
            "LoopRun": self._loop_change,
            "LoopIdle": self._loop_change,
            "LoopDestroy": self._loop_change,
        }
        self._handlers = handlers

    def events(self, gen: Generation) -> Iterator[Event]:
        """Yields the generation's events: its SYNC, then the rest by time."""
        self.lost_events = max(self.lost_events, gen.lost_events)
        yield Event(
            EventKind.SYNC,
            gen.time,
            NO_COROUTINE,
            NO_LOOP,
            ThreadID(-1),
            NO_STACK,
            Sync(gen.wall_time_ns, gen.lost_events, gen.number),
        )
        raw = gen.events
        raw.sort(key=_by_time)
        handlers = self._handlers
        ctx = self._ctx
        for ev in raw:
            c = ctx.get(ev.thread)
            if c is None:
                c = ctx[ev.thread] = [NO_LOOP, NO_COROUTINE]
            yield handlers[ev.spec.name](ev, c)

    def _event(
        self,
        kind: EventKind,
        ev: RawEvent,
        c: list[int],
        details: Any,
        stack: Any = NO_STACK,
    ) -> Event:
        return Event(
            kind,
            ev.time,
            CoroID(c[1]),
            LoopID(c[0]),
            ThreadID(ev.thread),
            stack,
            details,
        )

    def _lost(self, ev: RawEvent, c: list[int]) -> Event:
        self.lost_events += ev.args[0]
        return self._event(
            EventKind.METRIC, ev, c, Metric(LOST_METRIC, self.lost_events)
        )

    def _metric(self, ev: RawEvent, c: list[int]) -> Event:
        name, value = ev.args
        return self._event(EventKind.METRIC, ev, c, Metric(name, value))

    def _label(self, ev: RawEvent, c: list[int]) -> Event:
        kind, rid, label = ev.args
        return self._event(
            EventKind.LABEL, ev, c, Label(label, _resource(kind, rid, ev))
        )

    def _sample(self, ev: RawEvent, c: list[int]) -> Event:
        thread, loop, coro, stack = ev.args
        return Event(
            EventKind.STACK_SAMPLE,
            ev.time,
            CoroID(coro),
            LoopID(loop),
            ThreadID(thread),
            stack,
            None,
        )

    def _range(self, ev: RawEvent, c: list[int]) -> Event:
        name, kind, rid, *rest = ev.args
        kinds = {
            "RangeBegin": EventKind.RANGE_BEGIN,
            "RangeActive": EventKind.RANGE_ACTIVE,
            "RangeEnd": EventKind.RANGE_END,
        }
        stack = rest[0] if rest else NO_STACK
        return self._event(
            kinds[ev.spec.name], ev, c, Range(name, _resource(kind, rid, ev)), stack
        )

    def _task_begin(self, ev: RawEvent, c: list[int]) -> Event:
        task, parent, type_, stack = ev.args
        self._tasks[task] = (parent, type_)
        details = Task(TaskID(task), TaskID(parent), type_)
        return self._event(EventKind.TASK_BEGIN, ev, c, details, stack)

    def _task_end(self, ev: RawEvent, c: list[int]) -> Event:
        task, stack = ev.args
        parent, type_ = self._tasks.pop(task, (NO_TASK, ""))
        details = Task(TaskID(task), TaskID(parent), type_)
        return self._event(EventKind.TASK_END, ev, c, details, stack)

    def _region(self, ev: RawEvent, c: list[int]) -> Event:
        task, type_, stack = ev.args
        kind = (
            EventKind.REGION_BEGIN
            if ev.spec.name == "RegionBegin"
            else EventKind.REGION_END
        )
        return self._event(kind, ev, c, Region(TaskID(task), type_), stack)

    def _log(self, ev: RawEvent, c: list[int]) -> Event:
        task, category, message, stack = ev.args
        return self._event(
            EventKind.LOG, ev, c, Log(TaskID(task), category, message), stack
        )

    def _transition(
        self,
        ev: RawEvent,
        c: list[int],
        kind: ResourceKind,
        rid: int,
        old: Any,
        new: Any,
        reason: str = "",
        tstack: Any = NO_STACK,
        stack: Any = NO_STACK,
    ) -> Event:
        st = StateTransition(ResourceID(kind, rid), reason, tstack, old, new)
        return self._event(EventKind.STATE_TRANSITION, ev, c, st, stack)

    # A transition's old state is the one its event type implies, as in Go;
    # checking it against the coroutine's history is the validator's job.

    def _coro_create(self, ev: RawEvent, c: list[int]) -> Event:
        coro, stack = ev.args
        return self._transition(
            ev, c, _COROUTINE, coro, _NOT_EXIST, _RUNNABLE, stack=stack
        )

    def _coro_start(self, ev: RawEvent, c: list[int]) -> Event:
        (coro,) = ev.args
        out = self._transition(ev, c, _COROUTINE, coro, _RUNNABLE, _RUNNING)
        c[1] = coro
        return out

    def _coro_stop(self, ev: RawEvent, c: list[int]) -> Event:
        name = ev.spec.name
        coro = ev.args[0]
        if name == "CoroBlock":
            _, reason, stack = ev.args
            new = CoroState.WAITING
        elif name == "CoroYield":
            _, stack = ev.args
            reason, new = "yield", _RUNNABLE
        else:
            _, reason = ev.args
            stack, new = NO_STACK, _NOT_EXIST
        out = self._transition(
            ev, c, _COROUTINE, coro, _RUNNING, new, reason, stack, stack
        )
        if c[1] == coro:
            c[1] = NO_COROUTINE
        return out

    def _coro_unblock(self, ev: RawEvent, c: list[int]) -> Event:
        coro, reason = ev.args
        return self._transition(
            ev, c, _COROUTINE, coro, CoroState.WAITING, _RUNNABLE, reason
        )

    def _coro_status(self, ev: RawEvent, c: list[int]) -> Event:
        coro, state = ev.args
        new = _enum(CoroState, state, ev)
        if new is CoroState.RUNNING:
            c[1] = coro
        return self._transition(ev, c, _COROUTINE, coro, CoroState.UNDETERMINED, new)

    def _loop_status(self, ev: RawEvent, c: list[int]) -> Event:
        loop, state = ev.args
        new = _enum(LoopState, state, ev)
        self._loop[loop] = new
        out = self._transition(ev, c, _LOOP, loop, LoopState.UNDETERMINED, new)
        c[0] = loop if new is not LoopState.NOT_EXIST else NO_LOOP
        return out

    def _loop_change(self, ev: RawEvent, c: list[int]) -> Event:
        (loop,) = ev.args
        new = {
            "LoopRun": LoopState.RUNNING,
            "LoopIdle": LoopState.IDLE,
            "LoopDestroy": LoopState.NOT_EXIST,
        }[ev.spec.name]
        old = _LOOP_OLD.get(new) or self._loop.get(loop, LoopState.UNDETERMINED)
        if new is LoopState.NOT_EXIST:
            self._loop.pop(loop, None)
        else:
            self._loop[loop] = new
        out = self._transition(ev, c, _LOOP, loop, old, new)
        c[0] = loop if new is not LoopState.NOT_EXIST else NO_LOOP
        return out


# Loop transitions whose old state the event implies; LoopDestroy's is tracked.
_LOOP_OLD = {LoopState.RUNNING: LoopState.IDLE, LoopState.IDLE: LoopState.RUNNING}


def _enum(cls: Any, value: int, ev: RawEvent) -> Any:
    # The decoder has checked the value's range.
    return cls(value)


def _resource(kind: int, rid: int, ev: RawEvent) -> ResourceID:
    return ResourceID(_enum(ResourceKind, kind, ev), rid)
