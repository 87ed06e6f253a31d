"""Regions: timed intervals inside one coroutine or thread (Go's Region).

Regions nest LIFO in the context that began them: each asyncio task (and
each thread) has its own context, so its own stack of open regions, kept as
an immutable tuple in a ContextVar. Misuse (ending a region twice, out of
order, or in another coroutine or thread) is warned about and recorded in
the trace as a LOG of category ``aiotrace/misuse``; it never raises into the
traced program.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from asyncio import current_task
from asyncio.events import _get_running_loop
from collections.abc import Awaitable, Callable
from threading import get_ident
from typing import Any, Final, ParamSpec, TypeVar
from weakref import ref

from . import _recorder
from ._context import current_task_var, regions_var
from ._errors import TracingWarning
from ._format.spec import C
from ._recorder import capture_stack
from ._task import BACKGROUND_TASK
from ._text import text

P = ParamSpec("P")
R = TypeVar("R")

MISUSE: Final = "aiotrace/misuse"
"""The log category under which annotation misuse is recorded."""

_BEGIN: Final = C["RegionBegin"]
_END: Final = C["RegionEnd"]
_LOG: Final = C["Log"]
_clock = _recorder.clock


class Region:
    """Region is a timed interval of one coroutine or thread, of a given type.

    Use ``with`` / ``async with aiotrace.region(type)``, the ``@region(type)``
    decorator, or ``start_region(type)`` and ``end()``.
    """

    __slots__ = ("_owner", "_state", "task_id", "type")

    def __init__(self, type: str) -> None:
        self.type = type if isinstance(type, str) else text(type)
        self.task_id = BACKGROUND_TASK
        self._state = 0  # 0 not begun, 1 open, 2 ended
        self._owner: object = None

    def _begin(self) -> Region:
        self._owner = _owner()
        task = current_task_var.get()
        if task is not None:
            self.task_id = task.id
        self._state = 1
        regions_var.set((*regions_var.get(), self))
        rec = _recorder.active
        if rec is not None:
            stack = capture_stack(2) if rec.stacks else None
            rec.events().append((_BEGIN, _clock(), self.task_id, self.type, stack))
        return self

    def end(self) -> None:
        """Ends the region; misuse is warned about and recorded, never raised."""
        self._end()

    def _end(self) -> None:
        # Called one frame below the user's code (by end, __exit__ or the
        # decorator's wrapper): stacks skip 2 frames, 3 from _misuse.
        if self._state != 1:
            what = "twice" if self._state == 2 else "before it began"
            _misuse(f"region {self.type!r} ended {what}")
            return
        self._state = 2
        open_regions = regions_var.get()
        if self._owner != _owner():
            # A child coroutine's context is a copy of its parent's, open
            # regions included: only the owner tells who began the region.
            _misuse(
                f"region {self.type!r} ended in another coroutine or thread than "
                "the one that began it"
            )
        elif open_regions and open_regions[-1] is self:
            regions_var.set(open_regions[:-1])
        elif any(r is self for r in open_regions):
            inner = [r.type for r in open_regions[open_regions.index(self) + 1 :]]
            _misuse(
                f"region {self.type!r} ended out of order, while regions {inner!r} "
                "begun inside it were still open"
            )
            regions_var.set(tuple(r for r in open_regions if r is not self))
        rec = _recorder.active
        if rec is not None:
            stack = capture_stack(2) if rec.stacks else None
            rec.events().append((_END, _clock(), self.task_id, self.type, stack))

    def __enter__(self) -> Region:
        return self._begin()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._end()

    async def __aenter__(self) -> Region:
        return self._begin()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._end()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorates ``fn`` so that each call runs in a region of this type."""
        return _decorate(self.type, fn)

    def __repr__(self) -> str:
        state = ("not begun", "open", "ended")[self._state]
        return f"<aiotrace.Region {self.type!r} task={self.task_id} {state}>"


class _Off(Region):
    """_Off is what ``region(type)`` returns when tracing is off: a no-op.

    One per type, cached, so that a disabled ``with region(...)`` allocates
    nothing; as a decorator it still makes each call a region when tracing
    is on at the time of the call.
    """

    __slots__ = ()

    def __init__(self, type: str) -> None:
        self.type = type if isinstance(type, str) else text(type)
        self.task_id = BACKGROUND_TASK
        self._state = 0

    def __enter__(self) -> Region:
        return self

    # Explicit arguments: a few ns cheaper than *exc on this hot path.
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        return None

    async def __aenter__(self) -> Region:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        return None

    def end(self) -> None:
        """Does nothing: the region began while tracing was off."""

    def _end(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<aiotrace.Region {self.type!r} (tracing off)>"


_off_cache: dict[object, _Off] = {}
_OFF_CACHE_MAX: Final = 4096


def region(type: str) -> Region:
    """Returns a region of ``type`` for ``with``, ``async with`` or decorating.

    ``with aiotrace.region("steamMilk"): ...`` times the block in the current
    coroutine or thread, under the current task. As ``@aiotrace.region(t)``
    on a ``def`` or ``async def``, each call is a region. With tracing off it
    allocates nothing and costs about what an empty ``with`` of a no-op
    context manager does.
    """
    if _recorder.active is None:
        if not isinstance(type, str):  # cached by text only, never the object
            return _Off(type)
        off = _off_cache.get(type)
        if off is None:
            off = _Off(type)
            if len(_off_cache) < _OFF_CACHE_MAX:
                _off_cache[type] = off
        return off
    return Region(type)


def start_region(type: str) -> Region:
    """Begins a region of ``type`` now; call ``end()`` on the result to end it.

    It must end in the coroutine or thread that began it, innermost first.
    """
    if _recorder.active is None:
        return _OFF_START
    return Region(type)._begin()


_OFF_START: Final = _Off("")


def with_region(type: str, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Calls ``fn(*args, **kwargs)`` inside a region of ``type``.

    For a coroutine function, returns an awaitable that runs it inside the
    region when awaited: ``await aiotrace.with_region("x", afn)``.
    """
    if inspect.iscoroutinefunction(fn):
        return _with_region_async(type, fn, args, kwargs)  # type: ignore[return-value]
    with region(type):
        return fn(*args, **kwargs)


async def _with_region_async(
    type: str, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any
) -> R:
    async with region(type):
        return await fn(*args, **kwargs)


def _decorate(type: str, fn: Callable[P, R]) -> Callable[P, R]:
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"aiotrace.region({type!r}) cannot decorate the generator function "
            f"{fn.__qualname__}: a region must begin and end in one call; use "
            "`with aiotrace.region(...)` inside it"
        )
    if inspect.iscoroutinefunction(fn):
        afn: Callable[..., Awaitable[Any]] = fn

        @functools.wraps(fn)
        async def async_in_region(*args: Any, **kwargs: Any) -> Any:
            if _recorder.active is None:
                return await afn(*args, **kwargs)
            r = Region(type)._begin()
            try:
                return await afn(*args, **kwargs)
            finally:
                r._end()

        return async_in_region  # type: ignore[return-value]

    @functools.wraps(fn)
    def in_region(*args: P.args, **kwargs: P.kwargs) -> R:
        if _recorder.active is None:
            return fn(*args, **kwargs)
        r = Region(type)._begin()
        try:
            return fn(*args, **kwargs)
        finally:
            r._end()

    return in_region


def _owner() -> object:
    """Returns who is running: a weak reference to the asyncio task, else the
    thread's id.

    Weak: a region sits in the context of every coroutine created inside it,
    and must not keep the coroutine that began it alive. References to one
    live task compare equal; a dead task's reference equals no other.
    """
    loop = _get_running_loop()
    if loop is not None:
        task = current_task(loop)
        if task is not None:
            try:
                return ref(task)
            except TypeError:  # a task type without weak references
                return id(task)
    return get_ident()


def _misuse(message: str) -> None:
    rec = _recorder.active
    if rec is not None:
        task = current_task_var.get()
        task_id = BACKGROUND_TASK if task is None else task.id
        stack = capture_stack(3)
        rec.events().append((_LOG, _clock(), task_id, MISUSE, message, stack))
    # With warnings as errors this would raise into the traced program.
    with contextlib.suppress(Exception):
        warnings.warn(f"aiotrace: {message}", TracingWarning, stacklevel=5)
