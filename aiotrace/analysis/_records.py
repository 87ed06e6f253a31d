"""The analysis's fast path: a file's records, without building typed Events.

A pass over a trace file does not need an ``Event`` per event: the typed
reader spends most of its time building them (three tuples and enum
look-ups per transition), and a pass then unpacks them again. Reading a
file, ``analyze`` and ``profile`` take each generation's records from the
reader's decoder instead: flat tuples ``(time, thread, code, *args)`` with
strings resolved and stacks as ids into the generation's table (see
``reader._decode``), sorted by time as the typed reader sorts them. They
handle the frequent coroutine transitions, regions and logs inline,
dispatching on the integer code, with the typed reader's own rules for
the thread's context (the coroutine running, interrupted coroutines) and
for restated statuses. Every rarer record goes through the reader's own
``Typer`` handler, sharing its context, and the Event it makes takes the
pass's ordinary path. So both paths see the same events, and a pass's
result does not depend on which one ran (tests compare them).

The reader's internals used here: ``Reader._generations()``, and the
``Typer``'s handlers (``_handlers``), thread contexts (``_ctx``), labels
(``_labels``), stack table (``_stacks``), ``lost_events``,
``_records()`` (a generation's records, sorted) and
``_forget_idle_threads()``. Without them (another reader), ``usable``
says no and the passes read typed Events.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._format.spec import C
from ..reader import NO_COROUTINE, NO_LOOP, CoroState, Reader, ResourceKind
from ..reader._decode import STEP_END, Generation

# Wire codes, and a step record's second transition (its code plus STEP_END).
CREATE = C["CoroCreate"]
START = C["CoroStart"]
BLOCK = C["CoroBlock"]
YIELD = C["CoroYield"]
UNBLOCK = C["CoroUnblock"]
END = C["CoroEnd"]
STATUS = C["CoroStatus"]
WAITING = C["CoroWaiting"]
RUN_YIELD = C["CoroRunYield"]
RUN_BLOCK = C["CoroRunBlock"]
RUN_END = C["CoroRunEnd"]
STEP_YIELD = YIELD + STEP_END
STEP_BLOCK = BLOCK + STEP_END
STEP_END_END = END + STEP_END
REGION_BEGIN = C["RegionBegin"]
REGION_END = C["RegionEnd"]
LOG = C["Log"]
TASK_BEGIN = C["TaskBegin"]
TASK_END = C["TaskEnd"]

# What a pass does with a record, by its code: KIND[code]. The frequent
# transitions get their own; OTHER goes through the Typer's handler. The
# passes rely on the order: K_STATUS and K_WAITING, then the regions, logs
# and user tasks, are consecutive and last. A pass that handles user tasks
# itself leaves the Typer's table of open tasks unused (and empty).
OTHER, K_START, K_BLOCK, K_YIELD, K_UNBLOCK, K_END, K_CREATE, K_STATUS = range(8)
K_WAITING, K_REGION_BEGIN, K_REGION_END, K_LOG, K_TASK_BEGIN, K_TASK_END = range(8, 14)
KIND = [OTHER] * (2 * STEP_END)
for _codes, _kind in (
    ((START, RUN_YIELD, RUN_BLOCK, RUN_END), K_START),  # a step reads as its start
    ((BLOCK, STEP_BLOCK), K_BLOCK),
    ((YIELD, STEP_YIELD), K_YIELD),
    ((UNBLOCK,), K_UNBLOCK),
    ((END, STEP_END_END), K_END),
    ((CREATE,), K_CREATE),
    ((STATUS,), K_STATUS),
    ((WAITING,), K_WAITING),
    ((REGION_BEGIN,), K_REGION_BEGIN),
    ((REGION_END,), K_REGION_END),
    ((LOG,), K_LOG),
    ((TASK_BEGIN,), K_TASK_BEGIN),
    ((TASK_END,), K_TASK_END),
):
    for _code in _codes:
        KIND[_code] = _kind

COROUTINE_KIND = ResourceKind.COROUTINE
STATES = tuple(CoroState(i) for i in range(len(CoroState)))
"""CoroState by its wire value (CoroStatus's ``state``)."""

_REQUIRED_TYPER = (
    "_handlers",
    "_ctx",
    "_labels",
    "_stacks",
    "_records",
    "_forget_idle_threads",
)


def usable(events: object) -> Reader | None:
    """Returns ``events`` if it is a fresh Reader whose records a pass can read."""
    if type(events) is not Reader:
        return None
    typer = getattr(events, "_typer", None)
    if not callable(getattr(events, "_generations", None)) or typer is None:
        return None
    if not all(hasattr(typer, a) for a in _REQUIRED_TYPER):
        return None
    return events


def generations(reader: Reader) -> Iterator[tuple[Generation, list[tuple[Any, ...]]]]:
    """Yields each generation and its records sorted by time.

    Keeps the reader's Typer as its own ``events()`` does: lost events, the
    generation's stack table, and threads left idle forgotten after it.
    """
    typer: Any = reader._typer
    for gen in reader._generations():
        typer.lost_events = max(typer.lost_events, gen.lost_events)
        recs = typer._records(gen)  # sorted as the Typer sorts, in C if it can
        yield gen, recs
        del recs, gen  # or they stay alive while the next one is decoded
        typer._forget_idle_threads()


def context(ctx: dict[int, list[Any]], thread: int) -> list[Any]:
    """Returns the thread's context ``[loop, coroutine, interrupted]``."""
    c = ctx.get(thread)
    if c is None:
        c = ctx[thread] = [NO_LOOP, NO_COROUTINE, []]
    return c


def last_time(recs: list[tuple[Any, ...]], dropped: set[int], last: int) -> int:
    """The latest time among ``recs`` not in ``dropped`` (ids), or ``last``."""
    for rec in reversed(recs):
        if id(rec) not in dropped:
            t: int = rec[0]
            return max(last, t)
    return last
