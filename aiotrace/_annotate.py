"""User logs: timestamped (category, message) records under the current task."""

from __future__ import annotations

from typing import Final

from . import _recorder
from ._context import current_task_var
from ._format.spec import C
from ._recorder import capture_stack
from ._task import BACKGROUND_TASK
from ._text import text

_LOG: Final = C["Log"]
_clock = _recorder.clock


def log(category: str, message: str) -> None:
    """Records a timestamped message in the trace, under ``category`` and the
    current task. Does nothing when tracing is off.
    """
    rec = _recorder.active
    if rec is not None:
        if type(message) is not str:
            message = text(message)
        if type(category) is not str:
            category = text(category)
        task = current_task_var.get()
        # The thread's list straight from the thread-local; registering a new
        # thread is the rare path. A method call here would cost ~28 ns.
        try:
            events = rec._local.events
        except AttributeError:
            events = rec.events()
        events.append(
            (
                _LOG,
                _clock(),
                BACKGROUND_TASK if task is None else task.id,
                category,
                message,
                capture_stack(1) if rec.stacks else None,
            )
        )


def logf(category: str, fmt: str, *args: object) -> None:
    """Records ``fmt % args`` like ``log``; formats nothing when tracing is off."""
    rec = _recorder.active
    if rec is None:
        return
    try:
        message = fmt % args
    except Exception as exc:  # a bad format must not crash the traced program
        message = f"{fmt!r} % {args!r} failed: {type(exc).__name__}: {exc}"
    _record(rec, category, message)


def _record(rec: _recorder.Recorder, category: str, message: str) -> None:
    # For logf, whose formatting already costs more than this call.
    if type(category) is not str:
        category = text(category)
    task = current_task_var.get()
    rec.events().append(
        (
            _LOG,
            _clock(),
            BACKGROUND_TASK if task is None else task.id,
            category,
            message,
            capture_stack(2) if rec.stacks else None,
        )
    )
