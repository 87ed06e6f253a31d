"""Generation decoding: checked frames in, validated events out.

``Decoder`` consumes frames in order. It checks the structure of the trace
(generations opened and closed, tables defined before use, event types,
argument counts and types, counts in GENERATION_END) and produces the events
of each generation once the generation is complete.

A validating decoder keeps each event as a flat tuple, ``(time, thread,
code, *args)``, with strings resolved and stacks left as ids into the
generation's stack table. Such a tuple holds only ints, floats and strs,
so the garbage collector stops tracking it at its first pass: a generation
held for sorting then costs the collector (nearly) nothing, where tuples
holding Stack or EventSpec objects were scanned again and again. A step
record is followed by its second transition, stored under that
transition's code plus ``STEP_END``, so the typed reader needs no pass of
its own to expand steps, and the records as written can still be rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .._format.framing import FrameKind
from .._format.spec import (
    BY_CODE,
    BY_NAME,
    MAX_CODE,
    STEPS,
    SYNC,
    Arg,
    CoroState,
    EventSpec,
    LoopState,
    ResourceKind,
)
from . import _impl
from ._frames import Frame
from ._model import NO_STACK, Stack, StackFrame, TraceError


class RawEvent(NamedTuple):
    """RawEvent is one event as written: time, thread, type and arguments.

    ``Reader.raw()`` yields them: string and stack arguments stay table ids,
    as written. Raw events come in file order, with no ordering or context.
    """

    time: int
    thread: int
    spec: EventSpec
    args: tuple[Any, ...]


STEP_END = 32
"""A step record's second transition is stored under its code plus this."""


class Generation(NamedTuple):
    """Generation is one complete, self-contained piece of a trace.

    ``records`` are flat tuples ``(time, thread, code, *args)`` in file
    order, each step record followed by its second transition (code plus
    ``STEP_END``); stack arguments index ``stacks``.
    """

    number: int
    time: int
    wall_time_ns: int
    lost_events: int
    records: list[tuple[Any, ...]]
    stacks: list[Stack]

    @property
    def events(self) -> list[RawEvent]:
        """The events as written, in file order, with ids resolved."""
        stacks = self.stacks
        out = []
        for t, thread, code, *args in self.records:
            if code >= STEP_END:
                continue
            spec = BY_CODE[code]
            for i in spec.stack_args:
                args[i] = stacks[args[i]]
            out.append(RawEvent(t, thread, spec, tuple(args)))
        return out


_Check = Callable[[tuple[Any, ...], list[str], list[Stack]], tuple[Any, ...] | str]


class Decoder:
    """Decoder checks frames and returns each generation when it completes."""

    def __init__(self, *, validate: bool = True) -> None:
        # Without validation, batches are split into events whose arguments
        # stay as written (table ids unresolved): the raw reader's fast path.
        self._validate = validate
        self._gen: tuple[int, int, int, int] | None = None  # number, time, wall, lost
        self._last_gen: int | None = None
        self._strings: list[str] = []
        self._stacks: list[Stack] = []
        self._events: list[Any] = []  # flat tuples, or RawEvents if not validating
        self._count = 0  # events of the open generation, as written
        self._batches = 0
        self._gen_offset = 0
        self.ended = False
        self.lost_events = 0
        self.generations = 0
        c = _impl.C
        self._cbatch = None if c is None else c.batch  # the C twin of the loop

    def take(self) -> list[RawEvent]:
        """Hands out the open generation's events decoded so far.

        The raw reader streams this way, batch by batch; the typed reader
        waits for whole generations, which it must sort.
        """
        events: list[RawEvent] = self._events
        self._events = []
        return events

    def partial(self) -> Generation | None:
        """Returns what the open generation holds so far, for a trace cut
        inside it: its whole batches, each checked and with its strings and
        stacks known (tables precede their first use). None outside a
        generation."""
        if self._gen is None or not self._validate:
            return None
        number, time, wall, lost = self._gen
        gen = Generation(number, time, wall, lost, self._events, self._stacks)
        self._events = []
        return gen

    def in_generation(self) -> int | None:
        """Returns the number of the open generation, or None."""
        return None if self._gen is None else self._gen[0]

    @property
    def generation_offset(self) -> int:
        """The byte offset where the open (or last) generation began."""
        return self._gen_offset

    def feed(self, fr: Frame) -> Generation | None:
        """Checks one frame; returns the generation it completes, if any.

        Raises:
            TraceError: the frame breaks the format's rules.
        """
        kind, payload, offset = fr
        if self.ended:
            raise TraceError(f"{kind.name} frame after the end of the trace", offset)
        if kind is FrameKind.BATCH:
            self._batch(payload, offset)
            return None
        if kind is FrameKind.GENERATION:
            self._begin(payload, offset)
            return None
        if kind is FrameKind.GENERATION_END:
            return self._end(payload, offset)
        if kind is FrameKind.STRINGS:
            self._table(payload, offset, self._strings, _check_string, "string", 0)
            return None
        if kind is FrameKind.STACKS:
            self._table(payload, offset, self._stacks, self._check_stack, "stack", 1)
            return None
        # TRACE_END
        if self._gen is not None:
            raise TraceError(
                f"trace ends inside generation {self._gen[0]} (no GENERATION_END)",
                offset,
            )
        (lost,) = _ints(payload, 1, "TRACE_END", offset)
        self.lost_events = lost
        self.ended = True
        return None

    def _need_gen(self, what: str, offset: int) -> None:
        if self._gen is None:
            raise TraceError(f"{what} frame outside a generation", offset)

    def _begin(self, payload: tuple[Any, ...], offset: int) -> None:
        if self._gen is not None:
            raise TraceError(
                f"generation {self._gen[0]} has no GENERATION_END before the next "
                "GENERATION",
                offset,
            )
        number, time, wall, lost = _ints(payload, 4, "GENERATION", offset)
        if self._last_gen is not None and number != self._last_gen + 1:
            raise TraceError(
                f"expected generation {self._last_gen + 1}, found {number}", offset
            )
        if lost < 0:
            raise TraceError(f"negative lost-event count {lost}", offset)
        self._gen = (number, time, wall, lost)
        self._gen_offset = offset
        self._strings = []
        self._stacks = [NO_STACK]
        self._events = []
        self._count = 0
        self._batches = 0

    def _end(self, payload: tuple[Any, ...], offset: int) -> Generation:
        self._need_gen("GENERATION_END", offset)
        assert self._gen is not None
        number, batches, events = _ints(payload, 3, "GENERATION_END", offset)
        n, time, wall, lost = self._gen
        if number != n:
            raise TraceError(
                f"GENERATION_END for {number} closes generation {n}", offset
            )
        held = self._count
        if batches != self._batches or events != held:
            raise TraceError(
                f"generation {n} declares {batches} batches and {events} events, "
                f"but holds {self._batches} batches and {held} events",
                offset,
            )
        self._gen = None
        self._last_gen = number
        self.generations += 1
        gen = Generation(number, time, wall, lost, self._events, self._stacks)
        self._events = []
        return gen

    def _table(
        self,
        payload: tuple[Any, ...],
        offset: int,
        table: list[Any],
        check: Callable[[Any], Any],
        what: str,
        first: int,
    ) -> None:
        self._need_gen(f"{what} table", offset)
        if not payload or type(payload[0]) is not int:
            raise TraceError(f"{what} table frame must start with the first id", offset)
        if payload[0] != len(table):
            raise TraceError(
                f"{what} table continues at id {payload[0]}, expected {len(table)}",
                offset,
            )
        for i, entry in enumerate(payload[1:]):
            value = check(entry)
            if type(value) is str and check is not _check_string:
                raise TraceError(f"{what} {len(table)}: {value}", offset)
            if value is None:
                raise TraceError(
                    f"{what} {len(table)} (entry {i}) must be a "
                    f"{'string' if first == 0 else 'frame list'}, "
                    f"found {type(entry).__name__}",
                    offset,
                )
            table.append(value)

    def _check_stack(self, entry: Any) -> Stack | str | None:
        if type(entry) is not tuple or len(entry) % 3:
            return None
        strings = self._strings
        frames = []
        for i in range(0, len(entry), 3):
            f, file, line = entry[i : i + 3]
            if not (type(f) is type(file) is type(line) is int):
                return "frame fields must be integers"
            if not (0 <= f < len(strings) and 0 <= file < len(strings)):
                return f"frame {i // 3} names string {max(f, file)}, which is undefined"
            frames.append(StackFrame(strings[f], strings[file], line))
        return Stack(tuple(frames))

    def _batch(self, payload: tuple[Any, ...], offset: int) -> None:
        self._need_gen("BATCH", offset)
        if (
            len(payload) < 2
            or type(payload[0]) is not int
            or type(payload[1]) is not int
        ):
            raise TraceError("BATCH frame must start with [thread, base_time]", offset)
        if not self._validate:
            self._raw_batch(payload, offset)
            return
        cbatch = self._cbatch
        if cbatch is not None:
            try:
                good = cbatch(payload, self._strings, len(self._stacks), self._events)
            except Exception:  # as the loop below: explain the bad event
                good = False
            if not good:
                raise TraceError(self._diagnose(payload), offset) from None
            self._count += len(payload) - 2
            self._batches += 1
            return
        thread = payload[0]
        t = payload[1]
        strings = self._strings
        nstacks = len(self._stacks)
        append = self._events.append
        fast = _FAST
        try:
            for ev in payload[2:]:
                if type(ev) is not tuple:
                    raise _Bad
                t = fast[ev[0]](ev, t, thread, strings, nstacks, append)
        except Exception:  # the fast path fails on any bad event: explain it
            raise TraceError(self._diagnose(payload), offset) from None
        self._count += len(payload) - 2
        self._batches += 1

    def _raw_batch(self, payload: tuple[Any, ...], offset: int) -> None:
        thread = payload[0]
        t = payload[1]
        append = self._events.append
        specs = BY_CODE
        new = tuple.__new__
        try:
            for ev in payload[2:]:
                t += ev[1]
                append(new(RawEvent, (t, thread, specs[ev[0]], ev[2:])))
        except Exception:
            raise TraceError(self._diagnose(payload), offset) from None
        self._count += len(payload) - 2
        self._batches += 1

    def _diagnose(self, payload: tuple[Any, ...]) -> str:
        """Says what is wrong with the first bad event of a batch."""
        strings = self._strings
        stacks = self._stacks
        for i, ev in enumerate(payload[2:]):
            if type(ev) is not tuple or len(ev) < 2:
                return f"event {i} of the batch is not [type, dt, ...]"
            code = ev[0]
            check = _CHECKS.get(code) if type(code) is int else None
            if check is None or type(ev[1]) is not int:
                return _bad_head(i, ev)
            args = check(ev, strings, stacks)
            if type(args) is str:
                return f"event {i} of the batch: {args}"
        return "the batch is malformed"  # pragma: no cover - fast and slow paths agree


class _Bad(Exception):
    """Raised by the fast path; the slow path then finds and explains the fault."""


def _make_fast(spec: EventSpec) -> Callable[..., int]:
    # Straight-line code per event type: one call per event validates the
    # arguments, resolves string ids, appends the flat tuple (and a step's
    # second transition) and returns the event's time.
    names = [f"a{i}" for i in range(len(spec.args))]
    lines = [
        "def fast(ev, t, thread, strings, nstacks, append):",
        f"    _, dt, {''.join(n + ', ' for n in names)}= ev",
        "    if type(dt) is not int:",
        "        raise Bad",
    ]
    for i, (argname, kind) in enumerate(spec.args):
        v = names[i]
        if kind is Arg.NUMBER:
            lines.append(f"    if type({v}) is not int and type({v}) is not float:")
            lines.append("        raise Bad")
            continue
        lines.append(f"    if type({v}) is not int:")
        lines.append("        raise Bad")
        if kind is Arg.STRING:
            lines.append(f"    if {v} < 0:")
            lines.append("        raise Bad")
            lines.append(f"    {v} = strings[{v}]")
        elif kind is Arg.STACK:
            lines.append(f"    if not 0 <= {v} < nstacks:")
            lines.append("        raise Bad")
        elif (spec.name, argname) in _ENUMS:
            lines.append(f"    if {v} not in ENUM_{i}:")
            lines.append("        raise Bad")
    lines.append("    t += dt")
    args = "".join(n + ", " for n in names)
    lines.append(f"    append((t, thread, {spec.code}, {args}))")
    if spec.name in STEPS:
        # The step's end, ``duration`` (a1) later, with the arguments after
        # it (CoroYield's stack is none: id 0).
        end = BY_NAME[STEPS[spec.name][1]].code + STEP_END
        rest = "".join(n + ", " for n in names[2:]) or "0, "
        lines.append(f"    append((t + a1, thread, {end}, a0, {rest}))")
    lines.append("    return t")
    namespace: dict[str, Any] = {"Bad": _Bad}
    for i, (argname, _) in enumerate(spec.args):
        if (spec.name, argname) in _ENUMS:
            valid = _ENUMS[spec.name, argname]
            namespace[f"ENUM_{i}"] = frozenset(valid) if len(valid) < 64 else valid
    exec("\n".join(lines), namespace)
    fast: Callable[..., int] = namespace["fast"]
    return fast


def _bad_head(i: int, ev: tuple[Any, ...]) -> str:
    if type(ev[0]) is not int:
        return f"event {i} of the batch has a type of {type(ev[0]).__name__}, not int"
    if ev[0] == SYNC:
        return f"event {i} of the batch is a Sync, which only a GENERATION frame holds"
    if ev[0] not in BY_CODE:
        return f"event {i} of the batch has unknown type {ev[0]!r}"
    return f"event {i} of the batch has a time delta of type {type(ev[1]).__name__}"


def _ints(payload: tuple[Any, ...], n: int, what: str, offset: int) -> tuple[int, ...]:
    if len(payload) != n or any(type(v) is not int for v in payload):
        raise TraceError(f"{what} frame must hold {n} integers", offset)
    return payload


def _check_string(entry: Any) -> str | None:
    return entry if type(entry) is str else None


# Integer arguments that hold an enum, and the range of valid values.
_ENUMS: dict[tuple[str, str], range] = {
    ("Label", "resource_kind"): range(len(ResourceKind)),
    ("RangeBegin", "scope_kind"): range(len(ResourceKind)),
    ("RangeActive", "scope_kind"): range(len(ResourceKind)),
    ("RangeEnd", "scope_kind"): range(len(ResourceKind)),
    ("CoroStatus", "state"): range(len(CoroState)),
    ("LoopStatus", "state"): range(len(LoopState)),
    ("CoroRunYield", "duration"): range(1 << 62),
    ("CoroRunBlock", "duration"): range(1 << 62),
    ("CoroRunEnd", "duration"): range(1 << 62),
}


def _make_check(spec: EventSpec) -> _Check:
    want = len(spec.args) + 2
    kinds = tuple(a for _, a in spec.args)
    name = spec.name
    enums = {
        i: _ENUMS[name, a] for i, (a, _) in enumerate(spec.args) if (name, a) in _ENUMS
    }
    plain = all(a is Arg.INT for a in kinds) and not enums

    def check(
        ev: tuple[Any, ...], strings: list[str], stacks: list[Stack]
    ) -> tuple[Any, ...] | str:
        if len(ev) != want:
            return f"{name} has {len(ev) - 2} arguments, expected {want - 2}"
        args = ev[2:]
        if plain:
            for a in args:
                if type(a) is not int:
                    return f"{name} argument of type {type(a).__name__}, expected int"
            return args
        out: list[Any] = []
        for (argname, kind), a in zip(spec.args, args, strict=True):
            if kind is Arg.STRING:
                if type(a) is not int or not 0 <= a < len(strings):
                    return f"{name}.{argname} names string {a!r}, which is undefined"
                out.append(strings[a])
            elif kind is Arg.STACK:
                if type(a) is not int or not 0 <= a < len(stacks):
                    return f"{name}.{argname} names stack {a!r}, which is undefined"
                out.append(stacks[a])
            elif kind is Arg.NUMBER:
                if type(a) is not int and type(a) is not float:
                    return f"{name}.{argname} must be a number"
                out.append(a)
            else:
                if type(a) is not int:
                    return f"{name}.{argname} must be an int, found {type(a).__name__}"
                valid = enums.get(len(out))
                if valid is not None and a not in valid:
                    return f"{name}.{argname} is {a}, outside 0..{valid.stop - 1}"
                out.append(a)
        return tuple(out)

    return check


# Sync is carried by GENERATION frames only, never inside a batch.
_CHECKS: dict[int, _Check] = {
    code: _make_check(spec) for code, spec in BY_CODE.items() if code != SYNC
}
assert STEP_END > MAX_CODE
_FAST: dict[int, Callable[..., int]] = {
    code: _make_fast(spec) for code, spec in BY_CODE.items() if code != SYNC
}
