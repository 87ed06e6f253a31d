"""The span processor of the OpenTelemetry bridge: spans become aiotrace
tasks and regions, and stalls and long waits become span events.

Everything here runs inside OpenTelemetry's or aiotrace's own callbacks and
must never raise into the traced program: each entry point catches every
exception and turns the bridge off for that span only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import weakref
from asyncio.events import _get_running_loop
from types import FrameType
from typing import Any, Final

from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.trace import SpanKind

from .. import _recorder, _session
from .._context import current_task_var, regions_var
from .._format.spec import C
from .._loop._reasons import Classifier
from .._loop._state import Hooks
from .._region import Region
from .._task import BACKGROUND_TASK, Task, new_task

STALL_EVENT: Final = "aiotrace.loop_stall"
"""The span event of a loop stall that held the span's coroutine."""
WAIT_EVENT: Final = "aiotrace.long_wait"
"""The span event of a wait longer than the threshold inside the span."""
TRACE_ID: Final = "otel.trace_id"
"""The log category of a span's trace id (32 lowercase hex digits)."""
SPAN_ID: Final = "otel.span_id"
"""The log category of a span's span id (16 lowercase hex digits)."""

_ASYNCIO_DIR: Final = os.path.dirname(asyncio.__file__) + os.sep
_AS_CURRENT_CODE: Final = getattr(
    SdkTracer.start_as_current_span, "__wrapped__", SdkTracer.start_as_current_span
).__code__
_AS_CURRENT_FROM: Final = 5
_AS_CURRENT_DEPTH: Final = 4
_TASK_BEGIN: Final = C["TaskBegin"]
_LOG: Final = C["Log"]
_ROOT_KINDS: Final = (SpanKind.SERVER, SpanKind.CONSUMER)
_REGION_END: Final = C["RegionEnd"]
_clock = _recorder.clock


class _Open:
    """What the bridge began for one open span.

    Only weak references to the span and to the asyncio task that started
    it: a span never ended keeps neither alive.
    """

    __slots__ = ("cid", "hooks", "mark", "owner", "span", "task")

    def __init__(
        self, span: Span, mark: Task | Region, task: Any, hooks: Hooks | None
    ) -> None:
        self.span = weakref.ref(span)
        self.mark = mark
        self.hooks = hooks
        self.task: weakref.ref[Any] | None = None
        # The thread's id when no asyncio task runs the span (or one
        # without weak references: then the stalls and waits go unseen).
        self.owner = threading.get_ident()
        if task is not None:
            with contextlib.suppress(TypeError):
                self.task = weakref.ref(task)
        # The coroutine aiotrace saw running when the span began (its id for
        # a task aiotrace knows; the enclosing one for an eager first step
        # of a task made without loop.create_task).
        self.cid = 0

    def is_current(self) -> bool:
        """Whether the code running now is the code that began the span."""
        task = _running_task()
        if self.task is not None:
            return task is not None and task is self.task()
        return task is None and threading.get_ident() == self.owner

    def coroutine(self, coroutines: dict[int, int]) -> int:
        """The coroutine id aiotrace gives the span's code now."""
        task = None if self.task is None else self.task()
        if task is not None:
            cid = coroutines.get(id(task))
            if cid:
                return cid
        return self.cid


class _Wait:
    """A wait of one asyncio task that the poller is watching."""

    __slots__ = ("attrs", "since", "until", "waiter")

    def __init__(self, waiter: Any, since: int) -> None:
        try:
            self.waiter: Any = weakref.ref(waiter)
        except TypeError:  # a future type without weak references
            self.waiter = lambda: None  # seen anew each look: never long
        self.since = since
        self.until = 0  # set when a look finds it over
        self.attrs: dict[str, Any] | None = None  # set once it is long


class Processor(SpanProcessor):
    """Processor mirrors spans into the running aiotrace trace."""

    def __init__(self, wait_threshold: float | None) -> None:
        self.enabled = True
        # span id -> what it began, in start order (innermost last). Single
        # dict operations, atomic under the GIL; copied whole to iterate.
        self._spans: dict[int, _Open] = {}
        self._waits: dict[int, _Wait] = {}  # id(asyncio task) -> wait watched
        self._reported: dict[int, int] = {}  # thread -> t0 of a stall reported
        self._wait_ns = None if wait_threshold is None else int(wait_threshold * 1e9)
        self._poll_ns = (
            0 if self._wait_ns is None else max(self._wait_ns // 4, 10_000_000)
        )
        self._next_poll = 0
        self._classifier: Classifier | None = None
        self._lock = threading.Lock()  # who adds a wait that is over

    # SpanProcessor.

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        """Opens a task (no local parent, SERVER, CONSUMER) or a region."""
        rec = _recorder.active
        if rec is None or not self.enabled:
            return
        try:  # noqa: SIM105 - cheaper than contextlib.suppress here
            self._start(rec, span)
        except Exception:  # never into the traced program
            pass

    def _start(self, rec: _recorder.Recorder, span: Span) -> None:
        ctx = span.get_span_context()
        parent = span.parent
        name = span.name
        hooks = _hooks()
        task = _running_task()
        cid = 0
        if hooks is not None and task is not None:
            cid = hooks.coroutines.get(id(task), 0)
        mark: Task | Region
        if not _as_current():
            # A span not made current may end anywhere (a done callback,
            # another task): a task, which may, and not the current one.
            current = current_task_var.get()
            mark = Task(name, BACKGROUND_TASK if current is None else current.id)
            task_id = mark.id
            rec.events().append(
                (_TASK_BEGIN, _clock(), task_id, mark.parent_id, name, None)
            )
        elif (
            parent is None
            or parent.is_remote
            or span.kind in _ROOT_KINDS
            # The eager first step of a task made by asyncio.Task() itself
            # (aiohttp's handlers on 3.12+): aiotrace counts it in the
            # coroutine that made the task, and the span's later steps in
            # the task: a region would begin in one coroutine and end in
            # another.
            or (task is not None and hooks is not None and not cid)
        ):
            mark = new_task(name)
            task_id = mark.id
        else:
            mark = Region(name)._begin()
            task_id = mark.task_id
        now = _clock()
        rec.events().extend(
            (
                (_LOG, now, task_id, TRACE_ID, format(ctx.trace_id, "032x"), None),
                (_LOG, now, task_id, SPAN_ID, format(ctx.span_id, "016x"), None),
            )
        )
        entry = _Open(span, mark, task, hooks)
        if hooks is not None and entry.task is not None:
            ts = getattr(hooks.local, "ts", None)
            entry.cid = cid or (ts.cur if ts is not None else 0)
        self._spans[ctx.span_id] = entry

    def _on_ending(self, span: Span) -> None:
        """Adds a stall going on, or a long wait just over, to the ending span."""
        if not self._spans:
            return
        try:
            entry = self._spans.get(span.get_span_context().span_id)
            if entry is not None and entry.hooks is not None:
                self._ending(span, entry, entry.hooks)
        except Exception:  # never into the traced program
            pass

    def _ending(self, span: Span, entry: _Open, hooks: Hooks) -> None:
        now = _clock()
        if self._waits and entry.task is not None:
            key = id(entry.task())
            with self._lock:  # against the poller adding it meanwhile
                wait = self._waits.pop(key, None)
            if wait is not None and wait.attrs is not None:
                # The task runs, so the wait the poller saw is over (when
                # the poller saw it end, or now).
                until = wait.until or now
                _add(span, WAIT_EVENT, wait.since, until, wait.attrs, ended=True)
        ts = getattr(hooks.local, "ts", None)
        if ts is None:
            return
        t0 = ts.t0
        if not t0 or now - t0 <= hooks.stall_ns:
            return
        ident = threading.get_ident()
        if self._reported.get(ident) == t0:
            return  # an inner span that ended in this stall has it
        if entry.task is None or ts.cur != entry.coroutine(hooks.coroutines):
            return
        # The step that ends the span is a stall still going on: it ends
        # after the span does, too late for a span event.
        self._reported[ident] = t0
        last = _watchdog_last(ident)
        attrs = _frame_attrs(last[1] if last and last[0] == ts.cur else None)
        attrs["aiotrace.stall.ongoing"] = True
        _add(span, STALL_EVENT, t0, now, attrs, ended=True)

    def on_end(self, span: ReadableSpan) -> None:
        """Ends the span's task or region, wherever the span ends."""
        if not self._spans:
            return
        try:
            entry = self._spans.pop(span.context.span_id, None)
            if entry is not None:
                _end_mark(entry)
        except Exception:  # never into the traced program
            pass

    def shutdown(self) -> None:
        """Stops mirroring spans."""
        self.enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True

    # aiotrace's listeners.

    def on_stall(self, cid: int, t0: int, t1: int, stack: Any) -> None:
        """A stall of coroutine ``cid`` ended (on the loop thread): the
        innermost span open in that coroutine gets it."""
        with contextlib.suppress(Exception):
            if self._reported.pop(threading.get_ident(), None) == t0:
                return  # already added to the span that ended during it
            hooks = _hooks()
            if not cid or not self.enabled or hooks is None:
                return
            entries = list(self._spans.values())
            for entry in reversed(entries):
                if entry.task is not None and entry.coroutine(hooks.coroutines) == cid:
                    span = entry.span()
                    if span is not None:
                        _add(span, STALL_EVENT, t0, t1, _frame_attrs(stack))
                    return

    def on_tick(self, hooks: Hooks, now: int) -> None:
        """Watches the waits of tasks with open spans (watchdog thread)."""
        if self._wait_ns is None or now < self._next_poll or not self.enabled:
            return
        self._next_poll = now + self._poll_ns
        with contextlib.suppress(Exception):
            self._poll(now)

    def _poll(self, now: int) -> None:
        entries = list(self._spans.items())
        innermost: dict[int, tuple[Any, Span]] = {}
        for span_id, entry in entries:
            task = None if entry.task is None else entry.task()
            span = entry.span()
            if span is None:  # dropped unended: forget it
                self._spans.pop(span_id, None)
            elif task is not None:
                innermost[id(task)] = (task, span)
        waits = self._waits
        for key in [k for k in waits if k not in innermost]:
            del waits[key]
        for key, (task, span) in innermost.items():
            with contextlib.suppress(Exception):  # one odd task spoils no other
                self._look(key, task, span, now)

    def _look(self, key: int, task: Any, span: Span, now: int) -> None:
        """One look at the wait of ``task``, the task of open span ``span``."""
        waits = self._waits
        waiter = getattr(task, "_fut_waiter", None)
        wait = waits.get(key)
        if waiter is not None and not waiter.done():
            if wait is None or wait.waiter() is not waiter:
                # A new wait: the task is suspended inside the span, so a
                # long wait before it goes to the span now.
                if wait is not None and wait.attrs is not None:
                    _add(span, WAIT_EVENT, wait.since, wait.until or now, wait.attrs)
                waits[key] = _Wait(waiter, now)
            elif wait.attrs is None and now - wait.since >= (self._wait_ns or 0):
                wait.attrs = self._describe(task, waiter)
        elif wait is not None:
            if wait.attrs is None:
                waits.pop(key, None)
            elif not wait.until:
                # Over. Added here unless the span is ending (on the loop
                # thread, maybe right now): then _ending adds it, with this
                # end. The lock keeps the two from both adding it.
                wait.until = now
                with self._lock:
                    if waits.get(key) is wait and _add(
                        span, WAIT_EVENT, wait.since, now, wait.attrs, unless_ended=True
                    ):
                        del waits[key]

    def _describe(self, task: Any, waiter: Any) -> dict[str, Any]:
        if self._classifier is None:
            self._classifier = Classifier((asyncio.Task,), stacks=False)
        coro = task.get_coro()
        reason, _ = self._classifier.block(coro, waiter)
        attrs: dict[str, Any] = {"aiotrace.reason": reason}
        # The innermost await of the chain: where the coroutine waits.
        frame = None
        while coro is not None:
            f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if f is None:
                break
            if frame is None or not f.f_code.co_filename.startswith(_ASYNCIO_DIR):
                frame = f  # asyncio's own frames (sleep, wait_for) name no line
            coro = getattr(coro, "cr_await", None) or getattr(
                coro, "gi_yieldfrom", None
            )
        if frame is not None:
            attrs.update(_code_attrs(frame.f_code, frame.f_lineno))
        return attrs

    def close(self) -> None:
        """Stops mirroring and ends what the bridge began for open spans."""
        self.enabled = False
        entries = list(self._spans.values())
        self._spans.clear()
        self._waits.clear()
        for entry in reversed(entries):  # innermost first
            with contextlib.suppress(Exception):
                _end_mark(entry)


def _end_mark(entry: _Open) -> None:
    mark = entry.mark
    same = entry.is_current()
    if isinstance(mark, Task):
        mark._end()
        if same and mark._token is not None:
            mark._restore()
        return
    if mark._state != 1:
        return
    mark._state = 2
    if same:
        regions = regions_var.get()
        if any(r is mark for r in regions):
            regions_var.set(tuple(r for r in regions if r is not mark))
    rec = _recorder.active
    if rec is not None:
        rec.events().append((_REGION_END, _clock(), mark.task_id, mark.type, None))


def _add(
    span: Span,
    name: str,
    t0: int,
    t1: int,
    attrs: dict[str, Any],
    *,
    ended: bool = False,
    unless_ended: bool = False,
) -> bool:
    """Adds an event that began at trace clock ``t0`` (or when the span
    began, if later) and lasted to ``t1``; returns whether it did.

    ``ended``: the span is ending (``_on_ending``), past ``add_event``'s check.
    ``unless_ended``: from another thread, which the span's end may race.
    """
    attrs = {**attrs, "aiotrace.duration_s": (t1 - t0) / 1e9}
    wall = time.time_ns() - (_clock() - t0)
    # A stall begins with its step, which may have begun before the span:
    # the event sits inside the span, its duration attribute is the whole.
    start = span.start_time
    if start is not None and wall < start:
        wall = start
    if not ended and not unless_ended:
        if span.is_recording():
            span.add_event(name, attrs, timestamp=wall)
        return True
    # Ending: the span's end time is set but its readable copy is not made
    # yet, the one place an event can still join it. Unless ended: the end
    # time is set under this lock, so an event joins before it or not at
    # all. Private, so guarded.
    event = Event(name=name, attributes=attrs, timestamp=wall)
    with span._lock:
        if unless_ended and span._end_time is not None:
            return False
        span._events.append(event)  # type: ignore[attr-defined]
    return True


def _frame_attrs(stack: Any) -> dict[str, Any]:
    """code.* attributes of a stall sample's innermost frame."""
    if not stack:
        return {}
    code, lasti = stack[0]
    return _code_attrs(code, _line(code, lasti))


def _code_attrs(code: Any, line: int | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "code.function": getattr(code, "co_qualname", code.co_name),
        "code.filepath": code.co_filename,
    }
    if line is not None:
        attrs["code.lineno"] = line
    return attrs


def _line(code: Any, lasti: int) -> int | None:
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line  # type: ignore[no-any-return]
    return None


def _running_task() -> Any:
    """The asyncio task running now, or None."""
    loop = _get_running_loop()
    return None if loop is None else asyncio.current_task(loop)


def _as_current() -> bool:
    """Whether the span starting is being made current (it is started by
    ``start_as_current_span``, as a ``with`` block or a decorator): then it
    ends where it began.

    That frame is 6 up from here (this, ``_start``, ``on_start``, the SDK's
    multi-processor, ``Span.start``, ``Tracer.start_span``); a few more are
    looked at in case another SDK version nests differently.
    """
    frame: FrameType | None = sys._getframe(_AS_CURRENT_FROM)
    for _ in range(_AS_CURRENT_DEPTH):
        if frame is None:
            return False
        if frame.f_code is _AS_CURRENT_CODE:
            return True
        frame = frame.f_back
    return False


def _hooks() -> Hooks | None:
    session = _session.current()
    runtime = None if session is None else session.runtime
    return None if runtime is None else runtime.hooks


def _watchdog_last(ident: int) -> tuple[int, Any] | None:
    """(coroutine id, most sampled stack) of the stall going on in thread
    ``ident``, as far as the watchdog has sampled it."""
    session = _session.current()
    runtime = None if session is None else session.runtime
    watchdog = None if runtime is None else runtime._watchdog
    if watchdog is None:
        return None
    seen = watchdog.seen.get(ident)
    return None if seen is None else watchdog.blocking((seen[0], dict(seen[1])))
