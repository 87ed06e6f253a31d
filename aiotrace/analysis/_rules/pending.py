"""Pending or lost work: coroutines still waiting when the trace ended, or
cancelled at shutdown (asyncio.run cancels what is left), and the longest
single waits with how each ended."""

from __future__ import annotations

import heapq
import itertools

from .._findings import Facts, Finding, Rule, Section, Wait, site, waited_on
from .._format import format_duration
from ._activity import describe

MIN_PENDING_NS = 100_000_000
"""A coroutine waiting less than this when the trace ends is not pending
work (it may be about to be woken). One that asyncio.run cancels at
shutdown is, however short its wait."""

LONGEST = 5
"""Waits listed in the longest-waits section."""

_THIRD_PARTY = ("/site-packages/", "/dist-packages/", "/asyncio/", "/anyio/")


def _ended(w: Wait, facts: Facts, cancelled: bool) -> str:
    """How a wait ended, in words."""
    how = w.how
    if cancelled and how == "loop":
        return "cancelled at shutdown"
    if cancelled and how == "cancel":
        return "cancelled"
    if how == "never":
        return "never woken (still waiting at the end)"
    if how == "coroutine":
        return f"woken by {facts.who(w.waker)}"
    if how == "timer":
        return "by its timer" if w.reason == "sleep" else "by a timer (a timeout)"
    if how == "cancel":
        return "cancelled"
    if how == "loop":
        return "by the loop, outside any callback"
    return f"woken by {how}"


class PendingRule(Rule):
    """PendingRule finds work left pending: coroutines still waiting when
    the trace ended, and coroutines cancelled at shutdown after waiting."""

    def __init__(self) -> None:
        self._longest: list[tuple[int, int, Wait]] = []
        self._seq = itertools.count()
        # coroutine -> its last wait, while it may yet end cancelled
        self._last: dict[int, Wait] = {}
        self._pending: list[tuple[Wait, str]] = []  # (wait, "never"/"cancelled")
        self._made_by: dict[int, str] = {}  # of those pending, their creator
        self._cancelled: set[int] = set()  # of the longest waits' coroutines

    def on_wait(self, w: Wait, facts: Facts) -> None:
        heap = self._longest
        item = (w.duration, next(self._seq), w)
        if len(heap) < LONGEST:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
        if w.how == "never":
            if w.duration >= MIN_PENDING_NS:
                self._pending.append((w, "never"))
        elif w.how == "loop":
            # Woken by the loop's runner outside any callback: asyncio.run
            # cancelling what is left; pending work if it then ends cancelled.
            self._last[w.coro] = w
        else:
            self._last.pop(w.coro, None)

    def on_end(self, cid: int, t: int, reason: str, facts: Facts) -> None:
        w = self._last.pop(cid, None)
        if w is not None and reason == "cancelled":
            self._pending.append((w, "cancelled"))
            self._made_by[cid] = _created(cid, facts)
        if reason == "cancelled" and any(x[2].coro == cid for x in self._longest):
            self._cancelled.add(cid)

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        found = []
        mine = [(w, k) for w, k in self._pending if not _library(w, facts)]
        for w, k in sorted(mine, key=lambda p: -p[0].duration):
            where = site(w.stack)
            on = describe(w.reason, w.stack)
            since = format_duration(max(0, w.start - facts.start_ns))
            if k == "never":
                what = "still waiting when the trace ended"
            else:
                what = "cancelled at shutdown, never having finished"
            found.append(
                Finding(
                    kind="pending",
                    summary=(
                        f"pending work: {facts.who(w.coro)} was {what}: it waited on "
                        f"{on} for {format_duration(w.duration)}"
                    ),
                    detail=(
                        f"waiting since {since} into the trace"
                        + (" (or earlier)" if w.restated else "")
                        + self._made_by.get(w.coro, _created(w.coro, facts))
                    ),
                    cost_ns=w.duration,
                    where=where,
                    evidence={
                        "coroutine": w.coro,
                        "function": facts.name(w.coro),
                        "state": k,
                        "reason": w.reason,
                        "waits_in": waited_on(w.stack),
                        "since_ns": w.start,
                        "waited_ns": w.duration,
                    },
                )
            )
        lib = len(self._pending) - len(mine)
        longest = sorted(self._longest, key=lambda x: (-x[0], x[1]))
        lines = [
            f"{format_duration(w.duration):>9}  {facts.who(w.coro)} on "
            f"{describe(w.reason, w.stack)}, ended "
            f"{_ended(w, facts, w.coro in self._cancelled)}"
            for _, _, w in longest
        ]
        if lib:
            lines.append(
                f"({lib} library coroutine{'s' if lib > 1 else ''} were also left "
                "waiting or cancelled at shutdown)"
            )
        data = [
            {
                "coroutine": w.coro,
                "function": facts.name(w.coro),
                "reason": w.reason,
                "where": site(w.stack),
                "waited_ns": w.duration,
                "ended": w.how,
                "waker": w.waker,
            }
            for _, _, w in longest
        ]
        return found, [Section("Longest waits", tuple(lines), data)] if lines else []


def _created(cid: int, facts: Facts) -> str:
    creator = facts.creators.get(cid)
    if creator is None or creator < 0:
        return ""
    return f"; created by {facts.who(creator)}"


def _library(w: Wait, facts: Facts) -> bool:
    """Whether the waiting coroutine is a library's own (an aiohttp
    connection handler, asyncio's machinery), not the program's."""
    frames = w.stack.frames
    if not frames:
        name = facts.name(w.coro)
        return name.startswith(("BaseEventLoop.", "Runner.", "_"))
    return all(any(p in fr.file for p in _THIRD_PARTY) for fr in frames)
