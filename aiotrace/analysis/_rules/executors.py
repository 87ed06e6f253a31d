"""Executor starvation: calls that waited for a worker longer than they ran,
while every worker of their executor was busy, and who held the workers.

Each ``run_in_executor`` (and ``to_thread``) call runs inside an "executor"
range on its worker thread, whose one-frame stack names the function.
Workers are grouped into executors by their thread names
(``ThreadPoolExecutor-0_1`` and ``ThreadPoolExecutor-0_0`` are one
executor). The time a call queued is the ``/executor/queued:seconds``
metric its worker records as it begins; traces without it infer it from
the awaiting coroutine's "executor" wait (from its block to the range's
begin), matching waits to ranges in the order the ranges ended.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ...reader import Event, EventKind, ResourceKind
from .._findings import Facts, Finding, Rule, Section, Step, Wait, place
from .._format import format_duration

QUEUED_METRIC = "/executor/queued:seconds"
"""The metric a worker records as a call begins (see ``_loop._asyncio``)."""

RANGE = "executor"

MIN_QUEUED_NS = 50_000_000
"""A function that queued less than this, in all, is not starved."""

SATURATED = 0.8
"""A call queued because the executor was full when its workers were busy
this share of the time it queued, or more."""

HOLDER = 0.1
"""A function named as holding the workers held them this share of the
worker time a starved function queued, or more."""

RECENT = 256
"""Calls remembered per worker, to tell who held it while others queued."""

FUNCS_SHOWN = 8
"""Functions shown per executor in the section (the data has them all)."""

UNMATCHED = 4096
"""Ended calls kept for waits to claim, in traces without the metric."""

_RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END = (
    EventKind.RANGE_BEGIN,
    EventKind.RANGE_ACTIVE,
    EventKind.RANGE_END,
)
_METRIC, _LABEL = EventKind.METRIC, EventKind.LABEL
_THREAD = ResourceKind.THREAD
_WORKER_NO = re.compile(r"[_-]\d+$")


@dataclass
class _Func:
    calls: int = 0
    ran: int = 0
    ran_max: int = 0
    queued_calls: int = 0  # calls whose queue time is known
    queued: int = 0
    queued_max: int = 0
    saturated: int = 0  # queued time while every worker was busy
    holders: dict[str, int] = field(default_factory=dict)  # func -> ns held


@dataclass
class _Worker:
    executor: str
    first: int
    recent: deque[tuple[int, int, str]] = field(
        default_factory=lambda: deque(maxlen=RECENT)
    )
    open: tuple[int, str] | None = None  # (begin, func) of the call running
    busy: int = 0
    last: int = 0


@dataclass
class _Executor:
    workers: list[int] = field(default_factory=list)
    funcs: dict[str, _Func] = field(default_factory=dict)
    first: int = -1
    last: int = 0


class ExecutorRule(Rule):
    """ExecutorRule measures each executor's workers and calls, and finds
    functions that queued long for a worker while others held them all."""

    def __init__(self) -> None:
        self._thread_names: dict[int, str] = {}
        self._workers: dict[int, _Worker] = {}
        self._executors: dict[str, _Executor] = {}
        self._queued: dict[int, int] = {}  # thread -> ns, from the metric
        # Ended calls whose queue time is unknown, for waits to claim:
        # (end, begin, executor, func).
        self._unmatched: deque[tuple[int, int, str, str]] = deque(maxlen=UNMATCHED)
        self._has_metric = False
        self._blocked_step: dict[int, int] = {}  # coroutine -> its last step's start

    kinds = frozenset((_RANGE_BEGIN, _RANGE_ACTIVE, _RANGE_END, _METRIC, _LABEL))

    def on_event(self, ev: Event, facts: Facts) -> None:
        kind = ev[0]
        if kind is _RANGE_BEGIN or kind is _RANGE_ACTIVE:
            det = ev[6]
            if det[0] == RANGE:
                self._begin(ev, kind is _RANGE_BEGIN)
        elif kind is _RANGE_END:
            if ev[6][0] == RANGE:
                self._end(ev)
        elif kind is _METRIC:
            det = ev[6]
            if det[0] == QUEUED_METRIC:
                v = det[1]
                self._has_metric = True
                if math.isfinite(v) and 0 <= v < 1e9:
                    self._queued[ev[4]] = round(v * 1e9)
        elif kind is _LABEL:
            det = ev[6]
            if det[1][0] is _THREAD:
                self._thread_names[det[1][1]] = det[0]

    def _worker(self, thread: int, t: int) -> _Worker:
        w = self._workers.get(thread)
        if w is None:
            name = self._thread_names.get(thread)
            executor = _WORKER_NO.sub("", name) if name else f"thread {thread}"
            if executor == "asyncio":  # the loop's own, for to_thread
                executor = "the default executor"
            w = self._workers[thread] = _Worker(executor, t)
            ex = self._executors.get(executor)
            if ex is None:
                ex = self._executors[executor] = _Executor(first=t)
            ex.workers.append(thread)
        return w

    def _begin(self, ev: Event, began: bool) -> None:
        t, thread, stack = ev[1], ev[4], ev[5]
        frame = stack.frames[0] if stack is not None and stack.frames else None
        func = place(frame) if frame is not None else "(unknown function)"
        w = self._worker(thread, t)
        if w.open is not None:
            return  # RANGE_ACTIVE for a call already open
        w.open = (t, func)
        queued = self._queued.pop(thread, None)
        if began and queued is not None:
            self._note_queue(w.executor, func, t - queued, t)
        elif not began:
            self._queued.pop(thread, None)

    def _end(self, ev: Event) -> None:
        t, thread = ev[1], ev[4]
        w = self._workers.get(thread)
        if w is None or w.open is None:
            return
        t0, func = w.open
        w.open = None
        ran = max(0, t - t0)
        w.busy += ran
        w.last = t
        w.recent.append((t0, t, func))
        ex = self._executors[w.executor]
        if ex.first < 0 or t0 < ex.first:
            ex.first = t0
        ex.last = max(ex.last, t)
        f = _func(ex, func)
        f.calls += 1
        f.ran += ran
        f.ran_max = max(f.ran_max, ran)
        if not self._has_metric:
            # Its queue time is left for the wait that awaited it.
            self._unmatched.append((t, t0, w.executor, func))

    def on_step(self, s: Step, facts: Facts) -> None:
        if s.ended == "block" and not self._has_metric:
            self._blocked_step[s.coro] = s.start

    def on_end(self, cid: int, t: int, reason: str, facts: Facts) -> None:
        self._blocked_step.pop(cid, None)

    def on_wait(self, w: Wait, facts: Facts) -> None:
        if w.reason != RANGE or w.how != "thread" or not self._unmatched:
            return
        # The call was submitted in the step that ended in this wait, so it
        # began after that step did; and it ended before the wait did. The
        # loop wakes awaiting coroutines in the order their calls ended, so
        # the first such call is this wait's.
        submitted = self._blocked_step.get(w.coro, w.start)
        q = self._unmatched
        while q and q[0][0] < submitted:
            q.popleft()  # ended before any wait still going on began
        for i, (t1, t0, executor, func) in enumerate(q):
            if t1 > w.end:
                return
            if t0 >= submitted:
                del q[i]
                self._note_queue(executor, func, min(w.start, t0), t0)
                return

    def _note_queue(self, executor: str, func: str, s: int, b: int) -> None:
        """Notes a call of ``func`` submitted at ``s`` that began at ``b``."""
        ex = self._executors[executor]
        f = _func(ex, func)
        q = max(0, b - s)
        f.queued_calls += 1
        f.queued += q
        f.queued_max = max(f.queued_max, q)
        if q <= 0:
            return
        capacity = 0
        busy: dict[str, int] = {}
        for tid in ex.workers:
            w = self._workers[tid]
            if w.first >= b:
                continue
            capacity += b - max(s, w.first)
            calls: list[tuple[int, int, str]] = []
            if w.open is not None and w.open[0] < b:
                calls.append((w.open[0], b, w.open[1]))
            for c in reversed(w.recent):
                if c[1] <= s:
                    break
                calls.append(c)
            for t0, t1, held in calls:
                overlap = min(t1, b) - max(t0, s)
                if overlap > 0:
                    busy[held] = busy.get(held, 0) + overlap
        total = sum(busy.values())
        if capacity > 0 and total >= SATURATED * capacity:
            f.saturated += q
            for held, ns in busy.items():
                f.holders[held] = f.holders.get(held, 0) + ns

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        if not self._executors:
            return [], []
        found: list[Finding] = []
        lines: list[str] = []
        data: dict[str, Any] = {}
        for name, ex in sorted(
            self._executors.items(), key=lambda kv: -_busy(self, kv[1])
        ):
            n = len(ex.workers)
            span = max(0, ex.last - ex.first)
            busy_ns = _busy(self, ex)
            share = busy_ns / (span * n) if span and n else 0.0
            lines.append(
                f"{name}: {n} worker{'s' if n != 1 else ''}, busy {share:.0%} "
                f"over {format_duration(span)}"
            )
            funcs: dict[str, Any] = {}
            for func, f in sorted(
                ex.funcs.items(), key=lambda kv: -(kv[1].ran + kv[1].queued)
            ):
                funcs[func] = _func_data(f)
                if len(funcs) <= FUNCS_SHOWN:
                    lines.append(f"  {func}: {_func_line(f)}")
                finding = _starved(name, n, share, func, f)
                if finding is not None:
                    found.append(finding)
            data[name] = {
                "workers": n,
                "threads": sorted(ex.workers),
                "busy": round(share, 4),
                "span_ns": span,
                "functions": funcs,
            }
        return found, [Section("Executors", tuple(lines), data)]


def _func(ex: _Executor, func: str) -> _Func:
    f = ex.funcs.get(func)
    if f is None:
        f = ex.funcs[func] = _Func()
    return f


def _func_data(f: _Func) -> dict[str, int]:
    return {
        "calls": f.calls,
        "queued_calls": f.queued_calls,
        "queued_ns": f.queued,
        "queued_mean_ns": f.queued // f.queued_calls if f.queued_calls else 0,
        "queued_max_ns": f.queued_max,
        "saturated_ns": f.saturated,
        "ran_ns": f.ran,
        "ran_mean_ns": f.ran // f.calls if f.calls else 0,
        "ran_max_ns": f.ran_max,
    }


def _func_line(f: _Func) -> str:
    """``8 calls, queued 1.2 s (mean 150 ms, max 301 ms), ran 802 ms (mean
    100 ms)``: a function's line in the section."""
    d = _func_data(f)
    queued = "queued unknown"
    if f.queued_calls:
        queued = (
            f"queued {format_duration(f.queued)} (mean "
            f"{format_duration(d['queued_mean_ns'])}, "
            f"max {format_duration(f.queued_max)})"
        )
    return (
        f"{f.calls} call{'s' if f.calls != 1 else ''}, {queued}, "
        f"ran {format_duration(f.ran)} (mean {format_duration(d['ran_mean_ns'])})"
    )


def _busy(rule: ExecutorRule, ex: _Executor) -> int:
    return sum(rule._workers[t].busy for t in ex.workers)


def _starved(
    executor: str, workers: int, share: float, func: str, f: _Func
) -> Finding | None:
    """The finding for ``func`` if it queued long, longer than it ran, while
    the executor's workers were all busy."""
    if (
        f.queued < MIN_QUEUED_NS
        or f.queued < f.ran
        or f.saturated < SATURATED * f.queued
    ):
        return None
    holders = sorted(f.holders.items(), key=lambda kv: -kv[1])
    held_ns = sum(ns for _, ns in holders)
    others = [h for h in holders if h[0] != func and h[1] >= HOLDER * held_ns]
    if others:
        held = "held by " + ", ".join(h for h, _ in others[:3])
        if f.holders.get(func, 0) >= HOLDER * held_ns:
            held += " and its own calls"
    else:
        held = "held by its own calls"
    plural = "s" if workers != 1 else ""
    summary = (
        f"executor starvation in {executor}: {func} queued "
        f"{format_duration(f.queued)} for a worker in {f.queued_calls} calls that "
        f"ran {format_duration(f.ran)}; its {workers} worker{plural} were {held}"
    )
    detail = (
        f"longest queue {format_duration(f.queued_max)}; workers busy "
        f"{share:.0%} overall; worker time while it queued: "
        + ", ".join(f"{h} {format_duration(ns)}" for h, ns in holders[:3])
    )
    return Finding(
        kind="executor",
        summary=summary,
        detail=detail,
        cost_ns=f.queued,
        where=func,
        evidence={
            "executor": executor,
            "workers": workers,
            "function": func,
            "calls": f.calls,
            "queued_ns": f.queued,
            "queued_max_ns": f.queued_max,
            "ran_ns": f.ran,
            "holders": dict(holders[:5]),
        },
    )
