"""Generations restate what is alive; the analysis must not count it twice.

These traces are written with the writer's own Encoder and explicit times,
so the expected figures are exact: each generation after the first begins
with status records for the coroutines and loops alive (as the flight
recorder writes them), timed a little before the generation's events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiotrace import analysis
from aiotrace._encode import Encoder
from aiotrace._format.framing import HEADER
from aiotrace._format.spec import C, CoroState, LoopState, ResourceKind

T0 = 1_000_000_000
THREAD = 100
LOOP = 1


def encode(generations: list[list[tuple[Any, ...]]]) -> bytes:
    """Encodes one batch per generation on THREAD; generation g syncs at
    T0 * (g + 1) - 1000."""
    enc = Encoder()
    parts = [HEADER]
    for g, events in enumerate(generations):
        now = T0 * (g + 1) - 1000
        parts.append(enc.begin_generation(0, now=now, wall=now))
        parts.append(enc.encode_batch(THREAD, "MainThread", events))
        parts.append(enc.end_generation())
    parts.append(enc.end_trace(0))
    return b"".join(parts)


def test_restated_states_do_not_move_time(tmp_path: Path) -> None:
    """A coroutine RUNNING across a generation boundary, restated RUNNING
    (and its loop RUNNING, its label and an open stall restated) a little
    before the next generation's events, is charged exactly its run time;
    the loop its busy time; the stall is one stall with the right holder."""
    c = C
    gen0 = [
        (c["LoopStatus"], T0, LOOP, LoopState.RUNNING),
        (c["CoroCreate"], T0 + 100, 7, None),
        (c["Label"], T0 + 100, ResourceKind.COROUTINE, 7, "handler conn-1"),
        (c["CoroStart"], T0 + 1_000, 7),
        (c["RangeBegin"], T0 + 1_000, "loop stall", ResourceKind.LOOP, LOOP, None),
    ]
    t1 = 2 * T0
    gen1 = [
        # Restated, timed before the generation's first event (and before
        # the last event of the previous generation).
        (c["LoopStatus"], T0 + 500, LOOP, LoopState.RUNNING),
        (c["CoroStatus"], T0 + 500, 7, CoroState.RUNNING),
        (c["Label"], T0 + 500, ResourceKind.COROUTINE, 7, "handler conn-1"),
        (c["RangeActive"], T0 + 500, "loop stall", ResourceKind.LOOP, LOOP),
        (c["CoroEnd"], t1, 7, "returned"),
        (c["RangeEnd"], t1, "loop stall", ResourceKind.LOOP, LOOP, None),
        (c["LoopIdle"], t1 + 10_000, LOOP),
    ]
    path = tmp_path / "t.trace"
    path.write_bytes(encode([gen0, gen1]))
    s = analysis.analyze(path)
    (g,) = s.coroutines
    assert g.name == "handler"
    assert (g.count, g.ended) == (1, 1)
    assert g.exec_ns == t1 - (T0 + 1_000)
    assert g.sched_wait_ns == 900
    (u,) = s.loops
    assert u.busy_ns == t1 + 10_000 - T0
    (stall,) = s.stalls
    assert stall.began and stall.ended
    assert stall.start_ns == T0 + 1_000
    assert stall.duration_ns == t1 - (T0 + 1_000)
    assert stall.coroutine == 7 and stall.coroutine_name == "handler conn-1"


def test_a_trace_that_starts_mid_run(tmp_path: Path) -> None:
    """A trace whose first generation only restates (a flight-recorder
    snapshot) takes coroutines and stalls as they come: a coroutine first
    seen WAITING with its reason is charged that reason; a stall first seen
    active is marked as begun before the trace."""
    c = C
    gen = [
        (c["LoopStatus"], T0, LOOP, LoopState.RUNNING),
        (c["CoroWaiting"], T0, 3, "queue", None),
        (c["Label"], T0, ResourceKind.COROUTINE, 3, "consumer"),
        (c["RangeActive"], T0, "loop stall", ResourceKind.LOOP, LOOP),
        (c["RangeEnd"], T0 + 50, "loop stall", ResourceKind.LOOP, LOOP, None),
        (c["CoroUnblock"], T0 + 5_000, 3, "coroutine"),
        (c["CoroStart"], T0 + 5_100, 3),
        (c["CoroEnd"], T0 + 5_400, 3, "returned"),
    ]
    path = tmp_path / "t.trace"
    path.write_bytes(encode([gen]))
    s = analysis.analyze(path)
    (g,) = s.coroutines
    assert g.block_ns == {"queue": 5_000}
    assert (g.sched_wait_ns, g.exec_ns) == (100, 300)
    (stall,) = s.stalls
    assert not stall.began and stall.ended and stall.duration_ns == 50
