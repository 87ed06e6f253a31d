"""What annotations keep in contextvars, and helpers that carry it to threads.

Invariant: one ContextVar per concern, each holding only immutable values
(a Task, a tuple of open regions). ``create_task`` and ``to_thread`` copy the
context; a mutable value would be shared by every copy.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from ._region import Region
    from ._task import Task

P = ParamSpec("P")
R = TypeVar("R")

current_task_var: contextvars.ContextVar[Task | None] = contextvars.ContextVar(
    "aiotrace.task", default=None
)
"""The user task current in this context."""

regions_var: contextvars.ContextVar[tuple[Region, ...]] = contextvars.ContextVar(
    "aiotrace.regions", default=()
)
"""The regions open in this context (this coroutine or thread), innermost last."""


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """Returns ``fn`` made to run in a copy of the caller's context.

    Python copies no context into a ``threading.Thread`` target or an
    ``executor.submit`` callable; wrap them so that the current task (and
    anything else in contextvars) follows::

        threading.Thread(target=aiotrace.wrap(grind_beans)).start()
        executor.submit(aiotrace.wrap(grind_beans), order)

    Each call runs in its own copy, so the wrapped function may be called
    several times, even at once.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return in_context


def run_in_executor(
    executor: Executor | None, fn: Callable[..., R], *args: Any
) -> asyncio.Future[R]:
    """``loop.run_in_executor(executor, fn, *args)``, keeping the caller's context.

    Must be called with a running event loop; await the returned future.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args))
