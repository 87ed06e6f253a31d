"""The typed event model the reader produces."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final, NamedTuple, NewType

from .._errors import TraceError as _BaseTraceError

CoroID = NewType("CoroID", int)
LoopID = NewType("LoopID", int)
ThreadID = NewType("ThreadID", int)
TaskID = NewType("TaskID", int)

NO_COROUTINE: Final = CoroID(-1)
NO_LOOP: Final = LoopID(-1)
NO_THREAD: Final = ThreadID(-1)
NO_TASK: Final = TaskID(-1)
BACKGROUND_TASK: Final = TaskID(0)


class TraceError(_BaseTraceError):
    """TraceError reports malformed trace input: what was wrong, and where."""


class EventKind(enum.IntEnum):
    """EventKind says what an Event is, and which details it carries."""

    SYNC = 1
    METRIC = 2
    LABEL = 3
    STACK_SAMPLE = 4
    RANGE_BEGIN = 5
    RANGE_ACTIVE = 6
    RANGE_END = 7
    TASK_BEGIN = 8
    TASK_END = 9
    REGION_BEGIN = 10
    REGION_END = 11
    LOG = 12
    STATE_TRANSITION = 13


class ResourceKind(enum.IntEnum):
    """ResourceKind says what a ResourceID names."""

    NONE = 0
    COROUTINE = 1
    LOOP = 2
    THREAD = 3


class CoroState(enum.IntEnum):
    """CoroState is a coroutine's scheduling state (Go's GoState)."""

    UNDETERMINED = 0
    NOT_EXIST = 1
    RUNNABLE = 2
    RUNNING = 3
    WAITING = 4


class LoopState(enum.IntEnum):
    """LoopState is an event loop's state (Go's ProcState)."""

    UNDETERMINED = 0
    NOT_EXIST = 1
    RUNNING = 2
    IDLE = 3


class ResourceID(NamedTuple):
    """ResourceID names a coroutine, a loop, a thread, or nothing."""

    kind: ResourceKind
    id: int

    def __str__(self) -> str:
        kind = self[0]
        if kind is ResourceKind.NONE:
            return "none"
        name = _LOWER.get(id(kind)) or kind.name.lower()
        return f"{name} {self[1]}"


_LOWER = {id(k): k.name.lower() for k in ResourceKind}


class StackFrame(NamedTuple):
    """StackFrame is one frame of a stack: function, file and line."""

    func: str
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class Stack:
    """Stack is a call stack; ``frames`` are innermost first."""

    frames: tuple[StackFrame, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.frames)


NO_STACK: Final = Stack()


class StateTransition(NamedTuple):
    """StateTransition is a change of state of a coroutine or a loop.

    ``old`` and ``new`` are CoroState values for coroutines and LoopState
    values for loops. ``stack`` is the coroutine's own stack where known
    (where it blocked or yielded).
    """

    resource: ResourceID
    reason: str
    stack: Stack
    old: CoroState | LoopState
    new: CoroState | LoopState


class Task(NamedTuple):
    """Task describes a user task's beginning or end."""

    id: TaskID
    parent: TaskID
    type: str


class Region(NamedTuple):
    """Region describes a region's beginning or end."""

    task: TaskID
    type: str


class Log(NamedTuple):
    """Log is a user log record."""

    task: TaskID
    category: str
    message: str


class Metric(NamedTuple):
    """Metric is the value of a named metric; names carry their unit."""

    name: str
    value: int | float


class Label(NamedTuple):
    """Label attaches a label (a name) to a resource."""

    label: str
    resource: ResourceID


class Range(NamedTuple):
    """Range is a named interval of time on a resource (e.g. "loop stall")."""

    name: str
    scope: ResourceID


class Sync(NamedTuple):
    """Sync starts a generation; it pairs the trace clock with the wall clock.

    ``lost_events`` counts every event dropped so far in this trace.
    """

    wall_time_ns: int
    lost_events: int
    generation: int


Details = StateTransition | Task | Region | Log | Metric | Label | Range | Sync | None


class Event(tuple[Any, ...]):
    """Event is one trace event: what happened, when, and in which context.

    ``coroutine``, ``loop`` and ``thread`` are the execution context. For a
    state transition they describe the moment before it, as in Go: a
    coroutine that starts to run is in ``state_transition.resource``, not
    in ``coroutine``. Per-kind details raise TypeError on the wrong kind.

    Events are immutable. (An Event is a tuple underneath, which makes
    reading fast; use its properties, not its items.)
    """

    __slots__ = ()

    def __new__(
        cls,
        kind: EventKind,
        time: int,
        coroutine: CoroID,
        loop: LoopID,
        thread: ThreadID,
        stack: Stack,
        details: Details,
    ) -> Event:
        """Makes an Event; readers make them, users rarely need to."""
        return tuple.__new__(cls, (kind, time, coroutine, loop, thread, stack, details))

    kind: EventKind = property(itemgetter(0), doc="What kind of event this is.")  # type: ignore[assignment]
    time: int = property(  # type: ignore[assignment]
        itemgetter(1), doc="Nanoseconds on the traced process's monotonic clock."
    )
    coroutine: CoroID = property(  # type: ignore[assignment]
        itemgetter(2), doc="The coroutine running, or NO_COROUTINE."
    )
    loop: LoopID = property(itemgetter(3), doc="The loop running, or NO_LOOP.")  # type: ignore[assignment]
    thread: ThreadID = property(itemgetter(4), doc="The OS thread (native id).")  # type: ignore[assignment]
    stack: Stack = property(  # type: ignore[assignment]
        itemgetter(5), doc="The stack recorded with this event, or an empty Stack."
    )

    @property
    def state_transition(self) -> StateTransition:
        """Details of a STATE_TRANSITION event."""
        d = self[6]
        if type(d) is not StateTransition:
            raise TypeError(f"{self.kind.name} event is not a STATE_TRANSITION")
        return d

    @property
    def task(self) -> Task:
        """Details of a TASK_BEGIN or TASK_END event."""
        d = self[6]
        if type(d) is not Task:
            raise TypeError(f"{self.kind.name} event is not a TASK_BEGIN or TASK_END")
        return d

    @property
    def region(self) -> Region:
        """Details of a REGION_BEGIN or REGION_END event."""
        d = self[6]
        if type(d) is not Region:
            raise TypeError(
                f"{self.kind.name} event is not a REGION_BEGIN or REGION_END"
            )
        return d

    @property
    def log(self) -> Log:
        """Details of a LOG event."""
        d = self[6]
        if type(d) is not Log:
            raise TypeError(f"{self.kind.name} event is not a LOG")
        return d

    @property
    def metric(self) -> Metric:
        """Details of a METRIC event."""
        d = self[6]
        if type(d) is not Metric:
            raise TypeError(f"{self.kind.name} event is not a METRIC")
        return d

    @property
    def label(self) -> Label:
        """Details of a LABEL event."""
        d = self[6]
        if type(d) is not Label:
            raise TypeError(f"{self.kind.name} event is not a LABEL")
        return d

    @property
    def range(self) -> Range:
        """Details of a RANGE_BEGIN, RANGE_ACTIVE or RANGE_END event."""
        d = self[6]
        if type(d) is not Range:
            raise TypeError(f"{self.kind.name} event is not a RANGE event")
        return d

    @property
    def sync(self) -> Sync:
        """Details of a SYNC event."""
        d = self[6]
        if type(d) is not Sync:
            raise TypeError(f"{self.kind.name} event is not a SYNC")
        return d

    def __repr__(self) -> str:
        return f"<Event {self}>"

    def __str__(self) -> str:
        return format_event(self)


_NAMES: dict[int, str] = {
    id(m): m.name for e in (EventKind, ResourceKind, CoroState, LoopState) for m in e
}
"""Enum member names by the member's id(): a dict lookup is several times
faster than ``member.name`` (an enum property), and format_event runs for
every event ``aiotrace dump`` prints. Keyed by id, not by member, because
IntEnum members of different enums compare equal (CoroState.RUNNING ==
LoopState.IDLE)."""


def format_stack(stack: Stack) -> str:
    """Formats a stack on one line, innermost first: ``func@file:line <- ...``."""
    return " <- ".join(f"{f.func}@{f.file}:{f.line}" for f in stack.frames)


def format_event(ev: Event) -> str:
    """Formats an event as one line of ``aiotrace dump`` output."""
    kind, time, coro, loop, thread, stack, d = ev
    names = _NAMES
    head = (
        f"{time} {names.get(id(kind)) or kind.name} "
        f"{f'T{thread}' if thread != NO_THREAD else 'T-'} "
        f"{f'L{loop}' if loop != NO_LOOP else 'L-'} "
        f"{f'C{coro}' if coro != NO_COROUTINE else 'C-'}"
    )
    if type(d) is StateTransition:
        old, new = d.old, d.new
        body = (
            f"{d.resource} {names.get(id(old)) or old.name}->"
            f"{names.get(id(new)) or new.name}"
            + (f" reason={d.reason!r}" if d.reason else "")
            + (
                f" tstack=[{format_stack(d.stack)}]"
                if d.stack and d.stack != stack
                else ""
            )
        )
    elif type(d) is Task:
        body = f"task={d.id} parent={d.parent} type={d.type!r}"
    elif type(d) is Region:
        body = f"task={d.task} type={d.type!r}"
    elif type(d) is Log:
        body = f"task={d.task} category={d.category!r} message={d.message!r}"
    elif type(d) is Metric:
        body = f"{d.name}={d.value!r}"
    elif type(d) is Label:
        body = f"{d.resource} label={d.label!r}"
    elif type(d) is Range:
        body = f"{d.name!r} scope={d.scope}"
    elif type(d) is Sync:
        body = f"gen={d.generation} wall={d.wall_time_ns} lost={d.lost_events}"
    else:
        body = ""
    if stack:
        body = f"{body} stack=[{format_stack(stack)}]".lstrip()
    return f"{head} {body}".rstrip()
