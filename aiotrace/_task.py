"""User tasks: logical operations that span coroutines and threads (Go's Task)."""

from __future__ import annotations

import itertools
import threading
from contextvars import Token
from typing import Final

from . import _recorder
from ._context import current_task_var
from ._format.spec import C
from ._recorder import capture_stack
from ._text import text

BACKGROUND_TASK: Final = 0
"""The task of events recorded outside any user task."""
NO_TASK: Final = -1
"""No task at all (as opposed to the background task)."""

_TASK_BEGIN: Final = C["TaskBegin"]
_TASK_END: Final = C["TaskEnd"]
_ids = itertools.count(1)  # next() on a count is atomic: ids are never reused
_end_lock = threading.Lock()


class Task:
    """Task is a user task: a logical operation such as a request or an order.

    ``new_task`` makes one and makes it current; regions and logs recorded in
    this context, and in the coroutines and threads it spawns, belong to it.
    End it with ``end()``, from any coroutine or thread, or use it as a
    ``with`` / ``async with`` block, which ends it and restores the task that
    was current before.
    """

    __slots__ = ("_ended", "_previous", "_token", "id", "parent_id", "type")

    def __init__(self, type: str, parent_id: int) -> None:
        self.id: int = next(_ids)
        self.type = type if isinstance(type, str) else text(type)
        self.parent_id = parent_id
        self._ended = False
        self._previous: Task | None = None
        self._token: Token[Task | None] | None = None

    def end(self) -> None:
        """Ends the task. Only the first call counts; any thread may call it."""
        self._end()

    def _end(self) -> None:
        # One frame below the user's code (end or __exit__): stacks skip 2.
        with _end_lock:
            if self._ended:
                return
            self._ended = True
        rec = _recorder.active
        if rec is not None:
            stack = capture_stack(2) if rec.stacks else None
            rec.events().append((_TASK_END, _recorder.clock(), self.id, stack))

    @property
    def ended(self) -> bool:
        """Whether ``end()`` has been called."""
        return self._ended

    def __enter__(self) -> Task:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._end()
        self._restore()

    async def __aenter__(self) -> Task:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._end()
        self._restore()

    def _restore(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                current_task_var.reset(token)
                return
            except ValueError:  # made current in another context
                pass
        if current_task_var.get() is self:
            current_task_var.set(self._previous)

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open"
        return (
            f"<aiotrace.Task {self.id} {self.type!r} parent={self.parent_id} {state}>"
        )


def new_task(type: str) -> Task:
    """Starts a user task of ``type``, a child of the current task, and makes
    it current in this context, as Go's returned context would be.

    Tasks exist whether or not tracing is on, so a task started before
    tracing and ended during it (or the other way round) reads back whole.
    """
    previous = current_task_var.get()
    task = Task(type, previous.id if previous is not None else BACKGROUND_TASK)
    task._previous = previous
    task._token = current_task_var.set(task)
    rec = _recorder.active
    if rec is not None:
        stack = capture_stack(1) if rec.stacks else None
        rec.events().append(
            (_TASK_BEGIN, _recorder.clock(), task.id, task.parent_id, task.type, stack)
        )
    return task


def current_task() -> Task | None:
    """Returns the user task current in this context, or None."""
    return current_task_var.get()


def current_task_id() -> int:
    """Returns the current task's id, or BACKGROUND_TASK."""
    task = current_task_var.get()
    return BACKGROUND_TASK if task is None else task.id
