"""What a coroutine did over an interval: its recent waits, for the rules
that ask what a lock's holder or a queue's consumer was busy with."""

from __future__ import annotations

from collections import deque

from ...reader import Stack
from .._findings import Facts, Rule, Wait, site, waited_on
from .._format import format_duration

RECENT = 32
"""Waits remembered per coroutine."""


class Activity(Rule):
    """Activity remembers each live coroutine's last few waits. One instance
    serves the rules that ask (locks, queues, routes); it runs before them."""

    def __init__(self) -> None:
        self._recent: dict[int, deque[tuple[int, int, str, Stack]]] = {}

    def on_wait(self, w: Wait, facts: Facts) -> None:
        """Remembers a wait that ended."""
        self.add(w)

    def on_end(self, cid: int, t: int, reason: str, facts: Facts) -> None:
        """Forgets a coroutine that ended."""
        self._recent.pop(cid, None)

    def add(self, w: Wait) -> None:
        """Remembers a wait that ended."""
        q = self._recent.get(w.coro)
        if q is None:
            q = self._recent[w.coro] = deque(maxlen=RECENT)
        q.append((w.start, w.end, w.reason, w.stack))

    def since(self, cid: int, where: str, t0: int, t1: int) -> int:
        """When ``cid`` last finished waiting at the site ``where`` between
        t0 and t1 (when it got the lock it waited for there), else t0."""
        got = t0
        for _, e, _, stack in self._recent.get(cid, ()):
            if got < e <= t1 and site(stack) == where:
                got = e
        return got

    def during(self, cid: int, t0: int, t1: int) -> dict[str, int]:
        """What ``cid`` waited for between t0 and t1: ``{what: ns}``, each
        ``what`` being ``reason`` with the library function and the
        program's line, such as ``sleep in fetch (app.py:12)``."""
        out: dict[str, int] = {}
        for s, e, reason, stack in self._recent.get(cid, ()):
            lo, hi = max(s, t0), min(e, t1)
            if hi <= lo:
                continue
            what = describe(reason, stack)
            out[what] = out.get(what, 0) + hi - lo
        return out


def describe(reason: str, stack: Stack) -> str:
    """A wait in words: ``sleep (asyncio.sleep) at fetch (app.py:12)``."""
    lib = waited_on(stack)
    where = site(stack)
    text = reason if not lib or lib == reason else f"{reason} ({lib})"
    return f"{text} at {where}" if where else text


def top(counts: dict[str, int], n: int = 1) -> list[tuple[str, int]]:
    """The ``n`` largest entries of ``counts``, largest first."""
    return sorted(counts.items(), key=lambda kv: -kv[1])[:n]


def names(facts: Facts, cids: dict[int, int], n: int = 3) -> str:
    """``worker (coroutines 3, 5), ...``: the functions of the coroutines
    in ``cids`` (coroutine -> ns), the most time first."""
    by_name: dict[str, tuple[int, list[int]]] = {}
    for cid, ns in cids.items():
        name = facts.name(cid)
        total, ids = by_name.get(name, (0, []))
        ids.append(cid)
        by_name[name] = (total + ns, ids)
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:n]
    parts = []
    for name, (_, ids) in ranked:
        ids.sort()
        shown = ", ".join(str(i) for i in ids[:4]) + (" ..." if len(ids) > 4 else "")
        parts.append(f"{name} (coroutine{'s' if len(ids) > 1 else ''} {shown})")
    return ", ".join(parts)


def listed(items: list[tuple[str, int]]) -> str:
    """``what (12 ms); other (3 ms)``: waits and their time, for evidence."""
    return "; ".join(f"{what} ({format_duration(ns)})" for what, ns in items)
