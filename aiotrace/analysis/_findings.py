"""Findings: what is wrong in a traced program, and where, in plain words.

A finding is one fault a rule recognised in the trace (a blocking call, a
contended lock, a queue's slow consumer...), with where it is (function and
file:line), how much time it cost, and the evidence: coroutine ids, counts.
``diagnose(source)`` runs every rule over the trace in one streaming pass
(``_diagnose``) and ranks what they found by time lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..reader import NO_COROUTINE, Event, EventKind, Stack
from ._format import format_duration


@dataclass(frozen=True)
class Finding:
    """Finding is one fault found in a trace, said in plain words.

    ``summary`` says what and where (the culprit's function and file:line);
    ``detail`` gives the evidence (coroutine ids, counts), or is empty.
    ``cost_ns`` is the time the fault cost, which ranks findings; ``where``
    is the culprit's place as ``function (file:line)``, or empty when the
    trace does not tell it. ``evidence`` holds the same facts for machines.
    """

    kind: str
    summary: str
    detail: str = ""
    cost_ns: int = 0
    where: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict of the finding."""
        return {
            "kind": self.kind,
            "summary": self.summary,
            "detail": self.detail,
            "cost_ns": self.cost_ns,
            "where": self.where,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Section:
    """Section is a rule's table of what it measured (GC pauses by
    generation, executors, routes), shown after the findings."""

    title: str
    lines: tuple[str, ...]
    data: Any = None


@dataclass
class Diagnosis:
    """Diagnosis is what ``diagnose`` found: findings ranked by time lost,
    and the sections the rules measured."""

    findings: list[Finding] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0
    events: int = 0
    lost_events: int = 0
    truncated: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict (``aiotrace stats --json``'s ``findings``)."""
        return {
            "findings": [f.to_dict() for f in self.findings],
            "sections": {s.title: s.data for s in self.sections if s.data is not None},
        }


class Wait(NamedTuple):
    """Wait is one wait of a coroutine, from its block to its wakeup.

    ``how`` is what ended it: the wakeup's reason (``coroutine``, ``timer``,
    ``io``, ``thread``, ``cancel``, ``callback NAME``, ``loop``), or
    ``never`` for a wait still going on when the trace ended. ``waker`` is
    the coroutine that woke it (``how == "coroutine"``), else NO_COROUTINE.
    ``restated`` is True when the wait began before the trace (or its
    generation) did, so ``start`` is only a bound.
    """

    coro: int
    reason: str
    stack: Stack
    start: int
    end: int
    how: str
    waker: int
    restated: bool

    @property
    def duration(self) -> int:
        """The wait's length in nanoseconds."""
        return self.end - self.start


class Step(NamedTuple):
    """Step is one step of a coroutine: from its start to its yield, block
    or end (``ended`` is ``yield``, ``block`` or ``end``)."""

    coro: int
    start: int
    end: int
    thread: int
    loop: int
    ended: str


class Facts:
    """Facts is what the pass knows about the trace, for the rules: names,
    creators, the waits going on, the trace's span."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        # Of live coroutines: the one that created each, and where.
        self.creators: dict[int, int] = {}
        self.created_at: dict[int, Stack] = {}
        self.open_waits: dict[int, tuple[int, str, Stack, bool]] = {}
        self.start_ns = 0
        self.end_ns = 0

    def name(self, cid: int) -> str:
        """The coroutine's label (its function), or ``coroutine N``."""
        if cid == NO_COROUTINE:
            return "(no coroutine)"
        return self.names.get(cid) or f"coroutine {cid}"

    def who(self, cid: int) -> str:
        """``function (coroutine N)``, for text."""
        return f"{self.name(cid)} (coroutine {cid})"


class Rule:
    """Rule recognises one kind of fault as the pass feeds it the trace.

    A rule overrides the hooks it needs: ``on_event`` gets every event that
    is not a coroutine's state transition (ranges, samples, regions, tasks,
    metrics, loop transitions), ``on_wait`` every wait once it ends (and
    those still going on at the end, with ``how == "never"``), ``on_step``
    every step, ``on_end`` every coroutine's end. ``finish`` returns what
    it found. Rules keep bounded state: aggregates, not every event.
    """

    kinds: frozenset[EventKind] | None = None
    """The kinds of event ``on_event`` wants (None: every kind); the pass
    calls it for those only."""

    def on_event(self, ev: Event, facts: Facts) -> None:
        """Sees an event other than a coroutine transition."""

    def on_wait(self, w: Wait, facts: Facts) -> None:
        """Sees a wait that ended (or was still going on at the trace's end)."""

    def on_step(self, s: Step, facts: Facts) -> None:
        """Sees a step that ended."""

    def on_end(self, cid: int, t: int, reason: str, facts: Facts) -> None:
        """Sees a coroutine end (``returned``, ``cancelled``, ``raised T``)."""

    def finish(self, facts: Facts) -> tuple[list[Finding], list[Section]]:
        """Returns the findings and sections of the whole trace."""
        return [], []


# Frames of these files are not where a user's fault is: installed
# packages', asyncio's, anyio's, the standard library's and aiotrace's own.
_LIBRARY_PARTS = (
    "/site-packages/",
    "/dist-packages/",
    "/asyncio/",
    "/anyio/",
    "/aiotrace/",
    "/concurrent/futures/",
    "/threading.py",
    "/selectors.py",
    "/socket.py",
    "/ssl.py",
    "<frozen ",
)


def is_library(file: str) -> bool:
    """Whether a frame of ``file`` is library machinery, not the program's."""
    f = file.replace("\\", "/")
    return any(p in f for p in _LIBRARY_PARTS)


def user_frame(stack: Stack) -> Any:
    """The innermost frame of ``stack`` that is the program's own, or the
    innermost frame if all are library code, or None for no stack."""
    frames = stack.frames
    for fr in frames:
        if not is_library(fr.file):
            return fr
    return frames[0] if frames else None


def place(frame: Any) -> str:
    """``function (file:line)`` of a StackFrame, or ``""``."""
    if frame is None:
        return ""
    return f"{frame.func} ({frame.file}:{frame.line})"


def site(stack: Stack) -> str:
    """Where a wait or step is, as ``function (file:line)`` of its innermost
    frame of the program's own, or ``""`` when the trace has no stack."""
    # The reader makes one Stack per stack of a generation: cached by id,
    # the stack kept beside its answer so that the id stays its own.
    hit = _SITES.get(id(stack))
    if hit is not None and hit[0] is stack:
        return hit[1]
    found = place(user_frame(stack))
    if len(_SITES) >= _SITES_MAX:
        _SITES.clear()
    _SITES[id(stack)] = (stack, found)
    return found


_SITES: dict[int, tuple[Stack, str]] = {}
_SITES_MAX = 1 << 14


def waited_on(stack: Stack) -> str:
    """The library function a wait's stack waits in (``Queue.put``,
    ``Condition.wait``), or ``""``."""
    for fr in stack.frames:
        if is_library(fr.file):
            return fr.func
        break
    return ""


def coro_list(cids: Iterable[int], limit: int = 5) -> str:
    """``3, 7, 9 and 12 more``: coroutine ids for a finding's evidence."""
    ids = sorted(set(cids))
    shown = ", ".join(str(c) for c in ids[:limit])
    if len(ids) > limit:
        shown += f" and {len(ids) - limit} more"
    return shown


def format_findings(diagnosis: Diagnosis, *, top: int = 5, prefix: str = "") -> str:
    """The findings as text: a short list ranked by time lost, with a
    "more" line (sections are ``format_sections``). ``prefix`` starts the
    heading line (``aiotrace run`` gives ``"aiotrace: "``)."""
    found = diagnosis.findings
    if not found:
        return f"{prefix}Findings: none (no fault the rules know was found)\n"
    out = [f"{prefix}Findings (by time lost)"]
    for i, f in enumerate(found[:top], 1):
        cost = f" [{format_duration(f.cost_ns)}]" if f.cost_ns else ""
        out.append(f"  {i}. {f.summary}{cost}")
        if f.detail:
            out.append(f"     {f.detail}")
    if len(found) > top:
        rest = found[top:]
        kinds = sorted({f.kind for f in rest})
        out.append(
            f"  ... and {len(rest)} more ({', '.join(kinds)}): "
            "`aiotrace stats --findings N` lists N"
        )
    return "\n".join(out) + "\n"


def format_sections(diagnosis: Diagnosis) -> str:
    """The rules' sections (GC, executors, routes) as text."""
    out: list[str] = []
    for s in diagnosis.sections:
        out.append("")
        out.append(s.title)
        out += [f"  {line}" for line in s.lines]
    return "\n".join(out) + ("\n" if out else "")
