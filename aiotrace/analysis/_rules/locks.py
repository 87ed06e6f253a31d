"""Lock contention: which lock, who held it while others waited, what the
holder awaited while it held it, and how long the others waited in all."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._findings import Facts, Finding, Rule, Section, Wait, site, waited_on
from .._format import format_duration
from ._activity import Activity, listed, names, top

MIN_TOTAL_NS = 50_000_000
"""Waiting behind one lock below this, in all, is not a finding."""

CONDITION = ("Condition.wait", "Condition.wait_for")
"""A Condition's wait is a wakeup, not contention (see ``wakeups``)."""


@dataclass
class _Lock:
    waits: int = 0
    total: int = 0
    longest: int = 0
    waiters: dict[int, int] = field(default_factory=dict)  # coroutine -> ns
    holders: dict[int, int] = field(default_factory=dict)  # releaser -> ns
    held_over: dict[str, int] = field(default_factory=dict)  # what -> ns


class LockRule(Rule):
    """LockRule finds locks (and semaphores, barriers, capacity limiters)
    that coroutines waited long for, named by the line that acquires them."""

    def __init__(self, activity: Activity) -> None:
        self._locks: dict[str, _Lock] = {}
        self._activity = activity  # fed by the pass before this rule
        self._lib: dict[str, str] = {}

    def on_wait(self, w: Wait, facts: Facts) -> None:
        if w.reason != "lock":
            return
        lib = waited_on(w.stack)
        if lib in CONDITION:
            return
        where = site(w.stack) or facts.name(w.coro)
        lk = self._locks.get(where)
        if lk is None:
            lk = self._locks[where] = _Lock()
            self._lib[where] = lib or "a lock"
        d = w.duration
        lk.waits += 1
        lk.total += d
        lk.longest = max(lk.longest, d)
        lk.waiters[w.coro] = lk.waiters.get(w.coro, 0) + d
        if w.waker >= 0 and w.waker != w.coro:
            # Held from when the holder got it (its own wait here ended):
            # holders rank by how long they held it while others waited.
            held = self._activity.since(w.waker, where, w.start, w.end)
            lk.holders[w.waker] = lk.holders.get(w.waker, 0) + w.end - held
            for what, ns in self._activity.during(w.waker, held, w.end).items():
                lk.held_over[what] = lk.held_over.get(what, 0) + ns

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        found = []
        for where, lk in self._locks.items():
            if lk.total < MIN_TOTAL_NS:
                continue
            lib = self._lib[where]
            held = top(lk.held_over, 2)
            if lk.holders:
                holder = names(facts, lk.holders, 1)
                awaited = f" while it awaited {held[0][0]}" if held else ""
                summary = (
                    f"lock contention: {holder} held the lock acquired at {where} "
                    f"({lib}){awaited}; {lk.waits} waits behind it, "
                    f"{format_duration(lk.total)} in all, longest "
                    f"{format_duration(lk.longest)}"
                )
            else:
                summary = (
                    f"lock contention: {lk.waits} waits for the lock acquired at "
                    f"{where} ({lib}), {format_duration(lk.total)} in all, "
                    f"longest {format_duration(lk.longest)}"
                )
            parts = [f"waiters: {names(facts, lk.waiters)}"]
            if held:
                parts.append("the holders, holding it, awaited " + listed(held))
            found.append(
                Finding(
                    kind="lock",
                    summary=summary,
                    detail="; ".join(parts),
                    cost_ns=lk.total,
                    where=where,
                    evidence={
                        "lock": lib,
                        "acquired_at": where,
                        "waits": lk.waits,
                        "total_ns": lk.total,
                        "longest_ns": lk.longest,
                        "waiters": sorted(lk.waiters),
                        "holders": sorted(lk.holders),
                        "holders_awaited": dict(top(lk.held_over, 5)),
                    },
                )
            )
        return found, []
