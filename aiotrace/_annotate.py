"""User annotations: logs (tasks and regions build on the same path)."""

from __future__ import annotations

from typing import Final

from . import _recorder
from ._format.spec import C

BACKGROUND_TASK: Final = 0
"""The task of events recorded outside any user task."""
NO_TASK: Final = -1
"""No task at all (as opposed to the background task)."""

_LOG: Final = C["Log"]
_clock = _recorder.clock


def log(category: str, message: str) -> None:
    """Records a timestamped message in the trace, under ``category``.

    Does nothing when tracing is off.
    """
    rec = _recorder.active
    if rec is not None:
        # The thread's list straight from the thread-local; registering a new
        # thread is the rare path. A method call here would cost ~28 ns.
        try:
            events = rec._local.events
        except AttributeError:
            events = rec.events()
        events.append((_LOG, _clock(), BACKGROUND_TASK, category, message, None))


def logf(category: str, fmt: str, *args: object) -> None:
    """Records ``fmt % args`` like ``log``; formats nothing when tracing is off."""
    rec = _recorder.active
    if rec is None:
        return
    try:
        message = fmt % args
    except Exception as exc:  # a bad format must not crash the traced program
        message = f"{fmt!r} % {args!r} failed: {type(exc).__name__}: {exc}"
    rec.events().append((_LOG, _clock(), BACKGROUND_TASK, category, message, None))
