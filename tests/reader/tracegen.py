"""Deterministic trace building for reader tests and golden files.

Traces are built with the writer's own Encoder, with explicit clocks, so the
bytes depend only on the events given.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from aiotrace._encode import Encoder
from aiotrace._format.framing import HEADER
from aiotrace._format.spec import C, CoroState, LoopState, ResourceKind

Batch = tuple[int, str, list[tuple[Any, ...]]]  # thread id, thread name, events

WALL0 = 1_795_000_000_000_000_000


def encode_trace(
    generations: Sequence[Sequence[Batch]],
    *,
    lost: Sequence[int] | None = None,
    end: bool = True,
) -> bytes:
    """Encodes generations of batches; generation g starts at time g * 1e9."""
    enc = Encoder()
    parts = [HEADER]
    for g, batches in enumerate(generations):
        lost_g = lost[g] if lost else 0
        now = 1_000_000_000 * (g + 1)
        parts.append(enc.begin_generation(lost_g, now=now, wall=WALL0 + now))
        parts.extend(
            enc.encode_batch(tid, name, list(evs)) for tid, name, evs in batches
        )
        parts.append(enc.end_generation())
    if end:
        parts.append(enc.end_trace(lost[-1] if lost else 0))
    return b"".join(parts)


STACK_A = (("main", "app.py", 10), ("handler", "app.py", 42))
STACK_B = (("worker", "jobs.py", 7),)


def sample_generation(g: int) -> list[Batch]:
    """One of every event type, on a loop thread and a worker thread.

    Each generation has its own loop, coroutine 3, label and active range:
    a reader does not yield a status that restates what it already knows.
    """
    t = itertools.count(1_000_000_000 * (g + 1) + 1_000, 1_500)
    loop, main, worker = 1 + g, 100, 101
    c = C
    main_events: list[tuple[Any, ...]] = [
        (c["LoopStatus"], next(t), loop, LoopState.IDLE),
        (c["LoopRun"], next(t), loop),
        (c["CoroCreate"], next(t), 1, STACK_A),
        (c["CoroStart"], next(t), 1),
        (c["TaskBegin"], next(t), 1, 0, "order", None),
        (c["RegionBegin"], next(t), 1, "steamMilk", STACK_A),
        (c["Log"], next(t), 1, "orderID", f"42 in generation {g}", None),
        (c["RegionEnd"], next(t), 1, "steamMilk", None),
        (c["CoroCreate"], next(t), 2, STACK_B),
        (c["CoroBlock"], next(t), 1, "queue", STACK_A),
        (c["CoroStart"], next(t), 2),
        (c["CoroUnblock"], next(t), 1, ""),
        (c["CoroYield"], next(t), 2, None),
        (c["CoroStart"], next(t), 1),
        (c["TaskEnd"], next(t), 1, None),
        (c["CoroEnd"], next(t), 1, "returned"),
        (c["Metric"], next(t), "/loop/lag:seconds", 0.25),
        (c["Metric"], next(t), "/coroutines/alive:coroutines", 1),
        (c["Label"], next(t), ResourceKind.COROUTINE, 2, f"worker-task {g}"),
        (c["CoroStatus"], next(t), 3 + g, CoroState.WAITING),
        (c["RangeBegin"], next(t), "loop stall", ResourceKind.LOOP, loop, STACK_A),
        (c["RangeEnd"], next(t), "loop stall", ResourceKind.LOOP, loop, None),
        (c["LoopIdle"], next(t), loop),
    ]
    worker_events: list[tuple[Any, ...]] = [
        (c["RangeActive"], next(t), f"GC {g}", ResourceKind.NONE, 0),
        (c["StackSample"], next(t), main, loop, 1, STACK_B),
        (c["Log"], next(t), 0, "grinder", "beans ground", STACK_B),
        (c["EventsLost"], next(t), 3),
    ]
    batches: list[Batch] = [(main, "MainThread", main_events)]
    batches.append((worker, "worker-1", worker_events))
    if g == 1:
        batches.append((main, "MainThread", [(c["LoopDestroy"], next(t), loop)]))
    return batches


def sample_trace(end: bool = True) -> bytes:
    """The golden sample: two generations of every event type."""
    return encode_trace(
        [sample_generation(0), sample_generation(1)], lost=[0, 3], end=end
    )
