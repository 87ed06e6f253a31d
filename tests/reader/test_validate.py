"""The Validator: invariants beyond the format, on real and built traces."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from tracegen import encode_trace

import aiotrace
from aiotrace._format.spec import C, LoopState, ResourceKind
from aiotrace.reader import Reader, Validator, validate
from aiotrace.sinks import MemorySink


def _problems(*batches: list[tuple[Any, ...]]) -> list[str]:
    data = encode_trace([[(1, "main", list(evs)) for evs in batches]])
    return [p.message for p in validate(Reader(io.BytesIO(data)))]


def _timed(*events: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Gives events (code, *args) times 1000 ns apart."""
    return [(code, 1000 * (i + 1), *args) for i, (code, *args) in enumerate(events)]


def test_a_real_annotated_program_is_valid() -> None:
    """Tasks, regions and logs from coroutines and threads make a trace with
    no broken invariant."""

    async def order(n: int) -> None:
        async with aiotrace.new_task("order"), aiotrace.region("brew"):
            await asyncio.sleep(0)
            await asyncio.to_thread(aiotrace.log, "thread", str(n))

    def in_thread() -> None:
        with aiotrace.region("side"), aiotrace.new_task("side"):
            aiotrace.log("side", "work")

    sink = MemorySink()
    with aiotrace.tracing(sink):

        async def main() -> None:
            await asyncio.gather(*(order(n) for n in range(5)))

        asyncio.run(main())
        th = threading.Thread(target=in_thread)
        th.start()
        th.join()
    events = sink.events()
    assert len(events) > 30
    assert validate(events) == []


def test_legal_coroutine_and_loop_lives_pass() -> None:
    """A coroutine created, run, blocked, woken, yielded and ended, on a loop
    that alternates between running and idle, is valid."""
    evs = _timed(
        (C["LoopStatus"], 1, LoopState.IDLE),
        (C["LoopRun"], 1),
        (C["CoroCreate"], 7, None),
        (C["CoroStart"], 7),
        (C["CoroBlock"], 7, "sleep", None),
        (C["LoopIdle"], 1),
        (C["LoopRun"], 1),
        (C["CoroUnblock"], 7, "timer"),
        (C["CoroStart"], 7),
        (C["CoroYield"], 7, None),
        (C["CoroStart"], 7),
        (C["CoroEnd"], 7, "returned"),
        (C["LoopIdle"], 1),
    )
    assert _problems(evs) == []


def test_illegal_transitions_are_found() -> None:
    """Running a waiting coroutine without waking it, and running a loop that
    already runs, are each reported with the resource and the states."""
    evs = _timed(
        (C["LoopStatus"], 1, LoopState.RUNNING),
        (C["LoopRun"], 1),
        (C["CoroCreate"], 7, None),
        (C["CoroStart"], 7),
        (C["CoroBlock"], 7, "lock", None),
        (C["CoroStart"], 7),
    )
    assert _problems(evs) == [
        "loop 1 goes IDLE->RUNNING but was RUNNING",
        "coroutine 7 goes RUNNABLE->RUNNING but was WAITING",
    ]


def test_coroutines_alive_before_the_trace_are_taken_as_they_come() -> None:
    """A coroutine first seen mid-life (no CoroCreate) is not a problem."""
    evs = _timed(
        (C["CoroStatus"], 3, 4),  # WAITING
        (C["CoroUnblock"], 3, ""),
        (C["CoroStart"], 9),
        (C["CoroEnd"], 9, "returned"),
    )
    assert _problems(evs) == []


def test_tasks_ranges_and_regions() -> None:
    """Tasks that begin or end twice, a range that ends unbegun, regions that
    end out of order in their coroutine, and a coroutine that ends with a
    region open are all reported."""
    evs = _timed(
        (C["TaskBegin"], 1, 0, "t", None),
        (C["TaskBegin"], 1, 0, "t", None),
        (C["TaskEnd"], 1, None),
        (C["TaskEnd"], 1, None),
        (C["RangeEnd"], "GC", ResourceKind.NONE, 0, None),
        (C["RangeBegin"], "stall", ResourceKind.LOOP, 1, None),
        (C["RangeEnd"], "stall", ResourceKind.LOOP, 1, None),
        (C["CoroCreate"], 5, None),
        (C["CoroStart"], 5),
        (C["RegionBegin"], 1, "outer", None),
        (C["RegionBegin"], 1, "inner", None),
        (C["RegionEnd"], 1, "outer", None),
        (C["RegionBegin"], 1, "left-open", None),
        (C["CoroEnd"], 5, "returned"),
    )
    assert _problems(evs) == [
        "task 1 begins twice",
        "task 1 ends twice",
        "range 'GC' on none ends without a begin",
        "region 'outer' of coroutine 5 ends out of order: ['outer', 'inner']",
        "coroutine 5 ended with regions open: ['inner', 'left-open']",
    ]


def test_misuse_recorded_by_annotations_is_reported() -> None:
    """A region ended twice shows up as a validation problem."""
    sink = MemorySink()
    with aiotrace.tracing(sink):
        r = aiotrace.start_region("twice")
        r.end()
        with pytest.warns(aiotrace.TracingWarning):
            r.end()
    (problem,) = Validator().validate(sink.events())
    assert problem.message == "annotation misuse: region 'twice' ended twice"
    assert str(problem).endswith("LOG: annotation misuse: region 'twice' ended twice")


def test_dump_validate(tmp_path: Path) -> None:
    """`aiotrace dump --validate` exits 0 on a valid trace, and on a broken
    one prints the dump, then each problem on stderr, and exits 1."""
    good = tmp_path / "good.trace"
    with aiotrace.tracing(good):
        aiotrace.log("c", "m")
    ok = subprocess.run(
        [sys.executable, "-m", "aiotrace", "dump", "--validate", str(good)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ok.returncode, ok.stderr) == (0, "")
    bad = tmp_path / "bad.trace"
    bad.write_bytes(
        encode_trace(
            [[(1, "main", _timed((C["TaskEnd"], 4, None), (C["TaskEnd"], 4, None)))]]
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "aiotrace", "dump", "--validate", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.count("TASK_END") == 2
    assert "invalid" in proc.stderr and "task 4 ends twice" in proc.stderr
    both = subprocess.run(
        [sys.executable, "-m", "aiotrace", "dump", "--raw", "--validate", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert both.returncode == 2 and "--raw" in both.stderr
