"""GC pressure: collections by generation, how long they paused the
program, the stalls that were mostly garbage collection, and the coroutine
that was allocating when the longest pauses began.

A collection is a "GC gen0/1/2" range, recorded on the thread that
collected, so the range's coroutine is the one running (allocating) when
the collection began. A collection holds the GIL: it pauses every thread,
the loop's too. Only the pauses during a loop's busy time count against
the loop; a stall is GC's when collections ran half of it or more (as
``_stalls.Stall.by_gc`` counts).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ...reader import (
    NO_COROUTINE,
    NO_LOOP,
    Event,
    EventKind,
    LoopState,
    ResourceKind,
    Stack,
)
from .._findings import Facts, Finding, Rule, Section, Wait, site
from .._format import format_duration
from .._stalls import GC_PREFIX, STALL, is_own_frame, program_frames

MIN_TOTAL_NS = 20_000_000
"""Collections pausing a loop less than this, in all, are not a finding."""

SHARE = 0.05
"""Collections that took this share of the loops' busy time are pressure."""

LONGEST = 16
"""The longest pauses remembered, to tell who allocated when they began."""

_RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END = (
    EventKind.RANGE_BEGIN,
    EventKind.RANGE_ACTIVE,
    EventKind.RANGE_END,
)
_ST, _SAMPLE = EventKind.STATE_TRANSITION, EventKind.STACK_SAMPLE
_LOOP = ResourceKind.LOOP
_RUNNING = LoopState.RUNNING


@dataclass
class _Gen:
    collections: int = 0
    total: int = 0
    longest: int = 0
    in_loop: int = 0  # paused a loop's busy time


@dataclass
class _Stall:
    start: int
    gc: int = 0


class GCRule(Rule):
    """GCRule measures garbage collections by generation and finds GC
    pressure: collections taking a large share of the loops' busy time, or
    stalls that were mostly collection."""

    def __init__(self) -> None:
        self._gens: dict[str, _Gen] = {}
        self._open: dict[str, tuple[int, int, int]] = {}  # name -> (t0, coro, loop)
        self._running: dict[int, int] = {}  # loop -> when it began running
        self._busy = 0
        self._loops_seen = False
        self._stalls: dict[int, _Stall] = {}  # loop -> the stall going on
        self._gc_stalls = 0
        self._gc_stall_ns = 0
        self._gc_stall_longest = 0
        # The longest pauses: (duration, t0, generation, coroutine).
        self._longest: list[tuple[int, int, str, int]] = []
        self._by_coro: dict[int, int] = {}  # coroutine -> pause begun in it
        self._sites: dict[int, Stack] = {}  # coroutine -> its last wait's stack
        self._sampled: dict[int, Counter[str]] = {}  # coroutine -> sampled sites

    kinds = frozenset((_SAMPLE, _ST, _RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END))

    def on_event(self, ev: Event, facts: Facts) -> None:
        kind = ev[0]
        if kind is _SAMPLE:
            coro = ev[2]
            if coro in self._by_coro and ev[5] is not None:
                where = site(program_frames(ev[5]))
                if where:
                    c = self._sampled.get(coro)
                    if c is None:
                        c = self._sampled[coro] = Counter()
                    c[where] += 1
        elif kind is _ST:
            det = ev[6]
            if det[0][0] is _LOOP:
                self._loop(det[0][1], ev[1], det[4])
        elif kind is _RANGE_BEGIN or kind is _RANGE_ACTIVE:
            det = ev[6]
            name = det[0]
            if name.startswith(GC_PREFIX):
                self._open[name] = (ev[1], ev[2], ev[3])
            elif name == STALL and det[1][0] is _LOOP:
                self._stalls.setdefault(det[1][1], _Stall(ev[1]))
        elif kind is _RANGE_END:
            det = ev[6]
            name = det[0]
            if name.startswith(GC_PREFIX):
                began = self._open.pop(name, None)
                if began is not None:
                    self._collection(name, began, ev[1])
            elif name == STALL and det[1][0] is _LOOP:
                st = self._stalls.pop(det[1][1], None)
                if st is not None:
                    self._stall(st, ev[1])

    def _loop(self, lid: int, t: int, new: Any) -> None:
        self._loops_seen = True
        if new is _RUNNING:
            self._running.setdefault(lid, t)
        else:
            t0 = self._running.pop(lid, None)
            if t0 is not None:
                self._busy += max(0, t - t0)

    def _collection(self, name: str, began: tuple[int, int, int], t1: int) -> None:
        t0, coro, loop = began
        d = max(0, t1 - t0)
        g = self._gens.get(name)
        if g is None:
            g = self._gens[name] = _Gen()
        g.collections += 1
        g.total += d
        g.longest = max(g.longest, d)
        for st in self._stalls.values():
            overlap = t1 - max(t0, st.start)
            if overlap > 0:
                st.gc += overlap
        if loop == NO_LOOP and not self._running:
            return  # no loop was busy: it paused nobody's step
        g.in_loop += d
        if coro != NO_COROUTINE:
            self._by_coro[coro] = self._by_coro.get(coro, 0) + d
        item = (d, t0, name, coro)
        if len(self._longest) < LONGEST:
            heapq.heappush(self._longest, item)
        elif item > self._longest[0]:
            heapq.heapreplace(self._longest, item)

    def _stall(self, st: _Stall, t1: int) -> None:
        d = max(0, t1 - st.start)
        if st.gc > 0 and 2 * st.gc >= d:
            self._gc_stalls += 1
            self._gc_stall_ns += d
            self._gc_stall_longest = max(self._gc_stall_longest, d)

    def on_wait(self, w: Wait, facts: Facts) -> None:
        if w.coro in self._by_coro and w.stack:
            self._sites[w.coro] = w.stack

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        for t0 in self._running.values():
            self._busy += max(0, facts.end_ns - t0)
        self._running.clear()
        if not self._gens:
            return [], []
        gens = sorted(self._gens.items())
        lines = [
            f"{name.removeprefix('GC ')}: {g.collections} collection"
            f"{'s' if g.collections != 1 else ''}, paused "
            f"{format_duration(g.total)} in all, longest {format_duration(g.longest)}"
            for name, g in gens
        ]
        data: dict[str, Any] = {
            name.removeprefix("GC "): {
                "collections": g.collections,
                "total_ns": g.total,
                "longest_ns": g.longest,
                "in_loop_ns": g.in_loop,
            }
            for name, g in gens
        }
        if self._gc_stalls:
            lines.append(
                f"{self._gc_stalls} loop stall{'s' if self._gc_stalls != 1 else ''} "
                f"mostly garbage collection, {format_duration(self._gc_stall_ns)}"
            )
        data["gc_stalls"] = self._gc_stalls
        data["gc_stall_ns"] = self._gc_stall_ns
        return self._findings(facts), [Section("GC", tuple(lines), data)]

    def _findings(self, facts: Facts) -> list[Finding]:
        in_loop = sum(g.in_loop for g in self._gens.values())
        busy = self._busy if self._loops_seen else facts.end_ns - facts.start_ns
        share = in_loop / busy if busy > 0 else 0.0
        if in_loop < MIN_TOTAL_NS or (share < SHARE and not self._gc_stalls):
            return []
        # The generation that paused most, and its longest pause.
        name, g = max(self._gens.items(), key=lambda kv: kv[1].in_loop)
        gen = name.removeprefix("GC ")
        culprit, where = self._culprit(facts)
        summary = (
            f"GC pressure: garbage collection paused the loop "
            f"{format_duration(in_loop)} ({share:.0%} of its busy time), most in "
            f"{gen} (longest {format_duration(g.longest)})"
        )
        if culprit:
            summary += f", begun while {culprit} allocated"
            if where:
                summary += f" at {where}"
        parts = [
            f"{gn.removeprefix('GC ')}: {gg.collections} collections, "
            f"{format_duration(gg.total)}"
            for gn, gg in sorted(self._gens.items())
            if gg.collections
        ]
        if self._gc_stalls:
            parts.append(
                f"{self._gc_stalls} stall{'s' if self._gc_stalls != 1 else ''} "
                f"were mostly GC (longest {format_duration(self._gc_stall_longest)})"
            )
        return [
            Finding(
                kind="gc",
                summary=summary,
                detail="; ".join(parts),
                cost_ns=in_loop,
                where=where,
                evidence={
                    "generation": gen,
                    "paused_ns": in_loop,
                    "busy_ns": busy,
                    "longest_ns": g.longest,
                    "gc_stalls": self._gc_stalls,
                    "allocating": culprit,
                },
            )
        ]

    def _culprit(self, facts: Facts) -> tuple[str, str]:
        """The coroutine (by function) running when the longest pauses
        began, as ``func (coroutine N)``, and where it allocated (its most
        sampled line, else where it last waited), or ``""``; aiotrace's own
        coroutines and frames are never it."""
        by_func: dict[str, int] = {}
        first: dict[str, int] = {}
        for d, _, _, coro in self._longest:
            if coro == NO_COROUTINE or self._own(coro):
                continue
            fn = facts.name(coro)
            by_func[fn] = by_func.get(fn, 0) + d
            if self._by_coro.get(coro, 0) > self._by_coro.get(first.get(fn, -1), -1):
                first[fn] = coro
        if not by_func:
            return "", ""
        fn = max(by_func, key=lambda k: by_func[k])
        coro = first[fn]
        sampled = self._sampled.get(coro)
        stack = self._sites.get(coro)
        if sampled:
            where = sampled.most_common(1)[0][0]
        else:
            where = site(stack) if stack is not None else ""
        return f"{fn} (coroutine {coro})", where

    def _own(self, coro: int) -> bool:
        stack = self._sites.get(coro)
        if stack is None or not stack.frames:
            return False
        frames = [f for f in stack.frames if "/asyncio/" not in f.file]
        return bool(frames) and all(is_own_frame(f) for f in frames)
