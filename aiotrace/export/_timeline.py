"""The report's timeline: spans per row, built in one pass, in bounded memory.

Rows: for each loop, its busy time, its coroutine steps and its stalls
(with GC); for each thread that worked off a loop, its ranges (executor
work); for each user task type, its tasks; and for the first
``max_coroutines`` coroutines, their states. Every span is kept until
there are more than ``max_spans``; then spans of one kind closer than a
resolution are merged, the resolution doubling until they fit, so a trace
of any length makes a page of bounded size. The page says when it did.
"""

from __future__ import annotations

import heapq
from typing import Any

from ..reader import (
    NO_LOOP,
    CoroState,
    Event,
    EventKind,
    LoopState,
    ResourceKind,
)

KINDS = (
    "busy",  # a loop running callbacks
    "step",  # a coroutine step on a loop
    "stall",  # a loop stall
    "gc",  # a garbage collection
    "range",  # executor work and other ranges
    "task",  # a user task
    "running",  # coroutine states
    "runnable",
    "waiting",
)
_KIND = {k: i for i, k in enumerate(KINDS)}
MAX_NAMES = 20_000
"""The most distinct span names the page holds."""
MAX_LANES = 12
"""Lanes per task type; more overlapping tasks share the last lane."""


class _Row:
    """_Row is one timeline row: closed spans, as a flat list of ints.

    Invariant: ``spans`` holds (start, end, kind, name, merged) per span,
    flattened, in the order the spans ended.
    """

    __slots__ = ("group", "label", "open", "order", "spans")

    def __init__(self, group: str, label: str, order: tuple[int, int]) -> None:
        self.group = group
        self.label = label
        self.order = order
        self.spans: list[int] = []
        self.open: dict[Any, tuple[int, int, int]] = {}


class TimelineBuilder:
    """TimelineBuilder collects the report's timeline from events in order."""

    def __init__(self, *, max_spans: int = 250_000, max_coroutines: int = 200) -> None:
        self.max_spans = max_spans
        self.max_coroutines = max_coroutines
        self.resolution_ns = 0
        self.origin: int | None = None
        self.now = 0
        self._rows: dict[Any, _Row] = {}
        self._names: dict[str, int] = {}
        self._spans = 0
        self._coro_rows = 0
        self.coroutines_left_out = 0
        self._coro_label: dict[int, str] = {}
        self._coro_loop: dict[int, int] = {}
        self._task_type: dict[int, str] = {}
        self._loop_labels: dict[int, str] = {}
        self._thread_labels: dict[int, str] = {}

    # -- rows and spans ----------------------------------------------------

    def _name(self, s: str, fallback: str = "") -> int:
        """The index of ``s`` in the name table; of ``fallback`` once it is full.

        Names made of a task's type and id are one per task: past
        MAX_NAMES, spans are named by their type alone.
        """
        i = self._names.get(s)
        if i is None:
            if len(self._names) >= MAX_NAMES and fallback:
                return self._name(fallback)
            i = self._names[s] = len(self._names)
        return i

    def _row(self, key: Any, group: str, label: str, order: tuple[int, int]) -> _Row:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row(group, label, order)
        return row

    def _open(
        self, row: _Row, key: Any, t: int, kind: str, name: str, fallback: str = ""
    ) -> None:
        row.open[key] = (t, _KIND[kind], self._name(name, fallback))

    def _close(self, row: _Row, key: Any, t: int) -> None:
        span = row.open.pop(key, None)
        if span is None:
            return
        start, kind, name = span
        row.spans += (start, t, kind, name, 1)
        self._spans += 1
        if self._spans > self.max_spans:
            self._compact()

    def _compact(self) -> None:
        """Merges spans of one kind closer than the resolution, until they fit."""
        while self._spans > self.max_spans * 3 // 4:
            self.resolution_ns = max(self.resolution_ns * 2, 1000)
            self._merge(self.resolution_ns)

    def _merge(self, res: int) -> None:
        merged_name = self._name("")
        total = 0
        for row in self._rows.values():
            spans = row.spans
            out: list[int] = []
            last: dict[int, int] = {}  # kind -> index in out of its last span
            for i in range(0, len(spans), 5):
                s, e, k, n, m = spans[i : i + 5]
                j = last.get(k)
                if j is not None and s - out[j + 1] < res:
                    out[j + 1] = max(out[j + 1], e)
                    if out[j + 3] != n:
                        out[j + 3] = merged_name
                    out[j + 4] += m
                    continue
                last[k] = len(out)
                out += (s, e, k, n, m)
            row.spans = out
            total += len(out) // 5
        self._spans = total

    # -- events ------------------------------------------------------------

    def __call__(self, ev: Event) -> None:
        """Takes one event, in the reader's order."""
        t = ev.time
        if self.origin is None:
            self.origin = t
        self.now = max(self.now, t)
        t = self.now
        kind = ev.kind
        if kind is EventKind.STATE_TRANSITION:
            st = ev.state_transition
            rid = st.resource.id
            if st.resource.kind is ResourceKind.COROUTINE:
                self._coro(ev, rid, st.old, st.new, st.reason, t)
            elif st.resource.kind is ResourceKind.LOOP:
                row = self._loop_row(rid, "busy")
                if st.new is LoopState.RUNNING:
                    if "run" not in row.open:
                        self._open(row, "run", t, "busy", "running")
                else:
                    self._close(row, "run", t)
        elif kind is EventKind.RANGE_BEGIN or kind is EventKind.RANGE_ACTIVE:
            row, key, name, k = self._range(ev)
            if key not in row.open:
                self._open(row, key, t, k, name)
        elif kind is EventKind.RANGE_END:
            row, key, _, _ = self._range(ev)
            self._close(row, key, t)
        elif kind is EventKind.TASK_BEGIN:
            task = ev.task
            self._task_type[task.id] = task.type
            row = self._row(("task", task.type), "tasks", task.type, (2, 0))
            self._open(row, task.id, t, "task", f"{task.type} {task.id}", task.type)
        elif kind is EventKind.TASK_END:
            task = ev.task
            ttype = self._task_type.pop(task.id, task.type or f"task {task.id}")
            row = self._row(("task", ttype), "tasks", ttype, (2, 0))
            if task.id not in row.open:  # begun before the trace
                self._open(
                    row, task.id, self.origin, "task", f"{ttype} {task.id}", ttype
                )
            self._close(row, task.id, t)
        elif kind is EventKind.LABEL:
            label = ev.label
            rk, rid = label.resource
            if rk is ResourceKind.COROUTINE:
                self._coro_label.setdefault(rid, label.label)
                crow = self._rows.get(("coro", rid))
                if crow is not None and crow.label.endswith(f"C{rid}"):
                    crow.label = f"C{rid} {label.label}"
            elif rk is ResourceKind.LOOP:
                self._loop_labels.setdefault(rid, label.label)
            elif rk is ResourceKind.THREAD:
                self._thread_labels.setdefault(rid, label.label)

    def _loop_row(self, loop: int, part: str) -> _Row:
        order = {"busy": 0, "steps": 1, "stalls & GC": 2}[part]
        return self._row(
            ("loop", loop, part), f"loop {loop}", part, (0, loop * 4 + order)
        )

    def _range(self, ev: Event) -> tuple[_Row, Any, str, str]:
        r = ev.range
        sk, sid = r.scope
        name = r.name
        if name == "loop stall":
            kind = "stall"
        elif name.startswith("GC"):
            kind = "gc"
        else:
            kind = "range"
            if ev.stack and name == "executor":
                name = f"executor: {ev.stack.frames[0].func}"
        if sk is ResourceKind.LOOP:
            row = self._loop_row(sid, "stalls & GC")
        elif sk is ResourceKind.THREAD:
            row = self._row(("thread", sid), "threads", f"thread {sid}", (1, sid))
        elif ev.loop != NO_LOOP:
            row = self._loop_row(ev.loop, "stalls & GC")
        else:
            row = self._row(
                ("thread", ev.thread), "threads", f"thread {ev.thread}", (1, ev.thread)
            )
        return row, (r.name, int(sk), sid, ev.thread), name, kind

    def _coro(
        self, ev: Event, cid: int, old: Any, new: Any, reason: str, t: int
    ) -> None:
        if old is CoroState.RUNNING:
            loop = self._coro_loop.pop(cid, None)
            if loop is not None:
                self._close(self._loop_row(loop, "steps"), cid, t)
        if new is CoroState.RUNNING and ev.loop != NO_LOOP:
            self._coro_loop[cid] = ev.loop
            label = self._coro_label.get(cid, "")
            name = label.split(" ", 1)[0] if label else f"C{cid}"
            self._open(self._loop_row(ev.loop, "steps"), cid, t, "step", name)
        row = self._rows.get(("coro", cid))
        if row is None:
            if old not in (CoroState.NOT_EXIST, CoroState.UNDETERMINED):
                return  # left out, or never seen begin
            if self._coro_rows >= self.max_coroutines:
                self.coroutines_left_out += 1
                return
            self._coro_rows += 1
            label = self._coro_label.get(cid, "")
            row = self._row(
                ("coro", cid),
                "coroutines",
                f"C{cid} {label}" if label else f"C{cid}",
                (3, cid),
            )
        self._close(row, "state", t)
        if new is CoroState.RUNNING:
            self._open(row, "state", t, "running", "running")
        elif new is CoroState.RUNNABLE:
            self._open(row, "state", t, "runnable", "runnable")
        elif new is CoroState.WAITING:
            self._open(row, "state", t, "waiting", f"waiting: {reason or '?'}")
        else:
            self._coro_label.pop(cid, None)

    # -- result ------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Closes what is open at the end and returns the JSON-able timeline."""
        end = self.now
        for row in list(self._rows.values()):
            for key in list(row.open):
                self._close(row, key, end)
        if self.resolution_ns:
            # Spans closed since the last compaction are finer: merge them too,
            # so the whole timeline has one resolution.
            self._merge(self.resolution_ns)
        origin = self.origin or 0
        rows = []
        for key, row in sorted(self._rows.items(), key=lambda kv: kv[1].order):
            if not row.spans:
                continue
            group, label = row.group, row.label
            if key[0] == "loop":
                name = self._loop_labels.get(key[1])
                if name:
                    group = f"loop {key[1]}: {name}"
            elif key[0] == "thread":
                name = self._thread_labels.get(key[1])
                if name:
                    label = f"{name} ({key[1]})"
            if key[0] == "task":
                for i, lane in enumerate(_lanes(row.spans, origin)):
                    rows.append(
                        {
                            "group": "tasks",
                            "label": label if i == 0 else "",
                            "spans": lane,
                        }
                    )
                continue
            rel = row.spans[:]
            for i in range(0, len(rel), 5):
                rel[i] -= origin
                rel[i + 1] -= origin
            rows.append({"group": group, "label": label, "spans": rel})
        names = [""] * len(self._names)
        for s, i in self._names.items():
            names[i] = s
        return {
            "duration_ns": end - origin,
            "kinds": list(KINDS),
            "names": names,
            "rows": rows,
            "resolution_ns": self.resolution_ns,
            "coroutines_left_out": self.coroutines_left_out,
        }


def _lanes(spans: list[int], origin: int) -> list[list[int]]:
    """Packs overlapping spans into lanes, greedily, by start time."""
    order = sorted(range(0, len(spans), 5), key=lambda i: spans[i])
    lanes: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (end of the lane's last span, lane)
    for i in order:
        s, e, k, n, m = spans[i : i + 5]
        if free and free[0][0] <= s:
            _, lane = heapq.heappop(free)
        elif len(lanes) < MAX_LANES:
            lane = len(lanes)
            lanes.append([])
        else:
            _, lane = heapq.heappop(free)
        lanes[lane] += (s - origin, e - origin, k, n, m)
        heapq.heappush(free, (e, lane))
    return lanes
