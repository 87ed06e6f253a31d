"""The report's timeline: rows of spans at several levels of detail, in one pass.

Rows: for each loop, its busy time, its coroutine steps and its stalls
(with GC); for each thread that worked off a loop, its ranges (executor
work); for each user task type, its tasks in lanes; and for the
coroutines worth seeing (chosen at the end, see ``_CRITERIA``), their
states.

Level of detail: every row keeps its spans at ``LEVELS`` resolutions,
``RES0_NS`` times a power of ``FACTOR``. At level L, spans shorter than
its resolution that follow each other within it are merged into one block
(counting them, coloured as the longest); longer spans stay as they are.
Each level is fed by the one below, so a span costs work only at the
levels where it is still visible. The page draws the coarsest level still
finer than a pixel, so zooming anywhere shows real spans down to the
finest level kept.

Memory: each level is kept as raw varints while reading; when all of
them together pass ``MEM_FACTOR`` times the page's budget, the finest
level kept anywhere goes first, from the biggest row down (``_Memory``).

The page: each level is deflated (the browser inflates it with its own
DecompressionStream), and the budget ``max_bytes`` (base64 counted) is
spent in this order (``_Fit``): every row's levels down to 512 µs
(``REQUIRED_NS``), so that zooming in shows real spans at 1 ms or better
on every row; then the search index, in up to half of what is left, at
the finest time resolution that holds every entry (1, 8, 64 or 512 µs;
only beyond that are the shortest-lived left out); then finer levels,
evenly: one level finer for every row that fits, smallest rows first,
before any row goes finer still. If even the 512 µs levels do not fit in
three quarters of the budget, the finest go first, from the biggest row
down. The page says how fine it is and what it left out.

Search: every coroutine and user task gets an entry (start, end, name,
id, row); see ``_search.SearchIndex``.
"""

from __future__ import annotations

import base64
import heapq
import weakref
import zlib
from array import array
from typing import Any

from ..reader import (
    NO_LOOP,
    CoroState,
    Event,
    EventKind,
    LoopState,
    ResourceKind,
)
from ._search import SearchIndex

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
_RUNNING, _RUNNABLE, _WAITING = _KIND["running"], _KIND["runnable"], _KIND["waiting"]
_STEP = _KIND["step"]
_ST = EventKind.STATE_TRANSITION
_COROUTINE, _LOOP = ResourceKind.COROUTINE, ResourceKind.LOOP
_CORO_RUNNING, _LOOP_RUNNING = CoroState.RUNNING, LoopState.RUNNING
RES0_NS = 1000
"""The finest resolution: 1 µs."""
FACTOR = 8
"""Each level's resolution is this many times the one below."""
LEVELS = 10
"""1 µs, 8 µs, 64 µs, 512 µs, 4 ms, 33 ms, 262 ms, 2.1 s, 17 s, 134 s."""
RES = tuple(RES0_NS * FACTOR**i for i in range(LEVELS))
MAX_NAMES = 20_000
"""The most distinct span and coroutine names the page holds."""
MAX_LANES = 12
"""Lanes per task type; more overlapping tasks share the last lane."""
DEFAULT_MAX_BYTES = 10_000_000
"""The default page budget for the timeline and its search index."""
_MEM_STEP = 1 << 18
"""A level's growth, in bytes, between two looks at the builder's memory."""
MEM_FACTOR = 8
"""The levels held while reading may take this many times the page's budget:
deflated, levels shrink 2.5-5.5 times, and the 512 µs levels of every row
must stay (at 4 times, a 5-minute aiohttp trace lost some of them)."""
REQUIRED_NS = 1_000_000
"""Every row keeps its levels at this resolution or coarser first (512 µs)."""
INDEX_RES_NS = (1000, 8000, 64_000, 512_000)
"""The search index's time resolutions, the finest that fits its share first."""
_PROMOTE = 16384
"""Spans a coroutine buffers before it gets levels of its own."""
_IDLE_REASONS = frozenset(("io", "sleep", "timer", ""))
"""Waits that are a coroutine idling, not blocked on another's work."""

_CRITERIA = (
    ("stall", "held the loop in a stall for"),
    ("wait", "waited (not on I/O or sleep) at most"),
    ("task", "ran a user task of"),
    ("lost", "runnable (ready, not run) for"),
    ("step", "longest step"),
)
"""How coroutine rows are chosen: the top of each, in turn."""
MIN_SCORE_NS = 1_000_000
"""Below this, a coroutine gets a row only among the first ``ALWAYS`` of a criterion."""
ALWAYS = 3
PER_FUNCTION = 5
"""The most rows one coroutine function gets for one criterion (but stalls)."""


def _uv(out: bytearray, v: int) -> None:
    if v < _SMALL:
        out += _VB[v]
        return
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


_SMALL = 1 << 14
_VB: list[bytes] = []
_VB += (bytes((v,)) for v in range(0x80))
_VB += (bytes(((v & 0x7F) | 0x80, v >> 7)) for v in range(0x80, _SMALL))
"""The varints of 0 to 16383, made once."""


class _Lod:
    """_Lod holds one row's spans at every level, encoded as the page embeds them.

    Per level, a span is (zigzag start delta, duration, head[, count]) in
    units of the level's resolution, varint-encoded; head is
    ``(name << 4 | kind) << 1 | merged``; a merged span (a block) carries
    ``count << 4 | fill``, fill being the share of it its spans cover, in
    16ths (``15 * covered // length``).

    Invariant: ``out[L]`` is None once level L was dropped to bound the
    builder's memory (see ``_Memory``); ``pend[L]`` maps a merge key (0 on
    exclusive rows, else the kind) to the block being merged: [start, end,
    kind, name, count, longest, covered]. Once a level outgrows ``cap``
    bytes, ``mem`` is told (and sets the next ``cap``).
    """

    __slots__ = ("__weakref__", "cap", "exclusive", "last", "mem", "out", "pend")

    def __init__(self, exclusive: bool, mem: _Memory) -> None:
        self.exclusive = exclusive
        self.mem = mem
        self.cap = _MEM_STEP
        mem.lods.add(self)
        self.out: list[bytearray | None] = [bytearray() for _ in RES]
        self.pend: list[dict[int, list[int]]] = [{} for _ in RES]
        self.last = [0] * LEVELS

    def add(
        self, s: int, e: int, k: int, n: int, c: int = 1, cov: int = -1, lv: int = 0
    ) -> None:
        """Adds a span (times relative to the trace's start) at level ``lv`` up.

        ``c`` spans covering ``cov`` ns of it (all of it if -1) stand behind it.
        """
        d = e - s
        if cov < 0:
            cov = d
        key = 0 if self.exclusive else k
        pends = self.pend
        while lv < LEVELS:
            r = RES[lv]
            pend = pends[lv]
            p = pend.get(key)
            if p is not None:
                if d < r and s - p[1] < r:
                    if e > p[1]:  # noqa: PLR1730 (the hot path: max() costs a call)
                        p[1] = e
                    p[4] += c
                    p[6] += cov
                    if p[3] != n:
                        p[3] = 0
                    if d > p[5]:
                        p[5] = d
                        p[2] = k
                    return
                del pend[key]
                self._write(lv, p)
                self.add(p[0], p[1], p[2], p[3], p[4], p[6], lv + 1)
            if d < r:
                pend[key] = [s, e, k, n, c, d, cov]
                return
            out = self.out[lv]
            if c == 1 and out is not None:
                # _write's common case, inline (the hot path).
                qs = s // r
                dq = qs - self.last[lv]
                self.last[lv] = qs
                z = dq << 1 if dq >= 0 else (-dq << 1) - 1
                du = e // r - qs
                head = (n << 5) | (k << 1)
                if z < _SMALL and du < _SMALL and head < _SMALL:
                    out += _VB[z] + _VB[du] + _VB[head]
                else:
                    _uv(out, z)
                    _uv(out, du)
                    _uv(out, head)
                if len(out) > self.cap:
                    self.mem.grew(self)
            else:
                self._write(lv, (s, e, k, n, c, d, cov))
            lv += 1

    def _write(self, lv: int, p: Any) -> None:
        out = self.out[lv]
        if out is None:
            return
        s, e, k, n, c, _, cov = p
        r = RES[lv]
        qs = s // r
        dq = qs - self.last[lv]
        self.last[lv] = qs
        z = dq << 1 if dq >= 0 else (-dq << 1) - 1
        du = e // r - qs
        if c == 1:
            head = (n << 5) | (k << 1)
            if z < _SMALL and du < _SMALL and head < _SMALL:
                out += _VB[z] + _VB[du] + _VB[head]
            else:
                _uv(out, z)
                _uv(out, du)
                _uv(out, head)
            if len(out) > self.cap:
                self.mem.grew(self)
            return
        _uv(out, z)
        _uv(out, du)
        if c > 1:
            # A block: how many spans, and how much of it they cover, in 16ths.
            _uv(out, (n << 5) | (k << 1) | 1)
            _uv(out, c << 4 | (15 * cov // (e - s) if e > s else 15))
        else:
            _uv(out, (n << 5) | (k << 1))
        if len(out) > self.cap:
            self.mem.grew(self)

    def flush(self) -> None:
        """Writes every block still being merged, finest level first."""
        for lv in range(LEVELS):
            pend = self.pend[lv]
            while pend:
                _, p = pend.popitem()
                self._write(lv, p)
                if lv + 1 < LEVELS:
                    self.add(p[0], p[1], p[2], p[3], p[4], p[6], lv + 1)


class _Memory:
    """_Memory bounds the bytes the builder's levels hold while reading.

    Every level of every row and coroutine is kept (raw varints) until their
    total passes ``limit``; then the finest level kept anywhere goes first,
    from the biggest down, until a quarter of the limit is free. The page
    embeds levels compressed, a few times smaller, so the limit is a few
    times the page's budget.
    """

    __slots__ = ("dropped", "limit", "lods")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lods: weakref.WeakSet[_Lod] = weakref.WeakSet()
        self.dropped = 0

    def grew(self, lod: _Lod) -> None:
        """Called when one of ``lod``'s levels outgrew its ``cap``."""
        lod.cap = max(len(o) for o in lod.out if o is not None) + _MEM_STEP
        lods = list(self.lods)
        total = sum(len(o) for x in lods for o in x.out if o is not None)
        if total <= self.limit:
            return
        heap = []
        for i, x in enumerate(lods):
            lv = _finest(x.out)
            if lv < LEVELS - 1:
                heap.append((lv, -len(x.out[lv] or b""), i))
        heapq.heapify(heap)
        while total > self.limit * 3 // 4 and heap:
            lv, neg, i = heapq.heappop(heap)
            x = lods[i]
            x.out[lv] = None
            total += neg
            self.dropped += 1
            lv = _finest(x.out)
            if lv < LEVELS - 1:
                heapq.heappush(heap, (lv, -len(x.out[lv] or b""), i))
        for x in lods:
            x.cap = max((len(o) for o in x.out if o is not None), default=0) + _MEM_STEP


def _finest(out: list[bytearray | None]) -> int:
    return next((lv for lv, o in enumerate(out) if o is not None), LEVELS - 1)


class _Row:
    """_Row is one timeline row: its label, its open spans and its levels."""

    __slots__ = ("group", "info", "label", "lod", "open", "order")

    def __init__(
        self, group: str, label: str, order: tuple[int, int], lod: _Lod
    ) -> None:
        self.group = group
        self.label = label
        self.order = order
        self.info = ""
        self.lod = lod
        self.open: dict[Any, tuple[int, int, int]] = {}


class _Coro:
    """_Coro is what the timeline knows of one coroutine while it lives.

    Invariant: its closed state spans are in ``buf`` as (start, end,
    name << 4 | kind) until there are ``_PROMOTE`` of them; then in
    ``lod``, and ``buf`` is None.
    """

    __slots__ = (
        "begin",
        "buf",
        "code",
        "id",
        "in_stall",
        "lod",
        "lost",
        "since",
        "slot",
        "stall",
        "step",
        "task",
        "wait",
        "wait_reason",
    )

    def __init__(self, cid: int, t: int) -> None:
        self.id = cid
        self.begin = t
        self.since = t
        self.code = -1  # the open state's (name << 4 | kind); -1: none
        self.buf: array[int] | None = array("q")
        self.lod: _Lod | None = None
        self.stall = 0  # ns of steps during which a loop stall began
        self.in_stall = False
        self.wait = 0  # the longest wait not on I/O or sleep
        self.wait_reason = ""
        self.task = 0  # the longest user task begun in it
        self.lost = 0  # ns runnable
        self.step = 0  # the longest step
        self.slot = 0  # its entry in the search index

    def score(self, criterion: str) -> int:
        """The coroutine's figure for one of ``_CRITERIA``."""
        return int(getattr(self, criterion))


class TimelineBuilder:
    """TimelineBuilder collects the report's timeline from events in order.

    Args:
        max_bytes: the page budget for the timeline and its search index.
        max_coroutines: the most coroutines given a row of their own.
    """

    def __init__(
        self, *, max_bytes: int = DEFAULT_MAX_BYTES, max_coroutines: int = 200
    ) -> None:
        self.max_bytes = max_bytes
        self.max_coroutines = max_coroutines
        self.mem = _Memory(max(max_bytes * MEM_FACTOR, 1 << 16))
        self.origin: int | None = None
        self.now = 0
        self._rows: dict[Any, _Row] = {}
        self._names: dict[str, int] = {"": 0}
        self._coro_label: dict[int, str] = {}
        self._coros: dict[int, _Coro] = {}
        self._loop_coro: dict[int, int] = {}  # loop -> coroutine running on it
        self._coro_loop: dict[int, int] = {}  # coroutine running -> its loop
        # task id -> (type, lane, begin, the coroutine that began it, index slot)
        self._task_open: dict[int, tuple[str, int, int, int, int]] = {}
        self._lanes: dict[str, list[int]] = {}  # task type -> open tasks per lane
        self._stalled: set[int] = set()  # loops in a stall
        self._loops: dict[int, tuple[_Row, _Row, _Row]] = {}
        self._codes: dict[tuple[int, str], int] = {}  # (kind, reason) -> code
        self._step_names: dict[int, int] = {}  # coroutine -> name of its steps
        self._loop_labels: dict[int, str] = {}
        self._thread_labels: dict[int, str] = {}
        # Candidates for coroutine rows: a min-heap of (score, id) per criterion,
        # and the ended coroutines some heap still holds, with how many do.
        self._heaps: dict[str, list[tuple[int, int]]] = {c: [] for c, _ in _CRITERIA}
        self._kept: dict[int, tuple[_Coro, int, int]] = {}  # id -> coro, end, refs
        self._kept_refs: dict[int, int] = {}
        # The search index: one entry per coroutine and user task.
        self._ix = SearchIndex()
        self._lane_keys: dict[Any, int] = {}
        self.coroutines = 0

    # -- rows and spans ----------------------------------------------------

    def _name(self, s: str) -> int:
        """The index of ``s`` in the name table; 0 (no name) once it is full."""
        i = self._names.get(s)
        if i is None:
            if len(self._names) >= MAX_NAMES:
                return 0
            i = self._names[s] = len(self._names)
        return i

    def _row(
        self,
        key: Any,
        group: str,
        label: str,
        order: tuple[int, int],
        exclusive: bool = False,
    ) -> _Row:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row(group, label, order, _Lod(exclusive, self.mem))
        return row

    def _open(self, row: _Row, key: Any, t: int, kind: str, name: str) -> None:
        row.open[key] = (t, _KIND[kind], self._name(name))

    def _close(self, row: _Row, key: Any, t: int) -> None:
        span = row.open.pop(key, None)
        if span is None:
            return
        start, kind, name = span
        o = self.origin or 0
        row.lod.add(start - o, t - o, kind, name)

    # -- events ------------------------------------------------------------

    def __call__(self, ev: Event) -> None:
        """Takes one event, in the reader's order."""
        # An Event is a tuple (kind, time, coroutine, loop, thread, stack,
        # details): unpacking it is the fast way through millions of them.
        kind, t, _, loop, _, _, d = ev
        if self.origin is None:
            self.origin = t
        if t > self.now:  # noqa: PLR1730 (the hot path)
            self.now = t
        t = self.now
        if kind is _ST:
            rk, rid = d.resource
            if rk is _COROUTINE:
                self._coro(loop, rid, d.old, d.new, d.reason, t)
            elif rk is _LOOP:
                row = self._loop_rows(rid)[0]
                if d.new is _LOOP_RUNNING:
                    if "run" not in row.open:
                        self._open(row, "run", t, "busy", "running")
                else:
                    self._close(row, "run", t)
        elif kind is EventKind.RANGE_BEGIN or kind is EventKind.RANGE_ACTIVE:
            row, key, name, k = self._range(ev)
            if key not in row.open:
                self._open(row, key, t, k, name)
                if k == "stall":
                    self._stall_began(ev)
        elif kind is EventKind.RANGE_END:
            row, key, _, k = self._range(ev)
            self._close(row, key, t)
            if k == "stall":
                self._stalled.discard(self._stall_loop(ev))
        elif kind is EventKind.TASK_BEGIN:
            task = ev.task
            self._task_begin(task.id, task.type, t, ev.coroutine)
        elif kind is EventKind.TASK_END:
            task = ev.task
            if task.id not in self._task_open:  # begun before the trace
                self._task_begin(
                    task.id, task.type or f"task {task.id}", self.origin, -1
                )
            self._task_end(task.id, t)
        elif kind is EventKind.LABEL:
            label = ev.label
            rk, rid = label.resource
            if rk is ResourceKind.COROUTINE:
                self._coro_label.setdefault(rid, label.label)
            elif rk is ResourceKind.LOOP:
                self._loop_labels.setdefault(rid, label.label)
            elif rk is ResourceKind.THREAD:
                self._thread_labels.setdefault(rid, label.label)

    def _loop_rows(self, loop: int) -> tuple[_Row, _Row, _Row]:
        """A loop's rows: busy, steps, and stalls & GC."""
        rows = self._loops.get(loop)
        if rows is None:
            rows = self._loops[loop] = tuple(  # type: ignore[assignment]
                self._row(
                    ("loop", loop, part),
                    f"loop {loop}",
                    part,
                    (0, loop * 4 + i),
                    exclusive=part != "stalls & GC",
                )
                for i, part in enumerate(("busy", "steps", "stalls & GC"))
            )
        return rows  # type: ignore[return-value]

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
            row = self._loop_rows(sid)[2]
        elif sk is ResourceKind.THREAD:
            row = self._row(("thread", sid), "threads", f"thread {sid}", (1, sid))
        elif ev.loop != NO_LOOP:
            row = self._loop_rows(ev.loop)[2]
        else:
            row = self._row(
                ("thread", ev.thread), "threads", f"thread {ev.thread}", (1, ev.thread)
            )
        return row, (r.name, int(sk), sid, ev.thread), name, kind

    def _stall_loop(self, ev: Event) -> int:
        sk, sid = ev.range.scope
        return sid if sk is ResourceKind.LOOP else ev.loop

    def _stall_began(self, ev: Event) -> None:
        # The stall's range begins when the step that stalls began: the
        # coroutine running then, or starting while it is open, held it.
        loop = self._stall_loop(ev)
        self._stalled.add(loop)
        cid = self._loop_coro.get(loop)
        c = self._coros.get(cid) if cid is not None else None
        if c is not None:
            c.in_stall = True

    # -- user tasks ----------------------------------------------------------

    def _task_begin(self, tid: int, ttype: str, t: int, coro: int) -> None:
        lanes = self._lanes.setdefault(ttype, [])
        if 0 in lanes:
            lane = lanes.index(0)
        elif len(lanes) < MAX_LANES:
            lane = len(lanes)
            lanes.append(0)
        else:
            lane = MAX_LANES - 1
        lanes[lane] += 1
        slot = self._ix.begin(1, tid, t - (self.origin or 0))
        self._task_open[tid] = (ttype, lane, t, coro, slot)
        row = self._row(
            ("task", ttype, lane),
            "tasks",
            ttype if lane == 0 else "",
            (2, 0),
            exclusive=lane < MAX_LANES - 1,
        )
        self._open(row, tid, t, "task", ttype)

    def _task_end(self, tid: int, t: int) -> None:
        ttype, lane, begin, coro, slot = self._task_open.pop(tid)
        self._lanes[ttype][lane] -= 1
        key = ("task", ttype, lane)
        self._close(self._rows[key], tid, t)
        c = self._coros.get(coro)
        if c is not None and t - begin > c.task:
            c.task = t - begin
        lk = self._lane_keys.get(key)
        if lk is None:
            lk = self._lane_keys[key] = len(self._lane_keys)
        self._ix.end(1, slot, self._name(ttype), t - (self.origin or 0), lk)

    # -- coroutines ----------------------------------------------------------

    def _coro(
        self, loop: int, cid: int, old: Any, new: Any, reason: str, t: int
    ) -> None:
        c = self._coros.get(cid)
        if old is _CORO_RUNNING:
            on = self._coro_loop.pop(cid, None)
            if on is not None:
                self._close(self._loop_rows(on)[1], cid, t)
                if self._loop_coro.get(on) == cid:
                    del self._loop_coro[on]
        if new is _CORO_RUNNING and loop != NO_LOOP:
            self._coro_loop[cid] = loop
            self._loop_coro[loop] = cid
            name = self._step_names.get(cid)
            if name is None:
                label = self._coro_label.get(cid, "")
                name = self._name(label.split(" ", 1)[0] if label else f"C{cid}")
                if label:
                    self._step_names[cid] = name
            self._loop_rows(loop)[1].open[cid] = (t, _STEP, name)
        if c is None:
            if new is CoroState.NOT_EXIST or new is CoroState.UNDETERMINED:
                return
            c = self._coros[cid] = _Coro(cid, t)
            c.slot = self._ix.begin(0, cid, t - (self.origin or 0))
            self.coroutines += 1
        else:
            self._end_state(c, t)
        c.since = t
        if new is _CORO_RUNNING:
            if loop in self._stalled:
                c.in_stall = True
            c.code = self._code(_RUNNING, "")
        elif new is CoroState.RUNNABLE:
            c.code = self._code(_RUNNABLE, "")
        elif new is CoroState.WAITING:
            c.code = self._code(_WAITING, reason)
            c.wait_reason = reason
        else:
            c.code = -1
            del self._coros[cid]
            self._step_names.pop(cid, None)
            self._coro_ended(c, t)

    def _code(self, kind: int, reason: str) -> int:
        """A coroutine state's ``name << 4 | kind``."""
        code = self._codes.get((kind, reason))
        if code is None:
            name = KINDS[kind] + (f": {reason or '?'}" if kind == _WAITING else "")
            code = self._codes[(kind, reason)] = self._name(name) << 4 | kind
        return code

    def _end_state(self, c: _Coro, t: int) -> None:
        code = c.code
        if code < 0:
            return
        d = t - c.since
        k = code & 15
        if k == _RUNNING:
            c.step = max(c.step, d)
            if c.in_stall:
                c.stall += d
                c.in_stall = False
        elif k == _RUNNABLE:
            c.lost += d
        elif d > c.wait and c.wait_reason not in _IDLE_REASONS:
            c.wait = d
        o = self.origin or 0
        buf = c.buf
        if buf is not None:
            buf.extend((c.since - o, t - o, code))
            if len(buf) >= 3 * _PROMOTE:
                self._promote(c)
        else:
            assert c.lod is not None
            c.lod.add(c.since - o, t - o, k, code >> 4)

    def _promote(self, c: _Coro) -> None:
        # Up to max_coroutines rows share the budget: a coroutine's level
        # gets a sixteenth of what a loop's may take.
        lod = c.lod = _Lod(True, self.mem)
        buf = c.buf
        assert buf is not None
        c.buf = None
        for i in range(0, len(buf), 3):
            code = buf[i + 2]
            lod.add(buf[i], buf[i + 1], code & 15, code >> 4)

    def _coro_ended(self, c: _Coro, t: int) -> None:
        label = self._coro_label.pop(c.id, "")
        self._ix.end(0, c.slot, self._name(label), t - (self.origin or 0))
        refs = 0
        for crit, heap in self._heaps.items():
            score = c.score(crit)
            if score <= 0:
                continue
            if len(heap) < self.max_coroutines:
                heapq.heappush(heap, (score, c.id))
            elif score > heap[0][0]:
                _, out = heapq.heapreplace(heap, (score, c.id))
                self._unref(out)
            else:
                continue
            refs += 1
        if refs:
            self._kept[c.id] = (c, t, refs)
            if label:
                self._coro_label[c.id] = label

    def _unref(self, cid: int) -> None:
        kept = self._kept.get(cid)
        if kept is None:  # a coroutine id used twice (ids are unique in aiotrace's)
            return
        c, t, refs = kept
        if refs > 1:
            self._kept[cid] = (c, t, refs - 1)
        else:
            del self._kept[cid]
            self._coro_label.pop(cid, None)

    # -- result ------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Closes what is open at the end and returns the JSON-able timeline."""
        end = self.now
        origin = self.origin or 0
        for row in list(self._rows.values()):
            for key in list(row.open):
                self._close(row, key, end)
        for tid in list(self._task_open):
            self._task_end(tid, end)
        for c in list(self._coros.values()):
            self._end_state(c, end)
            c.code = -1
            c.since = end
            del self._coros[c.id]
            self._coro_ended(c, end)
        # Choose coroutine rows: the top of each criterion in turn.
        chosen: dict[int, list[str]] = {}
        ranked = {
            crit: sorted(heap, reverse=True) for crit, heap in self._heaps.items()
        }
        per_function: dict[tuple[str, str], int] = {}
        depth = 0
        while len(chosen) < self.max_coroutines and any(
            depth < len(r) for r in ranked.values()
        ):
            for crit, why in _CRITERIA:
                r = ranked[crit]
                if depth < len(r) and len(chosen) < self.max_coroutines:
                    score, cid = r[depth]
                    if cid not in self._kept:
                        continue
                    if crit != "stall":
                        if depth >= ALWAYS and score < MIN_SCORE_NS:
                            continue
                        func = self._coro_label.get(cid, "").split(" ", 1)[0]
                        n = per_function.get((crit, func), 0)
                        if n >= PER_FUNCTION:
                            continue
                        per_function[(crit, func)] = n + 1
                    if cid not in chosen:
                        chosen[cid] = []
                    chosen[cid].append(f"{why} {_fmt(score)}")
            depth += 1
        for rank, (cid, whys) in enumerate(chosen.items()):
            c, _, _ = self._kept[cid]
            if c.lod is None:
                self._promote(c)
            label = self._coro_label.get(cid, "")
            row = _Row(
                "coroutines",
                f"C{cid} {label}" if label else f"C{cid}",
                (3, rank),
                c.lod,  # type: ignore[arg-type]
            )
            row.info = "; ".join(whys)
            self._rows[("coro", cid)] = row
        coro_rows = dict.fromkeys(chosen)

        # Levels coarser than a tenth of the trace show nothing new.
        duration = end - origin
        n_levels = 1
        while n_levels < LEVELS and RES[n_levels] * 10 <= max(duration, 1):
            n_levels += 1
        n_levels = min(n_levels + 1, LEVELS)
        rows_out: list[tuple[Any, _Row]] = []
        for key, row in sorted(self._rows.items(), key=lambda kv: kv[1].order):
            row.lod.flush()
            # A row with spans has them at its coarsest level, unless memory
            # ran out even there (then it has nothing to draw).
            if row.lod.out[n_levels - 1]:
                rows_out.append((key, row))
        row_of = {key: i for i, (key, _) in enumerate(rows_out)}
        fit = _Fit([row.lod.out for _, row in rows_out], n_levels)
        fit.required(self.max_bytes * 3 // 4)
        index = self._fit_index(
            max((self.max_bytes - fit.total) // 2, 0), row_of, coro_rows
        )
        fit.finer(self.max_bytes - fit.total - index["bytes"])

        names = [""] * len(self._names)
        for s, i in self._names.items():
            names[i] = s
        rows = []
        worst = worst_loops = 0
        for i, (key, row) in enumerate(rows_out):
            group, label = row.group, row.label
            if key[0] == "loop":
                name = self._loop_labels.get(key[1])
                if name:
                    group = f"loop {key[1]}: {name}"
            elif key[0] == "thread":
                name = self._thread_labels.get(key[1])
                if name:
                    label = f"{name} ({key[1]})"
            data: list[str | None] = [
                fit.b64(i, lv) if lv >= fit.keep[i] else None for lv in range(n_levels)
            ]
            worst = max(worst, RES[fit.keep[i]])
            if key[0] != "coro":
                worst_loops = max(worst_loops, RES[fit.keep[i]])
            rows.append(
                {"group": group, "label": label, "info": row.info, "levels": data}
            )
        index_entries = index["entries"]
        return {
            "duration_ns": duration,
            "kinds": list(KINDS),
            "names": names,
            "levels_ns": list(RES[:n_levels]),
            "required_ns": RES[fit.req],
            "encoding": "deflate",
            "rows": rows,
            "resolution_ns": worst,
            "loops_resolution_ns": worst_loops,
            "coroutines": self.coroutines,
            "coroutines_left_out": self.coroutines - len(chosen),
            "index": index["tables"],
            "index_resolution_ns": index["resolution_ns"],
            "index_entries": index_entries,
            "index_left_out": len(self._ix) - index_entries,
            "index_min_life_ns": index["min_life_ns"],
            "timeline_bytes": fit.total,
            "index_bytes": index["bytes"],
            "bytes": fit.total + index["bytes"],
            "max_bytes": self.max_bytes,
            "memory_drops": self.mem.dropped,
        }

    def _fit_index(
        self, share: int, row_of: dict[Any, int], coro_rows: dict[int, None]
    ) -> dict[str, Any]:
        """The search index at the finest resolution that fits ``share`` bytes.

        If even the coarsest does not fit, the shortest-lived entries are
        left out (all entries living less than ``min_life_ns``).
        """
        crow = {}
        for cid in coro_rows:
            c = self._kept.get(cid)
            if c is not None and ("coro", cid) in row_of:
                crow[c[0].slot] = row_of[("coro", cid)]
        lanes = [-1] * len(self._lane_keys)
        for key, lk in self._lane_keys.items():
            lanes[lk] = row_of.get(key, -1)
        n = len(self._ix)
        min_life = 0
        for res in INDEX_RES_NS:
            tables, size, kept = self._ix.encode(res, 0, crow, lanes)
            if size <= share:
                break
        if size > share and n:
            # Leave out the shortest-lived, guessing how many fit from this
            # encoding's bytes per entry; then check.
            lives = self._ix.lifetimes()
            per_entry = size / n
            while size > share and kept:
                room = min(int(share / per_entry), kept - 1)
                # Progress even through ties: each round leaves out more.
                min_life = max(
                    lives[n - room] if room > 0 else lives[-1] + 1, min_life + 1
                )
                tables, size, kept = self._ix.encode(res, min_life, crow, lanes)
                per_entry = size / max(kept, 1) * 1.05
        return {
            "tables": tables,
            "bytes": size,
            "entries": kept,
            "resolution_ns": res,
            "min_life_ns": min_life,
        }


class _Fit:
    """_Fit chooses the finest level each row embeds, within a budget.

    Rows keep every level from ``keep[i]`` to the coarsest, deflated.
    ``required`` gives every row its levels down to ``REQUIRED_NS`` (512 µs)
    and takes detail back, finest first and from the biggest row down,
    only if they do not fit; ``finer`` then spends what is left on finer
    levels, evenly: one level finer for every row that fits, smallest rows
    first, before any row goes finer still.
    """

    def __init__(self, outs: list[list[bytearray | None]], n_levels: int) -> None:
        self.outs = outs
        self.n = n_levels
        self.req = max(lv for lv in range(n_levels) if RES[lv] <= REQUIRED_NS)
        self.keep = [max(_finest(out), self.req) for out in outs]
        self.total = 0
        self._z: dict[tuple[int, int], str] = {}
        for i in range(len(outs)):
            self.total += sum(self.size(i, lv) for lv in range(self.keep[i], n_levels))

    def b64(self, i: int, lv: int) -> str | None:
        """Row ``i``'s level ``lv`` as the page embeds it (deflated, base64)."""
        out = self.outs[i][lv]
        if out is None:
            return None
        z = self._z.get((i, lv))
        if z is None:
            z = base64.b64encode(zlib.compress(out, 6)).decode("ascii")
            self._z[(i, lv)] = z
        return z

    def size(self, i: int, lv: int) -> int:
        """The bytes of ``b64(i, lv)``."""
        z = self.b64(i, lv)
        return len(z) if z is not None else 0

    def required(self, budget: int) -> None:
        """Takes the finest levels back until the rows fit ``budget``."""
        heap = [
            (self.keep[i], -self.size(i, self.keep[i]), i)
            for i in range(len(self.outs))
            if self.keep[i] < self.n - 1
        ]
        heapq.heapify(heap)
        while self.total > budget and heap:
            lv, neg, i = heapq.heappop(heap)
            self.total += neg
            lv += 1
            while lv < self.n - 1 and self.outs[i][lv] is None:
                lv += 1
            self.keep[i] = lv
            if lv < self.n - 1:
                heapq.heappush(heap, (lv, -self.size(i, lv), i))

    def finer(self, room: int) -> None:
        """Adds finer levels, evenly, while they fit ``room`` bytes."""
        for lv in range(self.req - 1, -1, -1):
            rows = sorted(
                (len(out[lv] or b""), i)
                for i, out in enumerate(self.outs)
                if self.keep[i] == lv + 1 and out[lv] is not None
            )
            added = False
            for raw, i in rows:
                if raw > room * 40:  # deflate never does that well here
                    break
                z = self.size(i, lv)
                if z <= room:
                    room -= z
                    self.total += z
                    self.keep[i] = lv
                    added = True
            if not added:
                break


def _fmt(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e3:.0f} µs"
