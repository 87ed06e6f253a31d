"""Running real asyncio programs under the execution tracer, and reading them back.

``trace_program`` runs ``asyncio.run(main())`` inside ``aiotrace.tracing``
(optionally with eager tasks), reads the trace back, checks it with the
Validator and with the documented reason vocabulary, and hands back a
``Trace``: the events plus the questions the runtime tests keep asking
(which coroutine is labelled what, what did it wait for, who woke it).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

import aiotrace
from aiotrace import reader
from aiotrace.reader import (
    NO_COROUTINE,
    CoroState,
    Event,
    EventKind,
    LoopState,
    ResourceKind,
)

T = TypeVar("T")

EAGER_SKIP = pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="asyncio.eager_task_factory is new in Python 3.12",
)
"""Marks a test (or a parameter) that needs eager tasks."""

FLAVOURS = ["plain", pytest.param("eager", marks=EAGER_SKIP)]
"""The loop flavours: stock asyncio, and asyncio with eager tasks (3.12+)."""

BLOCK_REASONS = frozenset(
    {
        "sleep",
        "io",
        "lock",
        "queue",
        "event",
        "coroutine",
        "gather",
        "executor",
        "future",
    }
)
"""Why a coroutine waits (RUNNING->WAITING), as docs/format.md lists them."""

WAKE_REASONS = frozenset({"coroutine", "timer", "io", "thread", "cancel", "loop"})
"""What woke a coroutine (WAITING->RUNNABLE), besides ``callback NAME``."""

ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
AIOTRACE_DIR = os.path.dirname(aiotrace.__file__) + os.sep


def run(main: Callable[[], Coroutine[Any, Any, T]], flavour: str = "plain") -> T:
    """Runs ``main()`` with ``asyncio.run``; the "eager" flavour runs it on a
    loop whose task factory is ``asyncio.eager_task_factory``, so every task
    created while the loop runs starts eagerly."""
    if flavour == "plain":
        return asyncio.run(main())
    assert flavour == "eager", flavour
    return asyncio.run(main(), loop_factory=eager_loop)  # type: ignore[call-arg]


def eager_loop() -> asyncio.AbstractEventLoop:
    """A new event loop with eager tasks (3.12+)."""
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


def marker_line(obj: Any, marker: str) -> int:
    """The source line of ``obj`` that carries the comment ``# mark: marker``."""
    lines, first = inspect.getsourcelines(obj)
    found = [first + i for i, text in enumerate(lines) if f"# mark: {marker}" in text]
    assert len(found) == 1, f"marker {marker!r} found {len(found)} times"
    return found[0]


def trace_program(
    path: Path,
    main: Callable[[], Coroutine[Any, Any, T]],
    flavour: str = "plain",
    **options: Any,
) -> tuple[T, Trace]:
    """Traces ``asyncio.run(main())`` into ``path`` and reads it back.

    The trace must validate, name only documented reasons, and close every
    stall and executor range it opens.
    """
    with aiotrace.tracing(path, **options):
        result = run(main, flavour)
    trace = read_trace(path)
    trace.check()
    return result, trace


def read_trace(path: Path) -> Trace:
    """Reads the trace at ``path``."""
    return Trace(reader.read_events(path))


@dataclass
class Wait:
    """One wait of a coroutine: why it blocked, what woke it, and who."""

    reason: str
    waker: str
    by: int  # ev.coroutine of the wakeup: the waking coroutine, or NO_COROUTINE


@dataclass
class Trace:
    """Trace is a trace's events and the runtime questions asked of them."""

    events: list[Event]
    labels: dict[int, str] = field(init=False)

    def __post_init__(self) -> None:
        self.labels = {
            ev.label.resource.id: ev.label.label
            for ev in self.events
            if ev.kind is EventKind.LABEL
            and ev.label.resource.kind is ResourceKind.COROUTINE
        }

    # Checks every traced program must pass.

    def check(self) -> None:
        """Asserts the trace validates, names only documented reasons, and
        closes its stall and executor ranges."""
        problems = reader.validate(self.events)
        assert not problems, "\n".join(map(str, problems))
        self.check_reasons()
        self.check_ranges_closed("loop stall", "executor")

    def check_reasons(self) -> None:
        """Asserts every block and wakeup reason is one docs/format.md names,
        and every "coroutine" waker is a coroutine."""
        for ev in self.coro_transitions():
            st = ev.state_transition
            if st.new is CoroState.WAITING and st.old is CoroState.RUNNING:
                assert st.reason in BLOCK_REASONS, f"undocumented block reason: {ev}"
            elif st.old is CoroState.WAITING:
                assert st.reason in WAKE_REASONS or st.reason.startswith("callback "), (
                    f"undocumented waker: {ev}"
                )
                if st.reason == "coroutine":
                    assert ev.coroutine != NO_COROUTINE, ev
            elif st.new is CoroState.NOT_EXIST:
                assert st.reason in ("returned", "cancelled") or st.reason.startswith(
                    "raised "
                ), f"undocumented end: {ev}"
            elif st.old is CoroState.RUNNING and st.new is CoroState.RUNNABLE:
                assert st.reason == "yield", ev

    def check_ranges_closed(self, *names: str) -> None:
        """Asserts every range named in ``names`` that begins also ends."""
        open_: dict[tuple[str, Any], int] = {}
        for ev in self.events:
            if ev.kind not in (EventKind.RANGE_BEGIN, EventKind.RANGE_END):
                continue
            if ev.range.name not in names:
                continue
            key = (ev.range.name, ev.range.scope)
            open_[key] = open_.get(key, 0) + (
                1 if ev.kind is EventKind.RANGE_BEGIN else -1
            )
        assert all(n == 0 for n in open_.values()), open_

    # Coroutines.

    def coro_transitions(self, cid: int | None = None) -> list[Event]:
        """The coroutine state transitions, of ``cid`` only if given."""
        return [
            ev
            for ev in self.events
            if ev.kind is EventKind.STATE_TRANSITION
            and ev.state_transition.resource.kind is ResourceKind.COROUTINE
            and (cid is None or ev.state_transition.resource.id == cid)
        ]

    def coros(self, label: str) -> list[int]:
        """The ids of coroutines labelled ``label`` (the coroutine function's
        qualified name, then " name" if the task was named), in id order."""
        return sorted(cid for cid, lab in self.labels.items() if lab == label)

    def one(self, label: str) -> int:
        """The id of the only coroutine labelled ``label``."""
        ids = self.coros(label)
        assert len(ids) == 1, f"{label!r}: {ids} in {sorted(set(self.labels.values()))}"
        return ids[0]

    def creation(self, cid: int) -> Event:
        """The NOT_EXIST->RUNNABLE event of ``cid``."""
        found = [
            ev
            for ev in self.coro_transitions(cid)
            if ev.state_transition.old is CoroState.NOT_EXIST
        ]
        assert len(found) == 1, found
        return found[0]

    def waits(self, cid: int) -> list[Wait]:
        """Each RUNNING->WAITING of ``cid`` paired with the wakeup that ended it."""
        out: list[Wait] = []
        reason: str | None = None
        for ev in self.coro_transitions(cid):
            st = ev.state_transition
            if st.old is CoroState.RUNNING and st.new is CoroState.WAITING:
                reason = st.reason
            elif st.old is CoroState.WAITING:
                assert reason is not None, f"woken without a block: {ev}"
                out.append(Wait(reason, st.reason, ev.coroutine))
                reason = None
        return out

    def blocks(self, cid: int) -> list[str]:
        """The reasons of every RUNNING->WAITING of ``cid``."""
        return [
            ev.state_transition.reason
            for ev in self.coro_transitions(cid)
            if ev.state_transition.new is CoroState.WAITING
            and ev.state_transition.old is CoroState.RUNNING
        ]

    def end(self, cid: int) -> str:
        """The reason of the RUNNING->NOT_EXIST of ``cid``."""
        found = [
            ev.state_transition.reason
            for ev in self.coro_transitions(cid)
            if ev.state_transition.new is CoroState.NOT_EXIST
        ]
        assert len(found) == 1, f"coroutine {cid} ends {found}"
        return found[0]

    def starts(self, cid: int) -> list[Event]:
        """The RUNNABLE->RUNNING events of ``cid``: the starts of its steps."""
        return [
            ev
            for ev in self.coro_transitions(cid)
            if ev.state_transition.old is CoroState.RUNNABLE
            and ev.state_transition.new is CoroState.RUNNING
        ]

    def step_end_after(self, cid: int, start: Event) -> Event:
        """The transition of ``cid`` that ends the step begun by ``start``."""
        seen = False
        for ev in self.coro_transitions(cid):
            if ev is start:
                seen = True
            elif seen:
                assert ev.state_transition.old is CoroState.RUNNING, ev
                return ev
        raise AssertionError(f"step {start} never ends")

    # Loops.

    def loop_transitions(self, lid: int | None = None) -> list[Event]:
        """The loop state transitions, of ``lid`` only if given."""
        return [
            ev
            for ev in self.events
            if ev.kind is EventKind.STATE_TRANSITION
            and ev.state_transition.resource.kind is ResourceKind.LOOP
            and (lid is None or ev.state_transition.resource.id == lid)
        ]

    def loops(self) -> dict[int, int]:
        """{loop id: native id of the thread it was first seen running on}."""
        return {
            ev.state_transition.resource.id: ev.thread
            for ev in self.loop_transitions()
            if ev.state_transition.old is LoopState.UNDETERMINED
        }

    def loop_label(self, lid: int) -> str:
        """The label of loop ``lid``."""
        (label,) = (
            ev.label.label
            for ev in self.events
            if ev.kind is EventKind.LABEL
            and ev.label.resource.kind is ResourceKind.LOOP
            and ev.label.resource.id == lid
        )
        return label

    def thread_names(self) -> dict[int, set[str]]:
        """{native thread id: the names its LABEL events give it}."""
        out: dict[int, set[str]] = {}
        for ev in self.events:
            if (
                ev.kind is EventKind.LABEL
                and ev.label.resource.kind is ResourceKind.THREAD
            ):
                out.setdefault(ev.label.resource.id, set()).add(ev.label.label)
        return out

    # Ranges, samples, metrics, logs.

    def ranges(self, name: str) -> list[tuple[Event, Event]]:
        """(begin, end) pairs of the ranges called ``name``, in begin order."""
        pending: dict[Any, list[Event]] = {}
        out: list[tuple[Event, Event]] = []
        for ev in self.events:
            if ev.kind not in (EventKind.RANGE_BEGIN, EventKind.RANGE_END):
                continue
            if ev.range.name != name:
                continue
            if ev.kind is EventKind.RANGE_BEGIN:
                pending.setdefault(ev.range.scope, []).append(ev)
            else:
                begins = pending.get(ev.range.scope)
                assert begins, f"{ev} ends a range that never began"
                out.append((begins.pop(0), ev))
        out.sort(key=lambda pair: pair[0].time)
        return out

    def of_kind(self, kind: EventKind) -> list[Event]:
        """The events of ``kind``."""
        return [ev for ev in self.events if ev.kind is kind]

    def samples(self) -> list[Event]:
        """The STACK_SAMPLE events."""
        return self.of_kind(EventKind.STACK_SAMPLE)

    def metrics(self, name: str) -> list[Event]:
        """The METRIC events called ``name``."""
        return [
            ev
            for ev in self.events
            if ev.kind is EventKind.METRIC and ev.metric.name == name
        ]

    def logs(self, category: str) -> list[Event]:
        """The LOG events of ``category``."""
        return [
            ev
            for ev in self.events
            if ev.kind is EventKind.LOG and ev.log.category == category
        ]
