"""Hooks into uvloop, whose loop has no Python ``Handle._run`` to patch.

``uvloop.Loop`` is a Python subclass of the compiled loop, so its methods can
be overridden on the class. ``create_task`` hands the task a thin proxy of
the coroutine: the task drives the proxy, and the proxy records each step
(``send``/``throw``) and how it ended. ``call_soon`` sees wakeups, as with
stock asyncio: C futures schedule their callbacks through it.
``run_in_executor`` runs the call in an "executor" range, as on asyncio's
loops. uvloop's idle
time is not visible: its loops stay RUNNING from ``run_forever`` to its end.
"""

from __future__ import annotations

import asyncio
import collections.abc
import os
import sys
from typing import Any

from .._format.spec import C, ResourceKind
from .._recorder import clock
from ._labels import coroutine_label
from ._reasons import Classifier
from ._state import Hooks, ThreadState

_CREATE = C["CoroCreate"]
_UNBLOCK = C["CoroUnblock"]
_RUN_YIELD = C["CoroRunYield"]
_RUN_BLOCK = C["CoroRunBlock"]
_RUN_END = C["CoroRunEnd"]
_LABEL = C["Label"]
_COROUTINE = ResourceKind.COROUTINE


def install(h: Hooks, *, block_stacks: bool) -> None:
    """Patches ``uvloop.Loop`` if uvloop is imported."""
    uvloop = sys.modules.get("uvloop")
    if uvloop is None:
        return
    from ._asyncio import TASK_TYPES, traced_run_in_executor

    Loop = uvloop.Loop
    classifier = Classifier(TASK_TYPES, stacks=block_stacks)
    ids = h.coroutines
    local = h.local
    uv_dir = os.path.dirname(str(uvloop.__file__))

    class _Coro(collections.abc.Coroutine):  # type: ignore[type-arg]
        """_Coro stands for a task's coroutine and records its steps."""

        __slots__ = ("_cid", "_coro", "_key")

        def __init__(self, coro: Any, cid: int) -> None:
            self._coro = coro
            self._cid = cid
            self._key = 0

        # A frame object made for a step (the f_back of the coroutine's frame,
        # in a traceback that outlives the step) keeps its locals: each step
        # frame drops what it was given and what the coroutine yielded.

        def send(self, value: Any) -> Any:
            try:
                return self._step(self._coro.send, value)
            finally:
                value = None

        def throw(self, *args: Any) -> Any:
            try:
                return self._step(self._coro.throw, *args)
            finally:
                args = ()

        def close(self) -> None:
            self._coro.close()

        def __await__(self) -> Any:
            return self._coro.__await__()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._coro, name)

        def __repr__(self) -> str:
            return repr(self._coro)

        def _step(self, fn: Any, *args: Any) -> Any:
            try:
                ts: ThreadState = local.ts
            except AttributeError:
                ts = h.thread_state()
            cid = self._cid
            prev = ts.cur
            ts.cur = cid
            ts.t0 = t0 = clock()
            try:
                result = fn(*args)
            except StopIteration:
                self._end(ts, prev, t0, "returned")
                raise
            except asyncio.CancelledError:
                self._end(ts, prev, t0, "cancelled")
                raise
            except BaseException as exc:
                self._end(ts, prev, t0, f"raised {type(exc).__qualname__}")
                raise
            finally:
                fn = None
                args = ()
            t1 = clock()
            ts.t0 = 0
            try:
                if result is None or result.done():
                    ts.events.append((_RUN_YIELD, t0, cid, t1 - t0))
                else:
                    reason, stack = classifier.block(self._coro, result)
                    ts.events.append((_RUN_BLOCK, t0, cid, t1 - t0, reason, stack))
                if t1 - t0 > h.stall_ns:
                    h.stall_end(ts, t0, t1)
            except Exception as exc:
                h.fail("uvloop step", exc)
            finally:
                ts.cur = prev  # once the record is in (see _drain)
            try:
                return result
            finally:
                del result

        def _end(self, ts: ThreadState, prev: int, t0: int, how: str) -> None:
            t1 = clock()
            ts.t0 = 0
            ids.pop(self._key, None)
            ts.events.append((_RUN_END, t0, self._cid, t1 - t0, how))
            ts.cur = prev  # once the record is in (see _drain)
            if t1 - t0 > h.stall_ns:
                h.stall_end(ts, t0, t1)

    orig_create_task = Loop.create_task

    def create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
        if not asyncio.iscoroutine(coro) or isinstance(coro, _Coro):
            return orig_create_task(self, coro, **kwargs)
        cid = h.next_coroutine()
        proxy = _Coro(coro, cid)
        task = orig_create_task(self, proxy, **kwargs)
        proxy._key = id(task)
        ids[id(task)] = cid
        label = coroutine_label(coro, kwargs.get("name"))
        now = clock()
        h.thread_state().events.extend(
            (
                (_CREATE, now, cid, _stack(sys._getframe(1), uv_dir)),
                (_LABEL, now, _COROUTINE, cid, label),
            )
        )
        return task

    orig_call_soon = Loop.call_soon

    def call_soon(self: Any, callback: Any, *args: Any, context: Any = None) -> Any:
        if args:
            try:
                task: Any = getattr(callback, "__self__", None)
                if isinstance(task, TASK_TYPES) and task._fut_waiter is args[0]:  # type: ignore[attr-defined]
                    cid = ids.get(id(task))
                    if cid is not None:
                        ts = h.thread_state()
                        if not ts.cur and not self.is_running():
                            # Its runner (asyncio.run cancelling what is
                            # left at shutdown), as on asyncio's loops.
                            reason = "loop"
                        elif args[0].cancelled():
                            reason = "cancel"
                        else:
                            reason = "coroutine" if ts.cur else "loop"
                        ts.events.append((_UNBLOCK, clock(), cid, reason))
            except Exception as exc:
                h.fail("Loop.call_soon", exc)
        return orig_call_soon(self, callback, *args, context=context)

    run_in_executor = traced_run_in_executor(
        h, Loop.run_in_executor, "Loop.run_in_executor"
    )

    orig_run_forever = Loop.run_forever

    def run_forever(self: Any) -> None:
        h.enter_loop(self, fresh=True)
        try:
            orig_run_forever(self)
        finally:
            h.leave_loop(self)

    orig_close = Loop.close

    def close(self: Any) -> None:
        h.close_loop(self)
        orig_close(self)

    # Frames under which user code runs: out of Task.get_stack() (_stack.py).
    h.hidden_codes.update(
        (_Coro.send.__code__, _Coro.throw.__code__, _Coro._step.__code__)
    )
    h.hidden_codes.add(run_forever.__code__)
    h.patch(Loop, "create_task", create_task)
    h.patch(Loop, "call_soon", call_soon)
    h.patch(Loop, "run_forever", run_forever)
    h.patch(Loop, "run_in_executor", run_in_executor)
    h.patch(Loop, "close", close)


def _stack(frame: Any, skip_dir: str) -> tuple[tuple[Any, int], ...]:
    asyncio_dir = os.path.dirname(asyncio.__file__)
    while frame is not None and frame.f_code.co_filename.startswith(asyncio_dir):
        frame = frame.f_back
    frames: list[tuple[Any, int]] = []
    while frame is not None and len(frames) < 16:
        code = frame.f_code
        if code.co_filename.startswith((skip_dir, asyncio_dir)) and frames:
            break
        frames.append((code, frame.f_lasti))
        frame = frame.f_back
    return tuple(frames)
