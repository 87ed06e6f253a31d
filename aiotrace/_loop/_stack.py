"""Keeps the hooks' own frames out of ``Task.get_stack()`` and ``print_stack()``.

A running task's stack is its coroutine's frame and every frame above it, up
to the event loop: with the hooks installed that includes ``Handle._run``'s
hook, ``run_forever``'s and, for an eager task's first step, ``create_task``'s.
Python cannot leave a frame out of ``f_back``; but both task classes build
their stacks with ``asyncio.base_tasks._task_get_stack`` (the C task holds
that very function object), so its code is swapped, while tracing, for code
that leaves out the frames of the hooks' code objects.
"""

from __future__ import annotations

import types
from asyncio import base_tasks
from collections.abc import Callable
from typing import Any

from ._state import Hooks

_NAME = "_aiotrace_task_get_stack"


def hide_hook_frames(h: Hooks) -> None:
    """Makes ``Task.get_stack()`` leave out frames whose code is in
    ``h.hidden_codes``, until ``h.uninstall()``."""
    func = base_tasks._task_get_stack
    if func.__code__.co_freevars or _NAME in base_tasks.__dict__:
        return  # not the function this module knows, or hidden already
    original: Callable[[Any, int | None], list[Any]] = types.FunctionType(
        func.__code__, func.__globals__, func.__name__
    )
    hidden = h.hidden_codes

    def get_stack(task: Any, limit: int | None) -> list[Any]:
        try:
            return visible_stack(task, limit)
        except Exception as exc:
            h.fail("Task.get_stack", exc)
            return original(task, limit)

    def visible_stack(task: Any, limit: int | None) -> list[Any]:
        coro = task._coro
        running = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if running is None or not hidden:
            # From the exception's traceback: the coroutine's frames only.
            return original(task, limit)
        frames = [f for f in original(task, None) if f.f_code not in hidden]
        if limit is not None:
            # Like the original: the innermost ``limit`` frames, outermost first.
            frames = frames[-limit:] if limit > 0 else []
        return frames

    orig_code = func.__code__
    setattr(base_tasks, _NAME, get_stack)
    func.__code__ = _shim.__code__

    def undo() -> None:
        if func.__code__ is _shim.__code__:
            func.__code__ = orig_code
        base_tasks.__dict__.pop(_NAME, None)

    h.on_uninstall("Task.get_stack", undo)


def _shim(task: Any, limit: int | None) -> list[Any]:
    # Runs as asyncio.base_tasks._task_get_stack, with that module's globals.
    return globals()["_aiotrace_task_get_stack"](task, limit)  # type: ignore[no-any-return]
