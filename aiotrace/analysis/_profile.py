"""Profiles: block, scheduler-latency, execution and stall time, by stack."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

from ..reader import (
    NO_COROUTINE,
    NO_STACK,
    CoroState,
    Event,
    EventKind,
    LoopState,
    Reader,
    ResourceKind,
    Stack,
    StackFrame,
    TraceError,
)
from ._coro import UNKNOWN_REASON, function_name
from ._pass import ByBytes, Progress, StreamPass, read_source
from ._records import (
    K_BLOCK,
    K_CREATE,
    K_END,
    K_REGION_BEGIN,
    K_START,
    K_STATUS,
    K_UNBLOCK,
    K_WAITING,
    K_YIELD,
    KIND,
    STATES,
    context,
    generations,
    last_time,
)

KINDS = ("block", "sched", "exec", "stall")
"""The kinds of profile: WAITING time, RUNNABLE time, RUNNING time, stall time."""

_DESCRIBE = {
    "block": "time WAITING, by where each coroutine blocked",
    "sched": "scheduler latency (time RUNNABLE), by where coroutines became runnable",
    "exec": "time RUNNING, by coroutine function and where each step ended",
    "stall": "loop stall time, by the stacks sampled while the loop stalled",
}

Frames = tuple[StackFrame, ...]


@dataclass(frozen=True)
class ProfileStack:
    """ProfileStack is one distinct stack of a Profile and the time spent in it.

    ``frames`` are outermost first (the way flame graphs and folded stacks
    read). ``value_ns`` is the time, ``count`` the intervals (waits, steps,
    or stall samples) that made it.
    """

    frames: Frames
    value_ns: int
    count: int


@dataclass
class Profile:
    """Profile is time by stack, for one kind of time (see ``Profile.KINDS``).

    ``stacks`` are the distinct stacks, most time first; ``total_ns`` their
    sum. ``stacks_recorded`` counts the intervals whose stack the trace
    recorded (``block_stacks=True``, or stall samples), ``stacks_synthesised``
    those whose frames were made from the coroutine's creation stack, its
    function and the reason. ``truncated`` is None, or the reader's error
    text for a trace cut short (the profile then covers what was read).
    """

    KINDS: ClassVar[tuple[str, ...]] = KINDS
    """The kinds of profile ``profile()`` makes."""

    kind: str
    stacks: list[ProfileStack] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0
    events: int = 0
    lost_events: int = 0
    truncated: str | None = None
    stacks_recorded: int = 0
    stacks_synthesised: int = 0

    @property
    def total_ns(self) -> int:
        """The time of every stack together."""
        return sum(s.value_ns for s in self.stacks)

    @property
    def description(self) -> str:
        """What the profile measures, in words."""
        return _DESCRIBE[self.kind]

    def folded(self, *, lines: bool = True) -> str:
        """Returns the profile as folded stacks: ``a;b;c value`` lines.

        Frames go outermost first, values are nanoseconds; the format
        flamegraph.pl, speedscope and inferno read. ``lines=False`` names
        frames by function only, merging stacks that differ only in lines.
        """
        merged: dict[str, int] = {}
        for s in self.stacks:
            key = ";".join(frame_name(f, lines=lines) for f in s.frames)
            merged[key] = merged.get(key, 0) + s.value_ns
        return "".join(f"{k} {v}\n" for k, v in merged.items() if v > 0)

    def top(self, *, lines: bool = True) -> list[tuple[str, int, int]]:
        """Returns ``(frame, flat_ns, cum_ns)`` per frame, most cumulative first.

        ``flat`` is time with the frame innermost, ``cum`` time with the
        frame anywhere in the stack (counted once per stack), as in
        ``pprof -top``.
        """
        flat: dict[str, int] = {}
        cum: dict[str, int] = {}
        for s in self.stacks:
            names = [frame_name(f, lines=lines) for f in s.frames]
            if not names:
                continue
            flat[names[-1]] = flat.get(names[-1], 0) + s.value_ns
            for name in set(names):
                cum[name] = cum.get(name, 0) + s.value_ns
        rows = [(name, flat.get(name, 0), c) for name, c in cum.items()]
        rows.sort(key=lambda r: (-r[2], -r[1], r[0]))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict of the profile."""
        return {
            "kind": self.kind,
            "total_ns": self.total_ns,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "events": self.events,
            "lost_events": self.lost_events,
            "truncated": self.truncated,
            "stacks_recorded": self.stacks_recorded,
            "stacks_synthesised": self.stacks_synthesised,
            "stacks": [
                {
                    "value_ns": s.value_ns,
                    "count": s.count,
                    "frames": [list(f) for f in s.frames],
                }
                for s in self.stacks
            ],
        }


def frame_name(f: StackFrame, *, lines: bool = True) -> str:
    """Names a frame for folded stacks: ``func (file.py:12)``, or ``func``.

    The file is its base name; a synthesised frame (no file) is its name.
    Semicolons, which separate frames, become colons.
    """
    if lines and f.file:
        text = f"{f.func} ({os.path.basename(f.file)}:{f.line})"
    else:
        text = f.func
    return text.replace(";", ":").replace("\n", " ")


def _synthetic(name: str) -> StackFrame:
    return StackFrame(name, "", 0)


def profile(
    source: str | os.PathLike[str] | IO[bytes] | Iterable[Event],
    kind: str,
    *,
    progress: Progress | None = None,
) -> Profile:
    """Reads a trace in one streaming pass and returns a Profile of ``kind``.

    Kinds: ``"block"`` (time WAITING, by where each coroutine blocked),
    ``"sched"`` (time RUNNABLE, by where each coroutine was when it became
    runnable), ``"exec"`` (time RUNNING, by coroutine function and where
    each step ended) and ``"stall"`` (loop stall time, split over the stacks
    sampled during each stall). Totals agree with ``analyze()``: the block,
    sched and exec totals are the sums of its coroutine groups' block,
    scheduler wait and execution time.

    A coroutine's stack is its creation stack (outermost first), then the
    await chain recorded when it blocked or yielded (``block_stacks=True``)
    or else its coroutine function, then a bracketed leaf naming the reason
    (``[lock]``, ``[sleep]``; for ``sched`` also ``[created]``, ``[yield]``).
    Memory follows the coroutines alive at once and the distinct stacks.

    Args:
        source: a trace file's path, a binary file object, or an iterable
            of ``reader.Event``.
        kind: one of ``Profile.KINDS``.
        progress: called as ``progress(done, total)``, as for ``analyze()``.

    Raises:
        ValueError: ``kind`` is not one of ``Profile.KINDS``.
        reader.TraceError: the trace is malformed (a truncated trace is not
            an error: the profile says so in ``truncated``).
        OSError: the file cannot be read.
    """
    if kind not in KINDS:
        raise ValueError(
            f"unknown profile kind {kind!r}: expected one of {', '.join(KINDS)}"
        )
    return read_source(
        source,
        "profile",
        progress,
        lambda ev, by: _ProfilePass(ev, kind, by, progress).run(),
    )


_ST = EventKind.STATE_TRANSITION
_LABEL, _SYNC, _METRIC = EventKind.LABEL, EventKind.SYNC, EventKind.METRIC
_COROUTINE, _LOOP = ResourceKind.COROUTINE, ResourceKind.LOOP
_LOOP_UNKNOWN = LoopState.UNDETERMINED
_UNDETERMINED, _RUNNABLE, _RUNNING, _WAITING, _NOT_EXIST = (
    CoroState.UNDETERMINED,
    CoroState.RUNNABLE,
    CoroState.RUNNING,
    CoroState.WAITING,
    CoroState.NOT_EXIST,
)
_CREATED = "created"

# A live coroutine: [state, since_ns, where (Stack), reason, label, creation frames]
_STATE, _SINCE, _WHERE, _REASON, _LABEL_AT, _CREATION = range(6)


class _ProfilePass(StreamPass[Profile]):
    """_ProfilePass is one run of the profiler over a stream of events.

    Invariant: ``live`` holds the coroutines seen and not yet at NOT_EXIST
    (as in ``analyze``), each with the stack and reason of its current state;
    ``values`` holds one entry per distinct output stack.
    """

    def __init__(
        self,
        events: Iterable[Event],
        kind: str,
        by_bytes: ByBytes | None,
        progress: Progress | None,
    ) -> None:
        super().__init__(events, by_bytes, progress, Profile(kind), self._name)
        self.kind = kind
        self.want = {"block": _WAITING, "sched": _RUNNABLE, "exec": _RUNNING}.get(kind)
        self.live: dict[int, list[Any]] = {}
        self.values: dict[Frames, list[int]] = {}
        self.creations: dict[Stack, Frames] = {}
        self._cache: dict[tuple[int, int, str, str], tuple[list[int], bool]] = {}
        self._keep: list[tuple[Frames, Stack]] = []

    def _name(self, coro: int) -> str:
        st = self.live.get(coro)
        return st[_LABEL_AT] if st is not None else ""

    def run(self) -> Profile:
        p = self.result
        end = self._span()
        if self.want is not None:
            running = self.want is _RUNNING
            for st in self.live.values():
                if st[_STATE] is self.want:
                    # A step still running has not ended anywhere yet.
                    self._add(st, end - st[_SINCE], NO_STACK if running else st[_WHERE])
        else:
            self._fold_stalls(end)
        self.live.clear()
        p.stacks = sorted(
            (ProfileStack(k, v[0], v[1]) for k, v in self.values.items()),
            key=lambda s: (-s.value_ns, s.frames),
        )
        return p

    def _add(self, st: list[Any], dt: int, where: Stack) -> None:
        """Adds ``dt`` to the stack of coroutine ``st`` ending at ``where``."""
        if dt <= 0:
            return
        # Building and hashing the frames costs more than the rest: cache the
        # entry by identity for the generation (``_keep`` holds the objects
        # so their ids stay theirs; both are cleared at each SYNC).
        key = (id(st[_CREATION]), id(where), st[_LABEL_AT], st[_REASON])
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._entry(st, where)
            self._keep.append((st[_CREATION], where))
        v = hit[0]
        v[0] += dt
        v[1] += 1
        if hit[1]:
            self.result.stacks_recorded += 1
        else:
            self.result.stacks_synthesised += 1

    def _entry(self, st: list[Any], where: Stack) -> tuple[list[int], bool]:
        """Returns the ``values`` entry of ``st``'s stack at ``where``, and
        whether the stack was recorded (not synthesised)."""
        frames: Frames = st[_CREATION]
        if where:
            frames += tuple(reversed(where.frames))
        else:
            frames += (_synthetic(function_name(st[_LABEL_AT])),)
        if self.want is not _RUNNING:
            frames += (_synthetic(f"[{st[_REASON]}]"),)
        v = self.values.get(frames)
        if v is None:
            v = self.values[frames] = [0, 0]
        return v, bool(where)

    def _creation(self, stack: Stack) -> Frames:
        frames = self.creations.get(stack)
        if frames is None:
            frames = self.creations[stack] = tuple(reversed(stack.frames))
        return frames

    def _consume(self, events: Iterator[Event], last: int) -> tuple[int, int]:
        """Runs the pass; returns (events, last time)."""
        live = self.live
        want = self.want
        add = self._add
        stalls = self.stalls
        progress = self.progress
        n = 0
        try:
            for ev in events:
                kind, t, _, _, thread, stack, d = ev
                n += 1
                if t > last:  # noqa: PLR1730 - max() costs a call per event
                    last = t
                if kind is _ST:
                    r = d[0]
                    if r[0] is not _COROUTINE:
                        self.loops.transition(
                            r[1], t, d[4], thread, restated=d[3] is _LOOP_UNKNOWN
                        )
                        continue
                    cid = r[1]
                    new = d[4]
                    st = live.get(cid)
                    if st is None:
                        if new is _NOT_EXIST:
                            continue
                        if d[3] is _NOT_EXIST:
                            live[cid] = [
                                new,
                                t,
                                d[2],
                                _CREATED,
                                "",
                                self._creation(stack),
                            ]
                        else:
                            live[cid] = [new, t, d[2], d[1] or UNKNOWN_REASON, "", ()]
                        continue
                    if new is st[_STATE] and d[3] is _UNDETERMINED:
                        continue  # a generation restating what is known
                    old = st[_STATE]
                    if old is want:
                        # A step's stack is where it ended; a wait's where it began.
                        add(
                            st, t - st[_SINCE], d[2] if want is _RUNNING else st[_WHERE]
                        )
                    st[_STATE] = new
                    st[_SINCE] = t
                    if new is _WAITING:
                        st[_WHERE] = d[2]
                        st[_REASON] = d[1] or UNKNOWN_REASON
                    elif new is _RUNNABLE:
                        if old is _RUNNING:  # a yield: where it yielded
                            st[_WHERE] = d[2]
                            st[_REASON] = d[1] or "yield"
                        # woken: keep where it blocked, and why
                    elif new is _RUNNING:
                        if stalls.open:
                            stalls.start(thread, cid)
                    elif new is _NOT_EXIST:
                        del live[cid]
                elif kind is _SYNC:
                    self.result.lost_events = max(self.result.lost_events, d[1])
                    self._cache.clear()
                    self._keep.clear()
                    if progress is not None:
                        self._report(n)
                elif kind is _LABEL:
                    self._label(d)
                elif want is None or kind is _METRIC:
                    self._stall_event(ev)
        except TraceError as exc:
            self.error = exc
        return n, last

    def _consume_records(self, reader: Reader) -> tuple[int, int | None, int]:
        """The pass over a file's records (see ``_records``): the same
        profile as ``_consume`` over its typed Events."""
        live = self.live
        want = self.want
        add = self._add
        stalls = self.stalls
        progress = self.progress
        typer: Any = reader._typer
        handlers = typer._handlers
        ctx = typer._ctx
        labels = typer._labels
        kinds = KIND
        k_start, k_block, k_yield = K_START, K_BLOCK, K_YIELD
        k_unblock, k_end = K_UNBLOCK, K_END
        k_create, k_status, k_waiting = K_CREATE, K_STATUS, K_WAITING
        k_region_begin = K_REGION_BEGIN
        n = 0
        first: int | None = None
        last = 0
        try:
            for gen, recs in generations(reader):
                t = gen.time  # the generation's SYNC
                if first is None:
                    first = last = t
                elif t > last:
                    last = t
                n += 1 + len(recs)  # less those the Typer would not yield
                self.result.lost_events = max(self.result.lost_events, gen.lost_events)
                self._cache.clear()
                self._keep.clear()
                if progress is not None:
                    self._report(n - len(recs))
                stacks = gen.stacks
                dropped: set[int] = set()
                for ev in recs:
                    k = kinds[ev[2]]
                    if k >= k_region_begin:  # regions, logs, tasks: nothing here
                        continue
                    t = ev[0]
                    # Each coroutine transition: its coroutine, new state,
                    # reason, stack, and the thread's context as the Typer
                    # keeps it.
                    where = NO_STACK
                    if k == k_unblock:
                        cid = ev[3]
                        new = _RUNNABLE
                        reason = ev[4]
                    elif k == k_start:
                        cid = ev[3]
                        new = _RUNNING
                        reason = ""
                        c = ctx.get(ev[1]) or context(ctx, ev[1])
                        if c[1] != NO_COROUTINE:
                            c[2].append(c[1])
                        c[1] = cid
                    elif k == k_block:
                        cid = ev[3]
                        new = _WAITING
                        reason = ev[4]
                        where = stacks[ev[5]]
                        c = ctx.get(ev[1]) or context(ctx, ev[1])
                        if c[1] == cid:
                            c[1] = c[2].pop() if c[2] else NO_COROUTINE
                    elif k == k_yield:
                        cid = ev[3]
                        new = _RUNNABLE
                        reason = "yield"
                        where = stacks[ev[4]]
                        c = ctx.get(ev[1]) or context(ctx, ev[1])
                        if c[1] == cid:
                            c[1] = c[2].pop() if c[2] else NO_COROUTINE
                    elif k == k_create:
                        cid = ev[3]
                        if cid not in live:
                            live[cid] = [
                                _RUNNABLE,
                                t,
                                NO_STACK,
                                _CREATED,
                                "",
                                self._creation(stacks[ev[4]]),
                            ]
                            continue
                        new = _RUNNABLE
                        reason = ""
                    elif k == k_end:
                        cid = ev[3]
                        new = _NOT_EXIST
                        reason = ev[4]
                        labels.pop((_COROUTINE, cid), None)
                        c = ctx.get(ev[1]) or context(ctx, ev[1])
                        if c[1] == cid:
                            c[1] = c[2].pop() if c[2] else NO_COROUTINE
                    elif k_status <= k <= k_waiting:  # CoroStatus, CoroWaiting
                        # Restated statuses: the Typer yields one only when it
                        # tells something new, and its state is this pass's.
                        cid = ev[3]
                        st = live.get(cid)
                        if k == k_status:
                            new = STATES[ev[4]]
                            reason = ""
                        else:
                            new = _WAITING
                            reason = ev[4]
                            where = stacks[ev[5]]
                        if st is not None and st[_STATE] is new:
                            dropped.add(id(ev))
                            n -= 1
                            continue
                        if new is _RUNNING:
                            c = ctx.get(ev[1]) or context(ctx, ev[1])
                            if c[1] != cid:
                                if c[1] != NO_COROUTINE:
                                    c[2].append(c[1])
                                c[1] = cid
                    else:
                        out = handlers[ev[2]](ev, ctx.get(ev[1]) or context(ctx, ev[1]))
                        if out is None:
                            dropped.add(id(ev))
                            n -= 1
                        elif out[0] is _ST:
                            d = out[6]
                            self.loops.transition(
                                d[0][1], t, d[4], ev[1], restated=d[3] is _LOOP_UNKNOWN
                            )
                        elif out[0] is _LABEL:
                            self._label(out[6])
                        elif want is None or out[0] is _METRIC:
                            self._stall_event(out)
                        continue
                    # The coroutine state machine, as in _consume.
                    st = live.get(cid)
                    if st is None:
                        if new is not _NOT_EXIST:
                            reason = reason or UNKNOWN_REASON
                            live[cid] = [new, t, where, reason, "", ()]
                        continue
                    old = st[_STATE]
                    if old is want:
                        # A step's stack is where it ended; a wait's where it began.
                        at = where if want is _RUNNING else st[_WHERE]
                        add(st, t - st[_SINCE], at)
                    st[_STATE] = new
                    st[_SINCE] = t
                    if new is _WAITING:
                        st[_WHERE] = where
                        st[_REASON] = reason or UNKNOWN_REASON
                    elif new is _RUNNABLE:
                        if old is _RUNNING:  # a yield: where it yielded
                            st[_WHERE] = where
                            st[_REASON] = reason or "yield"
                        # woken: keep where it blocked, and why
                    elif new is _RUNNING:
                        if stalls.open:
                            stalls.start(ev[1], cid)
                    elif new is _NOT_EXIST:
                        del live[cid]
                if recs:
                    last = last_time(recs, dropped, last)
                del gen, recs  # or they stay alive while the next is decoded
        except TraceError as exc:
            self.error = exc
        return n, first, last

    def _label(self, d: Any) -> None:
        """Handles a Label's details."""
        rid = d[1]
        if rid[0] is _COROUTINE:
            st = self.live.get(rid[1])
            if st is not None:
                st[_LABEL_AT] = d[0]
            if self.stalls.open:
                self.stalls.label(rid[1], d[0])
        elif rid[0] is _LOOP:
            self.loops.label(rid[1], d[0])

    def _fold_stalls(self, end: int) -> None:
        """Splits each stall's time over its samples' stacks (equal shares)."""
        values = self.values
        for s in self.stalls.finish(end):
            if s.duration_ns <= 0:
                continue
            if not s.samples:
                holder = (
                    function_name(s.coroutine_name)
                    if s.coroutine != NO_COROUTINE
                    else "(callback)"
                )
                shares: list[tuple[Frames, int]] = [
                    ((_synthetic(holder), _synthetic("[not sampled]")), 1)
                ]
                self.result.stacks_synthesised += 1
            else:
                shares = [(tuple(reversed(stack.frames)), k) for stack, k in s.folded()]
                self.result.stacks_recorded += len(s.samples)
            n = sum(k for _, k in shares)
            given = 0
            for frames, k in shares:
                # Integer shares that add up to the stall's duration exactly.
                share = s.duration_ns * (given + k) // n - s.duration_ns * given // n
                given += k
                v = values.get(frames)
                if v is None:
                    values[frames] = [share, k]
                else:
                    v[0] += share
                    v[1] += k


def format_profile(
    p: Profile, *, top: int = 20, stacks: int = 5, lines: bool = True
) -> str:
    """Formats a Profile as text: the top frames and the heaviest stacks.

    The frame table is ``pprof -top`` sorted by cumulative time: ``flat``
    is time with the frame innermost, ``cum`` time with the frame anywhere
    in the stack. Then the ``stacks`` heaviest stacks, innermost first.
    """
    from ._format import format_duration

    total = p.total_ns
    recorded, made = p.stacks_recorded, p.stacks_synthesised
    unit = {"block": "waits", "sched": "waits", "exec": "steps"}.get(p.kind, "samples")
    out = [
        f"{p.kind.capitalize()} profile: {format_duration(total)} in "
        f"{sum(s.count for s in p.stacks)} {unit}, {len(p.stacks)} distinct stacks",
        f"  {p.description}",
        f"  stacks: {recorded} recorded, {made} synthesised"
        + (
            " (trace with block_stacks=True, `aiotrace run --block-stacks`, "
            "for await chains)"
            if made and p.kind != "stall"
            else ""
        ),
    ]
    if p.lost_events:
        out.append(
            f"  warning: {p.lost_events} events were lost; the figures undercount"
        )
    if p.truncated:
        out.append(
            "  warning: the trace is truncated; the profile covers what was read"
        )
    if not p.stacks:
        out.append("")
        out.append("  (nothing to profile: no such time in the trace)")
        return "\n".join(out) + "\n"

    def pct(ns: int) -> str:
        return f"{100 * ns / total:.1f}%" if total else "-"

    rows = p.top(lines=lines)
    shown = rows[:top]
    out.append("")
    out.append(f"Top frames ({len(shown)} of {len(rows)}, by cumulative time)")
    out += _frame_table(shown, pct)
    out.append("")
    out.append(f"Heaviest stacks ({min(stacks, len(p.stacks))} of {len(p.stacks)})")
    for i, s in enumerate(p.stacks[:stacks], 1):
        out.append(
            f"  {i}. {format_duration(s.value_ns)} ({pct(s.value_ns)})"
            f" in {s.count} {unit}"
        )
        for f in reversed(s.frames):
            out.append(f"       {frame_name(f, lines=lines)}")
    return "\n".join(out) + "\n"


def _frame_table(
    rows: list[tuple[str, int, int]], pct: Callable[[int], str]
) -> list[str]:
    from ._format import format_duration

    cells = [
        [format_duration(f), pct(f), format_duration(c), pct(c), name]
        for name, f, c in rows
    ]
    head = ["flat", "flat%", "cum", "cum%", "frame"]
    widths = [max([len(head[i])] + [len(r[i]) for r in cells]) for i in range(4)]

    def line(r: list[str]) -> str:
        cols = "  ".join(c.rjust(w) for c, w in zip(r[:4], widths, strict=True))
        return f"  {cols}  {r[4]}".rstrip()

    return [line(head)] + [line(r) for r in cells]
