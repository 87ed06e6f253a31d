"""diagnose: one streaming pass that feeds the finding rules, then ranks
what they found."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from ..reader import (
    NO_COROUTINE,
    NO_STACK,
    CoroState,
    Event,
    EventKind,
    ResourceKind,
    TraceError,
)
from ._findings import Diagnosis, Facts, Finding, Rule, Section, Step, Wait
from ._pass import ByBytes, Progress, StreamPass, read_source

_ST, _LABEL, _SYNC = EventKind.STATE_TRANSITION, EventKind.LABEL, EventKind.SYNC
_COROUTINE = ResourceKind.COROUTINE
_UNDETERMINED, _NOT_EXIST, _RUNNABLE, _RUNNING, _WAITING = (
    CoroState.UNDETERMINED,
    CoroState.NOT_EXIST,
    CoroState.RUNNABLE,
    CoroState.RUNNING,
    CoroState.WAITING,
)
_ENDED = {_RUNNABLE: "yield", _WAITING: "block", _NOT_EXIST: "end"}


def default_rules() -> list[Rule]:
    """A new instance of every rule, in the order their sections show."""
    from ._rules import all_rules

    return all_rules()


def diagnose(
    source: str | os.PathLike[str] | IO[bytes] | Iterable[Event],
    *,
    progress: Progress | None = None,
    rules: list[Rule] | None = None,
) -> Diagnosis:
    """Reads a trace once and returns what is wrong in it: findings ranked
    by time lost, and the rules' sections (GC, executors, routes).

    Args:
        source: a trace file's path, a binary file object, or an iterable
            of ``reader.Event``.
        progress: as for ``analyze``.
        rules: the rules to run (default: all of them).

    Raises:
        reader.TraceError: the trace is malformed (a truncated trace is not
            an error: the diagnosis covers what could be read and says so).
        OSError: the file cannot be read.
    """
    chosen = default_rules() if rules is None else rules
    return read_source(
        source,
        "diagnose",
        progress,
        lambda ev, by: _Pass(ev, by, progress, chosen).run(),
    )


def _cost(f: Finding) -> int:
    return -f.cost_ns


class _Pass(StreamPass[Diagnosis]):
    """_Pass turns coroutine transitions into waits and steps for the rules."""

    def __init__(
        self,
        events: Iterable[Event],
        by_bytes: ByBytes | None,
        progress: Progress | None,
        rules: list[Rule],
    ) -> None:
        self.facts = Facts()
        self.rules = rules
        # Only the hooks a rule overrides are called; on_event by kind.
        self._on_event: dict[EventKind, list[Callable[[Event, Facts], None]]] = {
            kind: [
                r.on_event
                for r in rules
                if _has(r, "on_event") and (r.kinds is None or kind in r.kinds)
            ]
            for kind in EventKind
        }
        self._on_wait = [r.on_wait for r in rules if _has(r, "on_wait")]
        self._on_step = [r.on_step for r in rules if _has(r, "on_step")]
        self._on_end = [r.on_end for r in rules if _has(r, "on_end")]
        super().__init__(events, by_bytes, progress, Diagnosis(), self.facts.name)
        self._steps: dict[int, tuple[int, int, int]] = {}  # cid -> (t0, thread, loop)

    def run(self) -> Diagnosis:
        d = self.result
        end = self._span()
        facts = self.facts
        facts.start_ns, facts.end_ns = d.start_ns, end
        for cid, (t0, reason, stack, restated) in list(facts.open_waits.items()):
            w = Wait(cid, reason, stack, t0, end, "never", NO_COROUTINE, restated)
            for f in self._on_wait:
                f(w, facts)
        findings: list[Finding] = []
        sections: list[Section] = []
        for rule in self.rules:
            found, secs = rule.finish(facts)
            findings += found
            sections += secs
        findings.sort(key=_cost)
        d.findings = findings
        d.sections = sections
        return d

    def _span(self) -> int:
        # The typed events always: rules need their stacks and contexts.
        self.events = _Typed(self.events)
        return super()._span()

    def _consume(self, events: Iterator[Event], last: int) -> tuple[int, int]:
        facts = self.facts
        names, creators = facts.names, facts.creators
        waits = facts.open_waits
        steps = self._steps
        on_event, on_wait, on_step, on_end = (
            self._on_event,
            self._on_wait,
            self._on_step,
            self._on_end,
        )
        d = self.result
        n = 0
        try:
            for ev in events:
                kind, t, coro, loop, thread, stack, det = ev
                n += 1
                if t > last:  # noqa: PLR1730
                    last = t
                if kind is _ST and det[0][0] is _COROUTINE:
                    cid = det[0][1]
                    old, new = det[3], det[4]
                    if old is _RUNNING or (old is _UNDETERMINED and cid in steps):
                        began = steps.pop(cid, None)
                        if began is not None and on_step and new is not _RUNNING:
                            s = Step(cid, began[0], t, began[1], began[2], _ENDED[new])
                            for step_hook in on_step:
                                step_hook(s, facts)
                    if new is _RUNNING:
                        steps[cid] = (t, thread, loop)
                        waits.pop(cid, None)
                    elif new is _WAITING:
                        if old is _UNDETERMINED and cid in waits:
                            continue  # restated: the wait goes on
                        waits[cid] = (
                            t,
                            det[1],
                            det[2] or NO_STACK,
                            old is _UNDETERMINED,
                        )
                    elif new is _RUNNABLE:
                        w0 = waits.pop(cid, None)
                        if old is _NOT_EXIST:
                            creators[cid] = coro
                            if stack:
                                facts.created_at[cid] = stack
                        elif w0 is not None and old is _WAITING:
                            how = det[1] or "loop"
                            waker = coro if how == "coroutine" else NO_COROUTINE
                            w = Wait(cid, w0[1], w0[2], w0[0], t, how, waker, w0[3])
                            for wait_hook in on_wait:
                                wait_hook(w, facts)
                    elif new is _NOT_EXIST:
                        waits.pop(cid, None)
                        steps.pop(cid, None)
                        for end_hook in on_end:
                            end_hook(cid, t, det[1], facts)
                        creators.pop(cid, None)
                        facts.created_at.pop(cid, None)
                    continue
                if kind is _LABEL:
                    rid = det[1]
                    if rid[0] is _COROUTINE:
                        names[rid[1]] = det[0]
                elif kind is _SYNC:
                    d.lost_events = max(d.lost_events, det[1])
                    if self.progress is not None:
                        self._report(n)
                for event_hook in on_event[kind]:
                    event_hook(ev, facts)
        except TraceError as exc:
            self.error = exc
        return n, last


def _has(rule: Rule, hook: str) -> bool:
    """Whether ``rule`` overrides ``Rule``'s no-op ``hook``."""
    return getattr(type(rule), hook) is not getattr(Rule, hook)


class _Typed:
    """_Typed hides a Reader from ``usable()``, so the pass reads Events."""

    def __init__(self, events: Iterable[Event]) -> None:
        self._events = events

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)
