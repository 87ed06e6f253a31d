"""The blocking rule: a call that holds the loop, found by its line.

A step of a coroutine that runs ``LONG_STEP_NS`` or more holds its loop
that long: nothing else runs. The watchdog samples such steps (past a share
of the stall threshold, ``aiotrace._stall.LONG_STEP``) and stalls, so the
samples taken during a step say where its time went: the innermost frame of
the program's own (a ``time.sleep`` or a ``requests.get`` is library code:
the program's line that calls it is the culprit). Long steps are grouped by
coroutine function and culprit line; a group that held the loop long enough
(``FLOOR_NS`` in all, and ``FLOOR_SHARE`` of the time steps ran) is a
finding. Steps mostly inside garbage collections are GC's, not a blocking
call's (the GC rule reports them). A stall in a plain callback (no
coroutine) is grouped the same way, by its samples.
"""

from __future__ import annotations

import linecache
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from ...reader import NO_COROUTINE, NO_STACK, EventKind, ResourceKind, Stack, StackFrame
from .._findings import (
    Facts,
    Finding,
    Rule,
    Section,
    Step,
    Wait,
    coro_list,
    place,
    site,
)
from .._format import format_duration
from .._stalls import GC_PREFIX, STALL, is_own_frame

LONG_STEP_NS = 10_000_000
"""A step this long or longer is a long step: it held its loop 10 ms."""

FLOOR_NS = 50_000_000
"""A culprit is a finding once its steps held the loop this long in all."""

FLOOR_SHARE = 0.02
"""... and this share of the time all steps ran (the loop's busy time)."""

_RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END = (
    EventKind.RANGE_BEGIN,
    EventKind.RANGE_ACTIVE,
    EventKind.RANGE_END,
)
_SAMPLE = EventKind.STACK_SAMPLE
_LOOP = ResourceKind.LOOP
_MS = 1_000_000
_FIRST = NO_STACK  # no wait before: a coroutine's first step (site "")
_MAX_SAMPLES = 4096  # per loop, kept until a step or stall takes them
_MAX_GC = 512  # recent collections kept, to tell a step that was GC's
_SOURCE_MAX = 60  # longest source line quoted

# Library code, whose line is never the culprit: the standard library,
# installed packages, asyncio's and anyio's (and aiotrace's own, by
# is_own_frame).
_LIBRARY = re.compile(
    r"/lib/python3\.\d+t?/|/site-packages/|/dist-packages/|/asyncio/|/anyio/"
    r"|^<frozen |/lib/pypy"
)


# The event loop's own frames: a sample with them inside the program's
# frames was taken outside any step's code.
_LOOP_CODE = re.compile(
    r"(_run_once|run_forever|Handle\._run|__step\w*|_run_until_complete_cb)$"
)
# Frames that are part of their caller's line.
_INNER = re.compile(r"<(genexpr|listcomp|dictcomp|setcomp|lambda)>$")


def _is_library(f: StackFrame) -> bool:
    return is_own_frame(f) or _LIBRARY.search(f.file.replace("\\", "/")) is not None


def _culprit(
    stack: Stack, qualname: str
) -> tuple[StackFrame | None, StackFrame | None, str]:
    """(culprit, coroutine frame, library call) of a sample of a step of a
    coroutine function ``qualname`` (``""`` for a plain callback).

    The culprit is the innermost frame of the program's own (a
    comprehension's or lambda's is its caller's line); the coroutine frame
    is the coroutine function's, or else the outermost one of the run of
    program frames the culprit is in; the call is the library function the
    culprit called (``""`` for a C function, which has no frame). (None,
    None, "") for a sample of the event loop's own code (one taken as a
    step began or ended, not in it): the loop's frames are inside any frame
    of the program's, or the coroutine function's frame is not there.
    """
    frames = [f for f in stack.frames if not is_own_frame(f)]
    if qualname and any(f.func == qualname for f in frames):
        while frames[-1].func != qualname:
            frames.pop()  # the loop's frames that run the coroutine, and out
    elif qualname:
        return None, None, ""
    call = ""
    for i, f in enumerate(frames):
        if _is_library(f):
            if _LOOP_CODE.search(f.func) and "/asyncio/" in f.file.replace("\\", "/"):
                return None, None, ""
            continue
        if _INNER.search(f.func):
            continue
        if i and _is_library(frames[i - 1]):
            if f.func == "<module>":
                return None, None, ""  # asyncio.run(main()), or the like
            inner = frames[i - 1]
            call = f"{inner.func} ({_short(inner.file)})"
        outer = f
        for g in frames[i + 1 :]:
            if _is_library(g):
                break
            outer = g
        return f, outer, call
    return None, None, ""


def _short(file: str) -> str:
    """The last two parts of a path: ``requests/api.py``."""
    parts = file.replace("\\", "/").rsplit("/", 2)
    return "/".join(parts[-2:])


def _source(f: StackFrame) -> str:
    """The culprit's source line, quoted, when the file is at hand."""
    text = linecache.getline(f.file, f.line).split("  #")[0].strip()
    if not text or len(text) > _SOURCE_MAX:
        return ""
    return f"`{text}`"


@dataclass
class _Group:
    """_Group is the long steps of one coroutine function whose time went
    to one function of the program (``culprits``: at which lines)."""

    name: str
    steps: int = 0
    total_ns: int = 0
    max_ns: int = 0
    stalls: int = 0
    cids: set[int] = field(default_factory=set)
    culprits: Counter[StackFrame] = field(default_factory=Counter)
    coro_frames: Counter[StackFrame] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    began: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)

    @property
    def culprit(self) -> StackFrame | None:
        """The line most of the steps' time went to, or None unsampled."""
        return self.culprits.most_common(1)[0][0] if self.culprits else None

    @property
    def coro_frame(self) -> StackFrame | None:
        """The coroutine's line that called the culprit, or None."""
        return self.coro_frames.most_common(1)[0][0] if self.coro_frames else None

    def add(self, step: _Long) -> None:
        """Adds a long step."""
        self.steps += 1
        self.total_ns += step.duration
        self.max_ns = max(self.max_ns, step.duration)
        self.stalls += step.stall
        if len(self.cids) < 1000:
            self.cids.add(step.cid)
        if step.culprit is not None:
            self.culprits[step.culprit] += step.duration
        if step.coro_frame is not None:
            self.coro_frames[step.coro_frame] += step.duration
        if step.call:
            self.calls[step.call] += step.duration
        self.began[step.began] += 1
        self.ended[step.ended] += 1

    def merge(self, other: _Group) -> None:
        """Adds another group's steps."""
        self.steps += other.steps
        self.total_ns += other.total_ns
        self.max_ns = max(self.max_ns, other.max_ns)
        self.stalls += other.stalls
        self.cids |= other.cids
        self.began.update(other.began)
        self.ended.update(other.ended)


@dataclass
class _Long:
    """_Long is one long step, with what its samples and sites say."""

    cid: int
    name: str
    duration: int
    stall: bool
    culprit: StackFrame | None
    coro_frame: StackFrame | None
    call: str
    began: str
    ended: str = ""


class BlockingRule(Rule):
    """BlockingRule finds the calls that hold the loop: steps (and stalls)
    that block it, grouped by coroutine function and the line where their
    samples say the time went."""

    def __init__(self) -> None:
        # loop -> samples (time, coroutine, stack) not yet taken by a step.
        self._samples: dict[int, deque[tuple[int, int, Stack]]] = {}
        self._gc_open: dict[str, int] = {}
        self._gc: deque[tuple[int, int]] = deque(maxlen=_MAX_GC)
        # loop -> [t0, matched by a step] of the stall going on there.
        self._stalls: dict[int, list[Any]] = {}
        self._before: dict[int, Stack | None] = {}  # coroutine -> block before its step
        self._pending: dict[int, _Long] = {}  # coroutine -> long step ended by a block
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._busy_ns = 0
        self._gc_steps = 0

    # Events.

    kinds = frozenset((_SAMPLE, _RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END))

    def on_event(self, ev: Any, facts: Facts) -> None:
        """Keeps samples, stall ranges and collections."""
        kind = ev[0]
        if kind is _SAMPLE:
            q = self._samples.get(ev[3])
            if q is None:
                q = self._samples[ev[3]] = deque(maxlen=_MAX_SAMPLES)
            q.append((ev[1], ev[2], ev[5]))
        elif kind is _RANGE_BEGIN or kind is _RANGE_ACTIVE:
            name, scope = ev[6]
            if name == STALL and scope[0] is _LOOP:
                self._stalls.setdefault(scope[1], [ev[1], False])
            elif name.startswith(GC_PREFIX):
                self._gc_open[name] = ev[1]
        elif kind is _RANGE_END:
            name, scope = ev[6]
            if name == STALL and scope[0] is _LOOP:
                st = self._stalls.pop(scope[1], None)
                if st is not None and not st[1]:
                    self._callback_stall(scope[1], st[0], ev[1])
            elif name.startswith(GC_PREFIX):
                t0 = self._gc_open.pop(name, None)
                if t0 is not None:
                    self._gc.append((t0, ev[1]))

    def on_wait(self, w: Wait, facts: Facts) -> None:
        """Notes where a coroutine blocked: where its next step begins, and
        where its last long step ended."""
        self._before[w.coro] = w.stack
        long = self._pending.pop(w.coro, None)
        if long is not None:
            long.ended = site(w.stack)
            self._add(long)

    def on_step(self, s: Step, facts: Facts) -> None:
        """Takes a long step, with the samples taken during it."""
        duration = s.end - s.start
        self._busy_ns += duration
        # Missing: the coroutine's first step; None: a step after a yield.
        b = self._before.pop(s.coro, _FIRST)
        if s.ended == "yield":
            self._before[s.coro] = None
        if duration < LONG_STEP_NS:
            if self._samples.get(s.loop):
                self._drop(s.loop, s.end)
            return
        began = "a yield" if b is None else site(b)
        stall = False
        st = self._stalls.get(s.loop)
        if st is not None and s.start - _MS <= st[0] <= s.end:
            st[1] = stall = True
        samples = self._take(s.loop, s.start, s.end, s.coro)
        if 2 * self._gc_ns(s.start, s.end) >= duration:
            self._gc_steps += 1
            return
        name = facts.name(s.coro)
        culprit, coro_frame, call = self._most_sampled(samples, name.split(" ")[0])
        long = _Long(
            s.coro,
            name,
            duration,
            stall,
            culprit,
            coro_frame,
            call,
            began,
        )
        if s.ended == "block":
            self._pending[s.coro] = long
        else:
            long.ended = "a yield" if s.ended == "yield" else "its end"
            self._add(long)

    def on_end(self, cid: int, t: int, reason: str, facts: Facts) -> None:
        """Forgets an ended coroutine."""
        self._before.pop(cid, None)

    # Helpers.

    def _drop(self, loop: int, t: int) -> None:
        """Drops the samples of a short step (taken as it ended, or late)."""
        q = self._samples.get(loop)
        while q and q[0][0] <= t:
            q.popleft()

    def _take(self, loop: int, t0: int, t1: int, cid: int) -> list[Stack]:
        """The samples of the step from t0 to t1 (the older ones go)."""
        q = self._samples.get(loop)
        if not q:
            return []
        taken = []
        kept: deque[tuple[int, int, Stack]] = deque(maxlen=_MAX_SAMPLES)
        for t, c, stack in q:
            if t0 <= t <= t1 and c in (cid, NO_COROUTINE):
                taken.append(stack)
            elif t > t1 or (t >= t0 and c != cid):
                kept.append((t, c, stack))  # a nested (eager) step's, or later
        self._samples[loop] = kept
        return taken

    def _gc_ns(self, t0: int, t1: int) -> int:
        """How long collections ran from t0 to t1."""
        ns = 0
        for g0, g1 in self._gc:
            ns += max(0, min(g1, t1) - max(g0, t0))
        for g0 in self._gc_open.values():
            ns += max(0, t1 - max(g0, t0))
        return ns

    @staticmethod
    def _most_sampled(
        samples: list[Stack], qualname: str
    ) -> tuple[StackFrame | None, StackFrame | None, str]:
        """The culprit most samples show (the function most show, at its
        line most show), its coroutine frame and call."""
        seen = Counter(_culprit(stack, qualname) for stack in samples)
        funcs: Counter[tuple[str, str]] = Counter()
        for (f, _, _), n in seen.items():
            if f is not None:
                funcs[f.func, f.file] += n
        if not funcs:
            return None, None, ""
        func = funcs.most_common(1)[0][0]
        return next(k for k, _ in seen.most_common() if k[0] and k[0][:2] == func)

    def _callback_stall(self, loop: int, t0: int, t1: int) -> None:
        """Takes a stall no coroutine step had: a plain callback's."""
        duration = t1 - t0
        self._busy_ns += duration
        samples = self._take(loop, t0, t1, -1)
        if 2 * self._gc_ns(t0, t1) >= duration:
            self._gc_steps += 1
            return
        culprit, coro_frame, call = self._most_sampled(samples, "")
        if culprit is None:
            return  # nothing says what ran: the stalls table shows it
        self._add(_Long(-1, "", duration, True, culprit, coro_frame, call, "", ""))

    def _add(self, long: _Long) -> None:
        f = long.culprit
        key: tuple[Any, ...] = (long.name, f.func, f.file) if f else (long.name,)
        if f is None:
            key += (long.began, long.ended)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(long.name)
        g.add(long)

    # The findings.

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        """Returns a finding per culprit that held the loop past the floor."""
        for long in self._pending.values():
            self._add(long)
        self._pending.clear()
        groups = self._merge_unsampled()
        floor = max(FLOOR_NS, int(FLOOR_SHARE * self._busy_ns))
        # A group no sample caught is no finding: the OS may have kept the
        # loop thread off the CPU (the watchdog then samples nothing).
        found = [
            self._finding(g)
            for g in groups
            if g.total_ns >= floor and g.culprit is not None
        ]
        lines = tuple(
            f"{format_duration(g.total_ns):>8}  {g.steps:5d} steps  "
            f"max {format_duration(g.max_ns):>8}  {self._who(g)}"
            for g in sorted(groups, key=lambda g: -g.total_ns)[:5]
        )
        sections = []
        if lines:
            title = f"Long steps (>= {format_duration(LONG_STEP_NS)}), by culprit"
            data = [
                {
                    "coroutine": g.name,
                    "where": place(g.culprit),
                    "steps": g.steps,
                    "total_ns": g.total_ns,
                    "max_ns": g.max_ns,
                    "stalls": g.stalls,
                }
                for g in sorted(groups, key=lambda g: -g.total_ns)[:20]
            ]
            sections.append(Section(title, lines, data))
        return found, sections

    def _merge_unsampled(self) -> list[_Group]:
        """Puts the steps no sample caught with the sampled steps of the same
        coroutine function that began (and ended) at the same places, or
        with its only sampled group."""
        sampled: dict[tuple[str, ...], _Group | None] = {}
        for g in self._groups.values():
            if g.culprit is not None:
                for b in g.began:
                    sampled.setdefault((g.name, b), g)
                    for e in g.ended:
                        sampled.setdefault((g.name, b, e), g)
                only = (g.name,)
                sampled[only] = g if only not in sampled else None
        out = []
        for key, g in self._groups.items():
            if g.culprit is None:
                into = sampled.get(key) or sampled.get(key[:2]) or sampled.get(key[:1])
                if into is not None:
                    into.merge(g)
                    continue
            out.append(g)
        return out

    @staticmethod
    def _who(g: _Group) -> str:
        """``load_config (app.py:9) in handler``: the culprit and its caller."""
        if g.culprit is None:
            began = g.began.most_common(1)[0][0]
            ended = g.ended.most_common(1)[0][0]
            span = f"between {began or 'its start'} and {ended or 'its end'}"
            return f"{g.name} {span}"
        where = place(g.culprit)
        return f"{where} in {f'coroutine {g.name}' if g.name else 'a loop callback'}"

    def _finding(self, g: _Group) -> Finding:
        unit = "step" if g.name else "callback"
        steps = f"1 {unit}" if g.steps == 1 else f"{g.steps} {unit}s"
        mean = g.total_ns // g.steps
        how = (
            f"{steps} of {format_duration(g.max_ns)}"
            if g.steps == 1
            else f"{steps} of {format_duration(mean)} (max {format_duration(g.max_ns)})"
        )
        if g.culprit is not None:
            what = f"blocking call in {place(g.culprit)}"
            if g.name and g.name != g.culprit.func:
                what += f", from coroutine {g.name}"
            elif not g.name:
                what += ", in a loop callback"
        else:
            what = f"blocking code in coroutine {self._who(g)}"
        summary = f"{what}: {how} held the loop, {format_duration(g.total_ns)} in all"
        detail: list[str] = []
        if g.culprit is not None:
            into = g.calls.most_common(1)[0][0] if g.calls else _source(g.culprit)
            at = f"{_short(g.culprit.file)}:{g.culprit.line}"
            went = f"time went to {into} at {at}" if into else f"time went to {at}"
            if g.coro_frame is not None and g.coro_frame != g.culprit:
                went += f", called at {place(g.coro_frame)}"
            detail.append(went)
        else:
            detail.append("no sample caught where the time went")
        if g.name:
            began = g.began.most_common(1)[0][0] or "a coroutine's first step"
            ended = g.ended.most_common(1)[0][0] or "an unknown place"
            detail.append(f"steps began at {began} and ended at {ended}")
            detail.append(f"coroutines {coro_list(g.cids)}")
        if g.stalls:
            detail.append(
                "a loop stall"
                if g.steps == 1
                else f"{g.stalls} of them were loop stalls"
            )
        return Finding(
            kind="blocking",
            summary=summary,
            detail="; ".join(detail),
            cost_ns=g.total_ns,
            where=place(g.culprit),
            evidence={
                "coroutine": g.name,
                "steps": g.steps,
                "total_ns": g.total_ns,
                "max_ns": g.max_ns,
                "stalls": g.stalls,
                "coroutines": sorted(g.cids),
                "call": g.calls.most_common(1)[0][0] if g.calls else "",
                "began": dict(g.began),
                "ended": dict(g.ended),
            },
        )
