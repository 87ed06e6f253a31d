"""The routes rule: a slow route (user task type), and the downstream call
that took its time.

Each user task is a request of its type, its route: the aiohttp middleware
names it ``"GET /orders/{id}"``. The regions inside a task are its calls:
a region of a traced ``aiohttp.ClientSession`` is ``"http.client GET
host:port/path"``, a program's own ``aiotrace.region`` is whatever it
names. A call is a region with no call inside it: regions that wrap calls
(the middleware's ``http.handler``, a program's region around its client
call) and the client's phases (queue, DNS, connect) are not calls, so each
moment of a request counts for one call at most.
"""

from __future__ import annotations

import statistics
from typing import Any, Final

from ...reader import NO_COROUTINE, Event, EventKind
from .._dist import Distribution
from .._findings import Facts, Finding, Rule, Section, Step
from .._format import _table, format_duration
from ._activity import Activity

SLOW_NS: Final = 50_000_000
"""A route is slow from this p90 on; faster ones are never named."""
DOMINANT_SHARE: Final = 0.5
"""A call dominates its route when it took at least this share of its time."""
MUCH_SLOWER: Final = 4.0
"""A route is much slower than the others at this multiple of their median p90."""
MIN_REQUESTS: Final = 3
"""Fewer requests than this say nothing about a route's latency."""
MAX_ROUTES: Final = 1000
MAX_CALLS: Final = 64
"""Bounds on task types and call types per route: what the rule keeps."""
SHOWN: Final = 20
"""Routes in the section's table."""
LONG_STEP_NS: Final = 5_000_000
"""A step this long holds the loop: requests waiting beside it are not slow
by their own fault."""

_WRAPPERS: Final = frozenset({"http.handler"})
_PHASES: Final = frozenset(
    {"http.client.queue", "http.client.dns", "http.client.connect"}
)
_CLIENT: Final = "http.client "
_NOT_DOWNSTREAM: Final = frozenset({"gather", "coroutine"})
"""Waits that are the request's own work spread over coroutines, not a call."""
_TASK_BEGIN, _TASK_END = EventKind.TASK_BEGIN, EventKind.TASK_END
_REGION_BEGIN, _REGION_END, _LOG = (
    EventKind.REGION_BEGIN,
    EventKind.REGION_END,
    EventKind.LOG,
)


class _Call:
    """_Call is one kind of call (region type) within a route.

    ``total_ns`` sums, per request, the call's time capped at the request's
    own: concurrent calls of one kind do not count twice.
    """

    __slots__ = ("dist", "total_ns")

    def __init__(self) -> None:
        self.dist = Distribution()
        self.total_ns = 0


class _Route:
    """_Route is one task type: its requests' latency and their calls."""

    __slots__ = ("calls", "dist", "http", "own", "waits")

    def __init__(self) -> None:
        self.dist = Distribution()
        self.own = Distribution()  # latency less the loop held by others
        self.calls: dict[str, _Call] = {}
        # what its requests' own coroutines waited for, and where -> ns
        self.waits: dict[str, int] = {}
        self.http = False

    def call(self, type_: str) -> _Call | None:
        c = self.calls.get(type_)
        if c is None and len(self.calls) < MAX_CALLS:
            c = self.calls[type_] = _Call()
        return c

    def top(self) -> tuple[str, _Call] | None:
        if not self.calls:
            return None
        return max(self.calls.items(), key=lambda kv: kv[1].total_ns)

    def share(self, c: _Call) -> float:
        return c.total_ns / self.dist.total_ns if self.dist.total_ns else 0.0


class _Request:
    """_Request is a user task begun and not yet ended.

    ``coro`` is the coroutine of its latest event, ``held`` the time other
    coroutines' long steps held its loop while it was going on.
    """

    __slots__ = ("calls", "coro", "held", "loop", "route", "start", "waits")

    def __init__(self, route: _Route, start: int, coro: int, loop: int) -> None:
        self.route = route
        self.start = start
        self.coro = coro
        self.loop = loop
        self.held = 0
        self.calls: dict[str, int] = {}  # call type -> time in it
        self.waits: dict[str, int] = {}  # what its coroutine waited for -> ns


class _Open:
    """_Open is a region begun and not yet ended. Invariant: ``wraps`` is
    True once a call (or a region wrapping one) inside it has ended."""

    __slots__ = ("parent", "start", "task", "type", "wraps")

    def __init__(self, type_: str, task: int, start: int, parent: _Open | None) -> None:
        self.type = type_
        self.task = task
        self.start = start
        self.parent = parent
        self.wraps = False


class RouteRule(Rule):
    """RouteRule measures latency per route (user task type), finds which
    call inside each route took its time, and names a slow route with the
    downstream call that dominates it, or a route much slower than the rest.
    """

    def __init__(self, activity: Activity) -> None:
        self.routes: dict[str, _Route] = {}
        self.tasks: dict[int, _Request] = {}
        self.open: dict[object, list[_Open]] = {}  # coroutine or thread -> regions
        self._activity = activity  # each coroutine's recent waits, shared

    kinds = frozenset((_REGION_BEGIN, _REGION_END, _TASK_BEGIN, _TASK_END, _LOG))

    def on_event(self, ev: Event, facts: Facts) -> None:
        """Follows user tasks, their regions and the middleware's logs."""
        kind = ev[0]
        if kind is _REGION_BEGIN:
            self._begin(ev, facts)
        elif kind is _REGION_END:
            self._end(ev)
        elif kind is _TASK_BEGIN:
            task = ev[6]
            route = self.routes.get(task.type)
            if route is None:
                if len(self.routes) >= MAX_ROUTES:
                    return
                route = self.routes[task.type] = _Route()
            self.tasks[task.id] = _Request(route, ev[1], ev[2], ev[3])
        elif kind is _TASK_END:
            req = self.tasks.pop(ev[6].id, None)
            if req is not None:
                # Its coroutine, and the one that ends it: on 3.12+ aiohttp's
                # handler task starts eagerly, unseen, and the request
                # begins on its connection's coroutine (docs/aiohttp.md).
                self._waits(req, {req.coro, ev[2]}, ev[1])
                self._done(ev[1] - req.start, req)
        elif kind is _LOG:
            log = ev[6]
            req = self.tasks.get(log.task)
            if req is not None:
                if ev[2] != NO_COROUTINE:
                    req.coro = ev[2]
                if log.category == "http.method":
                    req.route.http = True

    def _waits(self, req: _Request, cids: set[int], end: int) -> None:
        """Adds to ``req.waits`` what ``cids`` waited for within it (their
        recent waits, as the shared ``Activity`` keeps them)."""
        for cid in cids:
            for what, spent in self._activity.during(cid, req.start, end).items():
                if what.split(" ", 1)[0] in _NOT_DOWNSTREAM:
                    continue
                if what in req.waits or len(req.waits) < MAX_CALLS:
                    req.waits[what] = req.waits.get(what, 0) + spent

    def on_step(self, s: Step, facts: Facts) -> None:
        """Counts a long step against the requests it kept waiting."""
        if s.end - s.start < LONG_STEP_NS or not self.tasks:
            return
        for req in self.tasks.values():
            if req.loop == s.loop and not _runs(req.coro, s.coro, facts):
                req.held += s.end - max(s.start, req.start)

    def on_end(self, cid: int, t: int, reason: str, facts: Facts) -> None:
        """Forgets the regions an ended coroutine left open."""
        self.open.pop(cid, None)

    def _begin(self, ev: Event, facts: Facts) -> None:
        region = ev[6]
        req = self.tasks.get(region.task)
        if req is None:
            return
        if ev[2] != NO_COROUTINE:
            req.coro = ev[2]
        where = _where(ev)
        stack = self.open.setdefault(where, [])
        parent = stack[-1] if stack else self._creator_region(ev[2], region.task, facts)
        stack.append(_Open(region.type, region.task, ev[1], parent))

    def _creator_region(self, cid: int, task: int, facts: Facts) -> _Open | None:
        """The innermost open region of ``task`` in the coroutines that
        created ``cid``: a call in a child coroutine is inside it."""
        for _ in range(8):
            cid = facts.creators.get(cid, NO_COROUTINE)
            if cid == NO_COROUTINE:
                return None
            stack = self.open.get(cid)
            if stack and stack[-1].task == task:
                return stack[-1]
        return None

    def _end(self, ev: Event) -> None:
        region = ev[6]
        where = _where(ev)
        r = _pop(self.open, where, region.type, region.task)
        if r is None:
            if region.task not in self.tasks:
                return
            # Begun in another coroutine: on 3.12 and 3.13 a request's first
            # step is recorded on its connection's coroutine (docs/aiohttp.md).
            for other in list(self.open):
                r = _pop(self.open, other, region.type, region.task)
                if r is not None:
                    break
            else:
                return
        if r.type in _PHASES:
            return
        if r.parent is not None:
            r.parent.wraps = True
        if r.wraps or r.type in _WRAPPERS:
            return
        req = self.tasks.get(r.task)
        if req is None:
            return
        if ev[2] != NO_COROUTINE:
            req.coro = ev[2]
        calls = req.calls
        if r.type in calls or len(calls) < MAX_CALLS:
            calls[r.type] = calls.get(r.type, 0) + ev[1] - r.start
        c = req.route.call(r.type)
        if c is not None:
            c.dist.add(ev[1] - r.start)

    def _done(self, ns: int, req: _Request) -> None:
        route = req.route
        route.dist.add(ns)
        route.own.add(ns - min(req.held, ns))
        for type_, spent in req.calls.items():
            c = route.call(type_)
            if c is not None:
                c.total_ns += min(spent, ns)
        waits = route.waits
        for what, spent in req.waits.items():
            if what in waits or len(waits) < MAX_CALLS:
                waits[what] = waits.get(what, 0) + min(spent, ns)

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        """Returns the slow routes, and the Routes section."""
        shown = {
            name: r
            for name, r in self.routes.items()
            if r.dist.count and (r.http or r.calls)
        }
        if not shown:
            return [], []
        findings = []
        p90s = {n: r.own.p90 for n, r in shown.items() if r.dist.count >= MIN_REQUESTS}
        for name in p90s:
            others = [v for n, v in p90s.items() if n != name]
            median = round(statistics.median(others)) if others else None
            f = _finding(name, shown[name], median)
            if f is not None:
                findings.append(f)
        return findings, [_section(shown)]


def _where(ev: Event) -> object:
    """Where regions nest: the coroutine, or outside coroutines the thread."""
    return ev[2] if ev[2] != NO_COROUTINE else ("thread", ev[4])


def _pop(
    open_: dict[object, list[_Open]], where: object, type_: str, task: int
) -> _Open | None:
    """Removes and returns the innermost open region of ``type_`` and
    ``task`` in ``where``, or None."""
    stack = open_.get(where)
    if not stack:
        return None
    for i in range(len(stack) - 1, -1, -1):
        r = stack[i]
        if r.type == type_ and r.task == task:
            del stack[i]
            if not stack:
                del open_[where]
            return r
    return None


def _runs(coro: int, step: int, facts: Facts) -> bool:
    """Whether the step's coroutine is the request's, or one it created."""
    for _ in range(8):
        if step == coro:
            return True
        step = facts.creators.get(step, NO_COROUTINE)
        if step == NO_COROUTINE:
            return False
    return False


def _call_name(type_: str) -> str:
    """``downstream GET host:port/path`` for a client call, else ``region T``."""
    if type_.startswith(_CLIENT):
        return f"downstream {type_[len(_CLIENT) :]}"
    return f'region "{type_}"'


def _finding(name: str, r: _Route, others_p90: int | None) -> Finding | None:
    d = r.dist
    if r.own.p90 < SLOW_NS:
        return None
    what, unit = ("route", "requests") if r.http else ("task type", "tasks")
    head = f"slow {what} {name}: p90 {format_duration(d.p90)} over {d.count} {unit}"
    evidence: dict[str, Any] = {"route": name, **_stats(r)}
    top = r.top()
    if top is not None and r.share(top[1]) >= DOMINANT_SHARE:
        type_, c = top
        share = r.share(c)
        return Finding(
            kind="slow-route",
            summary=(
                f"{head}; {share:.0%} of it in {_call_name(type_)} "
                f"(p90 {format_duration(c.dist.p90)})"
            ),
            detail=(
                f"{name}: p50 {format_duration(d.p50)}, "
                f"max {format_duration(d.max_ns)}; "
                f"{type_}: {c.dist.count} calls, p50 {format_duration(c.dist.p50)}, "
                f"{format_duration(c.total_ns)} of the {what}'s "
                f"{format_duration(d.total_ns)}"
            ),
            cost_ns=c.total_ns,
            evidence={
                **evidence,
                "call": type_,
                "share": round(share, 4),
                "call_p90_ns": c.dist.p90,
            },
        )
    waited = max(r.waits.items(), key=lambda kv: kv[1]) if r.waits else None
    if (
        top is None
        and waited is not None
        and d.total_ns
        and waited[1] / d.total_ns >= DOMINANT_SHARE
    ):
        # No client region: what the request's own coroutine waited for.
        what, spent = waited
        share = spent / d.total_ns
        return Finding(
            kind="slow-route",
            summary=f"{head}; {share:.0%} of it waiting on {what}",
            detail=(
                f"{name}: p50 {format_duration(d.p50)}, "
                f"max {format_duration(d.max_ns)}; trace the client session "
                "with aiotrace.contrib.aiohttp.trace_config() to name its calls"
            ),
            cost_ns=spent,
            where=what.partition(" at ")[2],
            evidence={**evidence, "waited_on": what, "share": round(share, 4)},
        )
    if others_p90 is None or r.own.p90 < MUCH_SLOWER * max(others_p90, 1_000_000):
        return None
    inside = (
        f"its top call {top[0]} took {r.share(top[1]):.0%} of it"
        if top is not None
        else "no region inside it"
    )
    return Finding(
        kind="slow-route",
        summary=(
            f"{head}, against a median p90 of {format_duration(others_p90)} "
            f"for the other {what}s"
        ),
        detail=(
            f"{name}: p50 {format_duration(d.p50)}, max {format_duration(d.max_ns)}; "
            f"{inside}"
        ),
        cost_ns=max(0, d.total_ns - d.count * others_p90),
        evidence={**evidence, "others_p90_ns": others_p90},
    )


def _stats(r: _Route) -> dict[str, Any]:
    """The route's figures, JSON-able."""
    d = r.dist
    out: dict[str, Any] = {
        "http": r.http,
        "count": d.count,
        "p50_ns": d.p50,
        "p90_ns": d.p90,
        "max_ns": d.max_ns,
        "total_ns": d.total_ns,
        "own_p90_ns": r.own.p90,
        "calls": [
            {
                "type": t,
                "count": c.dist.count,
                "share": round(r.share(c), 4),
                "p50_ns": c.dist.p50,
                "p90_ns": c.dist.p90,
                "total_ns": c.total_ns,
            }
            for t, c in sorted(r.calls.items(), key=lambda kv: -kv[1].total_ns)
        ],
    }
    return out


def _section(routes: dict[str, _Route]) -> Section:
    ranked = sorted(routes.items(), key=lambda kv: -kv[1].dist.p90)
    rows = []
    for name, r in ranked[:SHOWN]:
        d = r.dist
        top = r.top()
        rows.append(
            [
                name,
                str(d.count),
                format_duration(d.p50),
                format_duration(d.p90),
                format_duration(d.max_ns),
                top[0] if top else "-",
                f"{r.share(top[1]):.0%}" if top else "-",
            ]
        )
    lines = _table(
        ["route", "count", "p50", "p90", "max", "top call", "share"], rows, indent=""
    )
    if len(ranked) > SHOWN:
        lines.append(f"... and {len(ranked) - SHOWN} more (--json lists them)")
    return Section(
        "Routes",
        tuple(lines),
        {name: _stats(r) for name, r in ranked},
    )
