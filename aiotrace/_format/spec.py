"""The table of wire event types, shared by the writer and the reader.

Every event in a batch is a msgpack array ``[type, dt, *args]``. The table
below is the only place that says what a type's arguments are. The writer
uses it to know which arguments to intern (strings and stacks); the reader
uses it to check argument counts and types and to resolve ids.

Invariant: a new format version may only append entries; codes, names and
argument lists of existing entries never change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.IntEnum):
    """The reader-facing kind an event type maps to (mirrors reader.EventKind)."""

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


class Arg(enum.Enum):
    """How one argument is encoded on the wire."""

    INT = "int"
    """A signed integer (ids, counts, enums)."""
    STRING = "string"
    """A string id, resolved through the generation's string table."""
    STACK = "stack"
    """A stack id, resolved through the generation's stack table; 0 is none."""
    NUMBER = "number"
    """An int or a float (metric values)."""


@dataclass(frozen=True, slots=True)
class EventSpec:
    """EventSpec describes one wire event type."""

    code: int
    name: str
    kind: Kind
    args: tuple[tuple[str, Arg], ...]

    @property
    def arg_names(self) -> tuple[str, ...]:
        """The argument names, in wire order."""
        return tuple(name for name, _ in self.args)

    @property
    def string_args(self) -> tuple[int, ...]:
        """Positions (within args) of string-id arguments."""
        return tuple(i for i, (_, a) in enumerate(self.args) if a is Arg.STRING)

    @property
    def stack_args(self) -> tuple[int, ...]:
        """Positions (within args) of stack-id arguments."""
        return tuple(i for i, (_, a) in enumerate(self.args) if a is Arg.STACK)


_I, _S, _K, _N = Arg.INT, Arg.STRING, Arg.STACK, Arg.NUMBER


def _e(code: int, name: str, kind: Kind, *args: tuple[str, Arg]) -> EventSpec:
    return EventSpec(code, name, kind, tuple(args))


# fmt: off
SPECS: tuple[EventSpec, ...] = (
    # Generation header, carried by a GENERATION frame rather than a batch.
    _e(1, "Sync", Kind.SYNC, ("generation", _I), ("wall_time_ns", _I), ("lost_events", _I)),
    # Events dropped because the sink fell behind; count since the last record.
    _e(2, "EventsLost", Kind.METRIC, ("count", _I)),
    _e(3, "Metric", Kind.METRIC, ("name", _S), ("value", _N)),
    _e(4, "Label", Kind.LABEL, ("resource_kind", _I), ("resource_id", _I), ("label", _S)),
    _e(5, "StackSample", Kind.STACK_SAMPLE, ("thread", _I), ("loop", _I), ("coroutine", _I), ("stack", _K)),
    _e(6, "RangeBegin", Kind.RANGE_BEGIN, ("name", _S), ("scope_kind", _I), ("scope_id", _I), ("stack", _K)),
    _e(7, "RangeActive", Kind.RANGE_ACTIVE, ("name", _S), ("scope_kind", _I), ("scope_id", _I)),
    _e(8, "RangeEnd", Kind.RANGE_END, ("name", _S), ("scope_kind", _I), ("scope_id", _I), ("stack", _K)),
    _e(9, "TaskBegin", Kind.TASK_BEGIN, ("task", _I), ("parent", _I), ("type", _S), ("stack", _K)),
    _e(10, "TaskEnd", Kind.TASK_END, ("task", _I), ("stack", _K)),
    _e(11, "RegionBegin", Kind.REGION_BEGIN, ("task", _I), ("type", _S), ("stack", _K)),
    _e(12, "RegionEnd", Kind.REGION_END, ("task", _I), ("type", _S), ("stack", _K)),
    _e(13, "Log", Kind.LOG, ("task", _I), ("category", _S), ("message", _S), ("stack", _K)),
    # Coroutine state machine. The coroutine is always explicit, so that a
    # generation (or a flight-recorder snapshot) needs no earlier context.
    _e(14, "CoroCreate", Kind.STATE_TRANSITION, ("coroutine", _I), ("stack", _K)),  # NOT_EXIST -> RUNNABLE
    _e(15, "CoroStart", Kind.STATE_TRANSITION, ("coroutine", _I)),  # RUNNABLE -> RUNNING
    _e(16, "CoroBlock", Kind.STATE_TRANSITION, ("coroutine", _I), ("reason", _S), ("stack", _K)),  # RUNNING -> WAITING
    _e(17, "CoroYield", Kind.STATE_TRANSITION, ("coroutine", _I), ("stack", _K)),  # RUNNING -> RUNNABLE
    _e(18, "CoroUnblock", Kind.STATE_TRANSITION, ("coroutine", _I), ("reason", _S)),  # WAITING -> RUNNABLE
    _e(19, "CoroEnd", Kind.STATE_TRANSITION, ("coroutine", _I), ("reason", _S)),  # RUNNING -> NOT_EXIST
    _e(20, "CoroStatus", Kind.STATE_TRANSITION, ("coroutine", _I), ("state", _I)),  # UNDETERMINED -> state
    # Loop (proc) state machine.
    _e(21, "LoopStatus", Kind.STATE_TRANSITION, ("loop", _I), ("state", _I)),  # UNDETERMINED -> state
    _e(22, "LoopRun", Kind.STATE_TRANSITION, ("loop", _I)),  # IDLE -> RUNNING
    _e(23, "LoopIdle", Kind.STATE_TRANSITION, ("loop", _I)),  # RUNNING -> IDLE
    _e(24, "LoopDestroy", Kind.STATE_TRANSITION, ("loop", _I)),  # * -> NOT_EXIST
    # One step of a coroutine, as one record: CoroStart at the event's time,
    # then CoroYield / CoroBlock / CoroEnd ``duration`` ns later. Readers
    # expand it into those two transitions. Halves the cost of the commonest
    # events on the traced program's GIL.
    _e(25, "CoroRunYield", Kind.STATE_TRANSITION, ("coroutine", _I), ("duration", _I)),
    _e(26, "CoroRunBlock", Kind.STATE_TRANSITION, ("coroutine", _I), ("duration", _I), ("reason", _S), ("stack", _K)),
    _e(27, "CoroRunEnd", Kind.STATE_TRANSITION, ("coroutine", _I), ("duration", _I), ("reason", _S)),
    # A coroutine that already existed and waits: CoroStatus(WAITING) with
    # the reason and stack of its block. Each generation restates it.
    _e(28, "CoroWaiting", Kind.STATE_TRANSITION, ("coroutine", _I), ("reason", _S), ("stack", _K)),  # UNDETERMINED -> WAITING
)
# fmt: on

SYNC = 1
EVENTS_LOST = 2

STEPS: dict[str, tuple[str, str]] = {
    "CoroRunYield": ("CoroStart", "CoroYield"),
    "CoroRunBlock": ("CoroStart", "CoroBlock"),
    "CoroRunEnd": ("CoroStart", "CoroEnd"),
}
"""Step records, and the two transitions each stands for. The second takes
the arguments after ``duration`` (CoroYield's stack is none)."""

BY_CODE: dict[int, EventSpec] = {s.code: s for s in SPECS}
BY_NAME: dict[str, EventSpec] = {s.name: s for s in SPECS}
MAX_CODE = max(BY_CODE)


class ResourceKind(enum.IntEnum):
    """What a resource id names (mirrors reader.ResourceKind)."""

    NONE = 0
    COROUTINE = 1
    LOOP = 2
    THREAD = 3


class CoroState(enum.IntEnum):
    """Coroutine states (mirrors reader.CoroState)."""

    UNDETERMINED = 0
    NOT_EXIST = 1
    RUNNABLE = 2
    RUNNING = 3
    WAITING = 4


class LoopState(enum.IntEnum):
    """Loop states (mirrors reader.LoopState)."""

    UNDETERMINED = 0
    NOT_EXIST = 1
    RUNNING = 2
    IDLE = 3


# Codes by name, for the writer's hot paths (plain ints are cheapest to use).
C: dict[str, int] = {s.name: s.code for s in SPECS}
