"""Hooks into stock asyncio: every task as a coroutine with goroutine-like states.

Patched at class level, so every loop is covered, including loops created
after tracing starts:

- ``Handle._run``: a step starts when a handle whose callback is a Task's
  ``__step`` or wakeup runs (any other method, such as ``task.cancel`` run
  by ``call_later``, is a plain callback); when it returns the task has
  yielded, blocked on ``_fut_waiter``, or finished. One step record is
  appended when the step ends. Other callbacks are timed for stalls.
- ``BaseEventLoop._call_soon``: a task's wakeup being scheduled with the future
  it waits on is the WAITING -> RUNNABLE transition, recorded when it happens
  (the future completing), not when the wakeup runs.
- ``BaseEventLoop.create_task``: creation, with the creating stack and a
  label. The loop's task factory, whatever it is, still makes the task; an
  eager task's first step runs inside this call, and is recorded here.
- ``run_forever`` / ``close`` and the loop's selector: loop RUNNING and IDLE.
- ``run_in_executor``: the call shows up as an "executor" range on its thread.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sys
import weakref
from asyncio import base_events, events, tasks
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from .._format.spec import C, CoroState, ResourceKind
from .._recorder import clock
from ._labels import coroutine_label
from ._reasons import EXECUTOR, Classifier
from ._stack import hide_hook_frames
from ._state import Hooks, ThreadState

_CREATE = C["CoroCreate"]
_UNBLOCK = C["CoroUnblock"]
_STATUS = C["CoroStatus"]
_RUN_YIELD = C["CoroRunYield"]
_RUN_BLOCK = C["CoroRunBlock"]
_RUN_END = C["CoroRunEnd"]
_STEP_END = {
    _RUN_YIELD: C["CoroYield"],
    _RUN_BLOCK: C["CoroBlock"],
    _RUN_END: C["CoroEnd"],
}
_LABEL = C["Label"]
_LOOP_IDLE = C["LoopIdle"]
_LOOP_RUN = C["LoopRun"]
_RANGE_BEGIN = C["RangeBegin"]
_RANGE_END = C["RangeEnd"]
_METRIC = C["Metric"]
EXECUTOR_QUEUED: Final = "/executor/queued:seconds"
"""The metric an executor call's worker records as the call begins: how
long the call waited for a worker since ``run_in_executor`` submitted it."""
_COROUTINE = ResourceKind.COROUTINE
_THREAD = ResourceKind.THREAD

CREATION_DEPTH = 16
"""Most frames in a creation stack. The walk also stops at the loop's own
frames: above a step, the stack is the event loop's machinery."""

TASK_TYPES: tuple[type, ...] = tuple(
    {tasks.Task, getattr(tasks, "_PyTask", tasks.Task)}
)
CTask: Final = tasks.Task
STEP_NAMES: Final = frozenset({"task_wakeup", "__step", "__wakeup"})
"""The names of the task methods that run a step: the C task's wakeup, and
the pure-Python task's step and wakeup (the C step is a TaskStepMethWrapper)."""
_DEFAULT_NAME: Final = re.compile(r"Task-\d+")
ASYNCIO_DIR: Final = os.path.dirname(asyncio.__file__) + os.sep


def install(h: Hooks, *, block_stacks: bool) -> None:
    """Patches asyncio for the trace ``h``; ``h.uninstall()`` undoes it."""
    local = h.local
    ids = h.coroutines
    stall_ns = h.stall_ns
    classifier = Classifier(TASK_TYPES, stacks=block_stacks)
    block = classifier.block
    waker = classifier.waker
    # type -> whether its instances are tasks; grows with the types seen.
    kinds: dict[type, bool] = dict.fromkeys(TASK_TYPES, True)
    kinds[type(None)] = False

    def is_task_type(cls: type) -> bool:
        kind = kinds[cls] = issubclass(cls, TASK_TYPES)
        return kind

    # The type of C tasks' __step callbacks; found on first sight.
    step_type: type | None = None

    def is_step(cb: Any) -> bool:
        """Whether ``cb``, a method of a task, is its step or its wakeup."""
        nonlocal step_type
        if type(cb).__name__ == "TaskStepMethWrapper":
            step_type = type(cb)
            return True
        return getattr(cb, "__name__", None) in STEP_NAMES

    label = coroutine_label

    def discover(task: Any, ts: ThreadState, state: CoroState) -> int:
        """Gives a task created before tracing (or out of sight) an id."""
        cid = h.next_coroutine()
        ids[id(task)] = cid
        now = clock()
        name = task.get_name()
        if _DEFAULT_NAME.fullmatch(name):
            name = None
        ts.events += (
            (_STATUS, now, cid, state),
            (_LABEL, now, _COROUTINE, cid, label(task.get_coro(), name)),
        )
        return cid

    def close_pending(ts: ThreadState, now: int) -> None:
        """Ends the step of the task that started tracing, which ran unhooked:
        it is over by the time another handle runs on its thread."""
        task, ts.pending = ts.pending, None
        cid = ids.get(id(task))
        ts.cur = 0
        if cid is not None:
            # Only the end of that step: its start is the RUNNING status.
            code, _, _, _, *rest = step_record(task, cid, now, now)
            if code == _RUN_YIELD:
                rest = [None]
            ts.events.append((_STEP_END[code], now, cid, *rest))

    def end_record(task: Any, cid: int, t0: int, t1: int) -> tuple[Any, ...]:
        """The record of the last step of ``task``, from t0 to t1."""
        del ids[id(task)]
        if task.cancelled():
            return (_RUN_END, t0, cid, t1 - t0, "cancelled")
        exc = task._exception
        if exc is None:
            return (_RUN_END, t0, cid, t1 - t0, "returned")
        return (_RUN_END, t0, cid, t1 - t0, f"raised {type(exc).__qualname__}")

    def step_record(task: Any, cid: int, t0: int, t1: int) -> tuple[Any, ...]:
        """The record of a step of ``task`` that ran from t0 to t1."""
        if task.done():
            return end_record(task, cid, t0, t1)
        waiter = task._fut_waiter
        if waiter is None or waiter.done():
            return (_RUN_YIELD, t0, cid, t1 - t0)
        reason, stack = block(task.get_coro(), waiter)
        return (_RUN_BLOCK, t0, cid, t1 - t0, reason, stack)

    # Handle._run: steps and callbacks.

    orig_run: Callable[[Any], None] = events.Handle._run

    def _run(self: Any) -> None:
        # The hottest code in aiotrace: it runs around every callback of every
        # loop. Keep it inline; every attribute access here is ~2% overhead on
        # a sleep(0) ping-pong.
        try:
            cb = self._callback
            task: Any = getattr(cb, "__self__", None)
            cls = task.__class__
            kind = cls is CTask or kinds.get(cls)
            if kind is None:
                kind = is_task_type(cls)
            if kind and type(cb) is not step_type:
                # A task's method that is not its step (task.cancel run by
                # call_later or a signal handler) is a plain callback.
                kind = is_step(cb)
            try:
                ts: ThreadState = local.ts
            except AttributeError:
                ts = thread_state()
            if ts.pending is not None:
                close_pending(ts, clock())
            cid = 0
            if kind:
                found = ids.get(id(task))
                cid = discover(task, ts, CoroState.RUNNABLE) if found is None else found
                ts.cur = cid
            else:
                ts.handle = self
            ts.t0 = t0 = clock()
        except Exception as exc:
            h.fail("Handle._run", exc)
            try:
                return orig_run(self)
            finally:
                self = cb = task = None
        try:
            orig_run(self)
        finally:
            try:
                # Cleared before t1 is read: a watchdog that saw the step still
                # running then saw it at a time before t1, so if it reported a
                # stall, t1 - t0 exceeds the threshold and the stall ends here.
                ts.t0 = 0
                t1 = clock()
                if kind:
                    waiter = task._fut_waiter
                    if waiter is None:
                        if task.done():
                            ts.events.append(end_record(task, cid, t0, t1))
                        else:
                            ts.events.append((_RUN_YIELD, t0, cid, t1 - t0))
                    elif waiter.done():
                        ts.events.append((_RUN_YIELD, t0, cid, t1 - t0))
                    else:
                        reason, stack = block(task.get_coro(), waiter)
                        ts.events.append((_RUN_BLOCK, t0, cid, t1 - t0, reason, stack))
                    # Cleared once the record is in: a generation cut that
                    # sees cur set and t0 clear waits for it (_drain).
                    ts.cur = 0
                else:
                    ts.handle = None
                if t1 - t0 > stall_ns:
                    h.stall_end(ts, t0, t1)
            except Exception as exc:
                h.fail("Handle._run", exc)
            # As asyncio's own Handle._run does: a frame object made for this
            # call (the f_back of a frame in a traceback that outlives it)
            # keeps its locals, and they must not keep the handle, the task or
            # its future alive.
            self = cb = task = waiter = None

    run_code = _run.__code__
    orig_run_code = getattr(orig_run, "__code__", None)

    def thread_state() -> ThreadState:
        ts = h.thread_state()
        loop = events._get_running_loop()
        if loop is not None and ts.loop != h.loop_id(loop):
            h.enter_loop(loop, fresh=False)
        return ts

    # _call_soon: wakeups.

    orig_call_soon = base_events.BaseEventLoop._call_soon  # type: ignore[attr-defined]

    def _call_soon(self: Any, callback: Any, args: Any, context: Any) -> Any:
        if args:
            try:
                task: Any = getattr(callback, "__self__", None)
                kind = kinds.get(task.__class__)
                if kind is None:
                    kind = is_task_type(task.__class__)
                if kind and task._fut_waiter is args[0]:
                    wake(self, task, args[0])
            except Exception as exc:
                h.fail("BaseEventLoop._call_soon", exc)
        return orig_call_soon(self, callback, args, context)

    def wake(loop: Any, task: Any, fut: Any) -> None:
        try:
            ts: ThreadState | None = local.ts
        except AttributeError:
            ts = None
        owner = loop._thread_id
        if ts is None or (owner is not None and ts.ident != owner):
            events_ = h.rec.events()
            reason = "thread"
        else:
            events_ = ts.events
            if owner is None and not ts.cur and ts.handle is None:
                # The loop is not running: its runner (asyncio.run cancelling
                # what is left at shutdown) woke it, on the loop's thread.
                reason = "loop"
            elif fut.cancelled() and not isinstance(fut, TASK_TYPES):
                reason = "cancel"
            elif ts.cur:
                reason = "coroutine"
            elif ts.handle is not None:
                reason = waker(ts.handle)
            else:
                reason = "loop"
        cid = ids.get(id(task))
        if cid is None:
            cid = discover(task, ts or h.thread_state(), CoroState.WAITING)
        elif ts is not None and cid == ts.cur and events_ is ts.events:
            # Its own step is running (a signal handler cancelled it there):
            # the step ends with its future done, a yield, not a block.
            return
        events_.append((_UNBLOCK, clock(), cid, reason))

    # create_task: creation, and eager first steps.

    orig_create_task = base_events.BaseEventLoop.create_task

    def create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
        try:
            factory = self._task_factory
            eager = bool(
                kwargs.get("eager_start")
                or (factory is not None and _is_eager(factory))
            ) and (self.is_running() and asyncio.iscoroutine(coro))
        except Exception as exc:
            h.fail("BaseEventLoop.create_task", exc)
            return orig_create_task(self, coro, **kwargs)
        if eager:
            try:
                return create_eager(self, coro, kwargs)
            finally:
                # The eager step ran under this frame: see the end of _run.
                del self, coro, kwargs, factory
        task = orig_create_task(self, coro, **kwargs)
        try:
            cid = h.next_coroutine()
            ids[id(task)] = cid
            now = clock()
            ts = h.thread_state()
            ts.events += (
                (_CREATE, now, cid, creation_stack(2)),
                (_LABEL, now, _COROUTINE, cid, label(coro, kwargs.get("name"))),
            )
        except Exception as exc:
            h.fail("BaseEventLoop.create_task", exc)
        return task

    def create_eager(loop: Any, coro: Any, kwargs: dict[str, Any]) -> Any:
        # The creation is recorded only once the task exists (a factory may
        # refuse), with the times from before its first step.
        try:
            ts = h.thread_state()
            cid = h.next_coroutine()
            now = clock()
            created = (
                (_CREATE, now, cid, creation_stack(3)),
                (_LABEL, now, _COROUTINE, cid, label(coro, kwargs.get("name"))),
            )
            prev = ts.cur
            ts.cur = cid
        except Exception as exc:
            h.fail("BaseEventLoop.create_task", exc)
            return orig_create_task(loop, coro, **kwargs)
        t0 = clock()
        try:
            task = orig_create_task(loop, coro, **kwargs)
        except BaseException:
            del loop, coro, kwargs  # see the end of _run
            raise
        finally:
            ts.cur = prev
        try:
            t1 = clock()
            ids[id(task)] = cid
            ts.events += created
            if getattr(coro, "cr_frame", None) is not None and not getattr(
                coro, "cr_suspended", True
            ):
                # It did not start after all: it waits to run.
                ts.events.append((_RUN_YIELD, t0, cid, 0))
            else:
                ts.events.append(step_record(task, cid, t0, t1))
        except Exception as exc:
            h.fail("BaseEventLoop.create_task", exc)
        try:
            return task
        finally:
            # The eager step ran under this frame: see the end of _run.
            del loop, coro, kwargs, task

    def creation_stack(skip: int) -> tuple[tuple[Any, int], ...]:
        """The stack of the code that created a task, ``skip`` frames up."""
        frames: list[tuple[Any, int]] = []
        frame: Any = sys._getframe(skip + 1)
        # Innermost, asyncio's own frames (create_task, gather, TaskGroup...).
        while frame is not None and frame.f_code.co_filename.startswith(ASYNCIO_DIR):
            frame = frame.f_back
        depth = CREATION_DEPTH
        while frame is not None and depth:
            code = frame.f_code
            if code is run_code or code is orig_run_code:
                break
            frames.append((code, frame.f_lasti))
            frame = frame.f_back
            depth -= 1
        return tuple(frames)

    # Loops: run_forever, close, and the selector for idle time.

    orig_run_forever = base_events.BaseEventLoop.run_forever

    def run_forever(self: Any) -> None:
        if self.is_closed() or self.is_running():
            return orig_run_forever(self)  # it refuses, and says why
        try:
            h.enter_loop(self, fresh=True)
        except Exception as exc:
            h.fail("BaseEventLoop.run_forever", exc)
        try:
            orig_run_forever(self)
        finally:
            try:
                h.leave_loop(self)
            except Exception as exc:
                h.fail("BaseEventLoop.run_forever", exc)
            self = None  # the loop ran under this frame: see the end of _run

    orig_close = base_events.BaseEventLoop.close

    def close(self: Any) -> None:
        try:
            h.close_loop(self)
        except Exception as exc:
            h.fail("BaseEventLoop.close", exc)
        orig_close(self)

    # The loops whose selector is wrapped, held weakly: a loop dropped
    # unclosed keeps its selector, whose keys hold the program's callbacks.
    wrapped: weakref.WeakSet[Any] = weakref.WeakSet()

    def wrap_selector(loop: Any, lid: int, ts: ThreadState) -> None:
        inner = getattr(loop, "_selector", None)
        if inner is None or isinstance(inner, _Selector):
            return
        loop._selector = _Selector(inner, h, lid)
        wrapped.add(loop)

    def unwrap_selectors() -> None:
        for loop in list(wrapped):
            wrapper = getattr(loop, "_selector", None)
            if isinstance(wrapper, _Selector) and wrapper._h is h:
                loop._selector = wrapper._inner

    h.on_uninstall("selector", unwrap_selectors)

    # run_in_executor: executor ranges, and a reason for awaiting the future.

    run_in_executor = traced_run_in_executor(
        h, base_events.BaseEventLoop.run_in_executor, "BaseEventLoop.run_in_executor"
    )

    orig_threadsafe = base_events.BaseEventLoop.call_soon_threadsafe

    def call_soon_threadsafe(self: Any, callback: Any, *args: Any, **kw: Any) -> Any:
        try:
            classifier.from_thread(callback)
        except Exception as exc:
            h.fail("BaseEventLoop.call_soon_threadsafe", exc)
        return orig_threadsafe(self, callback, *args, **kw)

    h.hidden_codes.update(
        (
            _run.__code__,
            run_forever.__code__,
            create_task.__code__,
            create_eager.__code__,
        )
    )
    hide_hook_frames(h)
    # Without the step hook, wakeups and creations would contradict the trace.
    h.link("Handle._run", "BaseEventLoop._call_soon", "BaseEventLoop.create_task")
    h.on_loop.append(wrap_selector)
    h.patch(events.Handle, "_run", _run)
    h.patch(base_events.BaseEventLoop, "_call_soon", _call_soon)
    h.patch(base_events.BaseEventLoop, "create_task", create_task)
    h.patch(base_events.BaseEventLoop, "run_forever", run_forever)
    h.patch(base_events.BaseEventLoop, "close", close)
    h.patch(base_events.BaseEventLoop, "run_in_executor", run_in_executor)
    h.patch(base_events.BaseEventLoop, "call_soon_threadsafe", call_soon_threadsafe)
    if sys.version_info < (3, 13):
        orig_set_name = tasks._set_task_name  # type: ignore[attr-defined]

        def _set_task_name(task: Any, name: Any) -> None:
            # asyncio.create_task and TaskGroup name the task after the loop
            # made it: label it again with its name.
            orig_set_name(task, name)
            try:
                cid = ids.get(id(task))
                if name is not None and cid is not None:
                    lab = label(task.get_coro(), task.get_name())
                    h.thread_state().events.append(
                        (_LABEL, clock(), _COROUTINE, cid, lab)
                    )
            except Exception as exc:
                h.fail("tasks._set_task_name", exc)

        h.patch(tasks, "_set_task_name", _set_task_name)
    loop = events._get_running_loop()
    if loop is not None:
        h.enter_loop(loop, fresh=False)
        current = tasks.current_task(loop)
        if current is not None:
            # It is running the step that started tracing; see close_pending.
            ts = h.thread_state()
            discover(current, ts, CoroState.RUNNING)
            ts.cur = ids[id(current)]
            ts.pending = current


def _is_eager(factory: Any) -> bool:
    eager = getattr(tasks, "eager_task_factory", None)
    if eager is None:
        return False
    return factory is eager or getattr(factory, "__qualname__", "") == (
        "create_eager_task_factory.<locals>.factory"
    )


class _Selector:
    """_Selector wraps a loop's selector to record the loop's idle time."""

    def __init__(self, inner: Any, h: Hooks, lid: int) -> None:
        self._inner = inner
        self._h = h
        self._lid = lid
        self.register = inner.register
        self.unregister = inner.unregister
        self.modify = inner.modify
        self.get_key = inner.get_key
        self.get_map = inner.get_map
        self.close = inner.close

    def select(self, timeout: float | None = None) -> Any:
        """Waits for I/O like the wrapped selector; a real wait is loop idle time."""
        if timeout is not None and timeout <= 0:
            return self._inner.select(timeout)
        # The loop may run in another thread than the one that first saw it.
        append = self._h.thread_state().events.append
        append((_LOOP_IDLE, clock(), self._lid))
        try:
            return self._inner.select(timeout)
        finally:
            append((_LOOP_RUN, clock(), self._lid))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def traced_run_in_executor(
    h: Hooks, orig: Callable[..., Any], name: str
) -> Callable[..., Any]:
    """``orig`` (a loop's ``run_in_executor``) running each call of a thread
    pool in an ``_ExecutorCall``, its future marked as an executor wait."""

    def run_in_executor(self: Any, executor: Any, func: Any, *args: Any) -> Any:
        pool = (
            getattr(self, "_default_executor", None) if executor is None else executor
        )
        if (
            not callable(func)
            or asyncio.iscoroutinefunction(func)
            or not isinstance(pool, ThreadPoolExecutor | None)
        ):
            # A process pool must pickle func; a coroutine function is refused.
            return orig(self, executor, func, *args)
        fut = orig(self, executor, _ExecutorCall(h, func), *args)
        try:
            fut._aiotrace_reason = EXECUTOR
        except Exception as exc:
            h.fail(name, exc)
        return fut

    return run_in_executor


class _ExecutorCall:
    """_ExecutorCall runs a function in an executor thread inside an
    "executor" range on that thread."""

    __slots__ = ("_func", "_h", "_submitted", "_where")

    def __init__(self, h: Hooks, func: Callable[..., Any]) -> None:
        self._h = h
        self._func = func
        self._where = _where(func)
        self._submitted = clock()

    def __call__(self, *args: Any) -> Any:
        h = self._h
        try:
            ts = h.thread_state()
            now = clock()
            # The time queued, as a metric just before the range: the
            # awaiting coroutine's wait cannot tell it when the future is
            # gathered, and cannot tell which worker took which call.
            ts.events.extend(
                (
                    (_METRIC, now, EXECUTOR_QUEUED, (now - self._submitted) / 1e9),
                    (_RANGE_BEGIN, now, "executor", _THREAD, ts.native, self._where),
                )
            )
        except Exception as exc:
            h.fail("run_in_executor", exc)
            return self._func(*args)
        try:
            return self._func(*args)
        finally:
            ts.events.append(
                (_RANGE_END, clock(), "executor", _THREAD, ts.native, None)
            )
            # A traceback of the function's exception holds this frame, as
            # concurrent.futures' own _WorkItem.run knows: drop the arguments.
            del self, args


def _where(func: Any) -> tuple[tuple[str, str, int], ...]:
    """A one-frame stack naming the function an executor runs."""
    while isinstance(func, functools.partial):
        # to_thread runs partial(context.run, func, *args)
        inner = func.func
        func = (
            func.args[0]
            if getattr(inner, "__name__", "") == "run" and func.args
            else inner
        )
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    if code is None:
        return ((name, getattr(func, "__module__", None) or "", 0),)
    return ((name, code.co_filename, code.co_firstlineno),)
