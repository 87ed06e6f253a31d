"""Lost wakeups: a wait on an Event or a Condition that ran into its
timeout while other waiters on the same object were woken by ``set()`` or
``notify()`` (``notify()`` wakes one waiter; ``notify_all()`` every one)."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field

from ...reader import Stack
from .._findings import Facts, Finding, Rule, Section, Wait, site, waited_on
from .._format import format_duration
from ._activity import names

WAITS = (
    "Condition.wait",
    "Condition.wait_for",
    "Event.wait",
    "EventAdapter.wait",
)
"""The library functions whose waits a set()/notify() ends."""

TIMED_OUT = ("cancel", "timer")
"""How a wait that ran into its timeout ends (wait_for cancels it)."""

KEPT = 4096
"""Wakeups remembered per object."""


@dataclass
class _Object:
    lib: str
    woken: deque[int] = field(default_factory=lambda: deque(maxlen=KEPT))
    wakers: dict[int, int] = field(default_factory=dict)
    missed: int = 0
    lost: int = 0  # from the first wakeup it missed to its timeout, in all
    waiters: dict[int, int] = field(default_factory=dict)
    # Where the wakers' steps that woke waiters began (their last wait).
    from_sites: dict[str, int] = field(default_factory=dict)


class LostWakeupRule(Rule):
    """LostWakeupRule finds waits on Events and Conditions that timed out
    although the object woke other waiters while they waited. An Event
    waited on with a periodic timeout, and set now and then, is innocent:
    its set() wakes every waiter."""

    def __init__(self) -> None:
        self._objects: dict[str, _Object] = {}
        # coroutine -> where its current step began: the site of its last wait
        self._resumed: dict[int, str] = {}

    def on_end(self, cid: int, t: int, reason: str, facts: Facts) -> None:
        self._resumed.pop(cid, None)

    def _key(self, w: Wait, facts: Facts) -> tuple[str, str] | None:
        """(the object's wait site, the library function), or None when the
        wait is not on an Event or Condition."""
        lib = waited_on(w.stack)
        if lib not in WAITS:
            return None
        where = _user_site(w.stack)
        if not where:
            # wait_for on 3.11 runs the wait in a task of its own: the
            # program's line is where its creator made that task.
            made = facts.created_at.get(w.coro)
            where = site(made) if made is not None else ""
        return (where or lib), lib

    def on_wait(self, w: Wait, facts: Facts) -> None:
        key = self._key(w, facts)
        if w.how != "never":
            # Set after the key: a waker's step began at its own last wait.
            where_now = site(w.stack)
            if where_now:
                self._resumed[w.coro] = where_now
        if key is None:
            return
        where, lib = key
        obj = self._objects.get(where)
        if obj is None:
            obj = self._objects[where] = _Object(lib)
        if w.how in TIMED_OUT:
            woken = obj.woken
            # A wakeup of another waiter while this one waited: it missed it.
            i = bisect_right(woken, w.start)
            if i < len(woken) and woken[i] < w.end:
                obj.missed += 1
                obj.lost += w.end - woken[i]
                owner = (
                    facts.creators.get(w.coro, w.coro)
                    if not _user_site(w.stack)
                    else w.coro
                )
                obj.waiters[owner] = obj.waiters.get(owner, 0) + w.end - woken[i]
        elif w.how not in ("never", "loop") and (
            w.waker < 0 or w.waker != facts.creators.get(w.coro)
        ):
            # (Its creator waking it is wait_for's cancelling on 3.11.)
            obj.woken.append(w.end)
            if w.waker >= 0:
                obj.wakers[w.waker] = obj.wakers.get(w.waker, 0) + 1
                began = self._resumed.get(w.waker)
                if began:
                    obj.from_sites[began] = obj.from_sites.get(began, 0) + 1

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        found = []
        for where, obj in self._objects.items():
            if not obj.missed:
                continue
            what = "notify()" if obj.lib.startswith("Condition") else "set()"
            fix = (
                "notify() wakes one waiter: use notify_all(), or notify(n) "
                "for n waiters"
                if what == "notify()"
                else "the event was set while it waited but did not wake it "
                "(cleared again, or a different Event object)"
            )
            wakers = names(facts, obj.wakers, 1) if obj.wakers else "callbacks"
            if obj.from_sites:
                began = max(obj.from_sites.items(), key=lambda kv: kv[1])[0]
                wakers += f", in its step from {began}"
            found.append(
                Finding(
                    kind="lost-wakeup",
                    summary=(
                        f"lost wakeup: {what} by {wakers} woke some waiters at "
                        f"{where} ({obj.lib}) but {obj.missed} other "
                        f"wait{'s' if obj.missed > 1 else ''} ran into the timeout, "
                        f"{format_duration(obj.lost)} lost"
                    ),
                    detail=f"waiters that timed out: {names(facts, obj.waiters)}; "
                    f"{fix}",
                    cost_ns=obj.lost,
                    where=where,
                    evidence={
                        "waits_in": obj.lib,
                        "at": where,
                        "timed_out": obj.missed,
                        "lost_ns": obj.lost,
                        "waiters": sorted(obj.waiters),
                        "wakers": sorted(obj.wakers),
                    },
                )
            )
        return found, []


def _user_site(stack: Stack) -> str:
    """The program's frame of a wait's site, or "" if it has none."""
    frames = stack.frames
    if len(frames) < 2:
        return ""
    return site(stack)
