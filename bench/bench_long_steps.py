"""What sampling long steps costs, and how often it catches a long step.

The watchdog samples a step older than ``aiotrace._stall.LONG_STEP`` of the
stall threshold (20 ms for the default 0.1 s) once per look (10 ms), so a
step that blocks under the threshold still has its line in the trace.

Cost: a coroutine runs ``--steps`` steps of fixed pure-Python work (some
30 ms each, long steps that are no stalls), untraced, traced with long-step
sampling off (``LONG_STEP`` set past the threshold) and on (the default),
interleaved, ``--rounds`` times; prints the median time of the work and the
slowdown, and the samples per step. Catch rate: steps of 25, 50 and 90 ms,
``time.sleep`` and pure Python, traced with the defaults: the share of
steps with at least one sample, and the samples per step.

    python bench/bench_long_steps.py [--rounds 7] [--steps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from typing import Any

import aiotrace
from aiotrace import _stall
from aiotrace.reader import EventKind, Reader
from aiotrace.sinks import MemorySink


def spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < deadline:
        for i in range(100):
            x += i


async def stepper(steps: int, seconds: float, how: str) -> float:
    """Runs ``steps`` steps of ``seconds``; returns the time they took."""
    took = 0.0
    for _ in range(steps):
        await asyncio.sleep(0.002)
        t = time.perf_counter()
        if how == "sleep":
            time.sleep(seconds)
        elif how == "cpu":
            spin(seconds)
        else:  # a fixed amount of work
            x = 0
            for i in range(int(seconds)):
                x += i
        took += time.perf_counter() - t
    return took


async def main(steps: int, seconds: float, how: str) -> float:
    return await asyncio.create_task(stepper(steps, seconds, how))


def traced(
    steps: int, seconds: float, how: str, long_step: float | None
) -> tuple[float, list[int]]:
    """(the steps' time, samples per long step) traced to memory."""
    sink = MemorySink()
    saved = _stall.LONG_STEP
    if long_step is not None:
        setattr(_stall, "LONG_STEP", long_step)  # noqa: B010
    try:
        with aiotrace.tracing(sink):
            dt = asyncio.run(main(steps, seconds, how))
    finally:
        setattr(_stall, "LONG_STEP", saved)  # noqa: B010
    return dt, samples_per_step(sink.getvalue())


def samples_per_step(data: bytes) -> list[int]:
    """Samples in each step of 10 ms or more (the analysis' long steps)."""
    runs: dict[int, int] = {}
    spans: list[tuple[int, int]] = []
    times: list[int] = []
    for ev in Reader(io.BytesIO(data)):
        if ev.kind is EventKind.STACK_SAMPLE:
            times.append(ev.time)
        elif ev.kind is EventKind.STATE_TRANSITION:
            st = ev.state_transition
            if st.resource.kind.name != "COROUTINE":
                continue
            cid = st.resource.id
            if st.new.name == "RUNNING":
                runs[cid] = ev.time
            elif st.old.name == "RUNNING" and cid in runs:
                t0 = runs.pop(cid)
                if ev.time - t0 >= 10_000_000:
                    spans.append((t0, ev.time))
    return [sum(t0 <= t <= t1 for t in times) for t0, t1 in spans]


def cost(rounds: int, steps: int, n: int) -> None:
    modes: dict[str, float | None] = {
        "untraced": None,
        "long off": 10.0,
        "long on": None,
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    per_step: list[float] = []
    for _ in range(rounds):
        for m, long_step in modes.items():
            if m == "untraced":
                times[m].append(asyncio.run(main(steps, n, "work")))
                continue
            dt, counts = traced(steps, n, "work", long_step)
            times[m].append(dt)
            if m == "long on" and counts:
                per_step.append(statistics.mean(counts))
    base = statistics.median(times["untraced"])
    print(f"cost: {steps} steps of {base / steps * 1e3:.1f} ms of pure-Python work")
    for m in modes:
        med = statistics.median(times[m])
        print(f"  {m:9s} median {med * 1e3:7.1f} ms  x{med / base:.3f}")
    if per_step:
        print(f"  samples per step (long on): median {statistics.median(per_step):.1f}")


def catch(rounds: int) -> None:
    print("catch rate (default options: stall threshold 0.1 s, long steps from 20 ms)")
    for how in ("sleep", "cpu"):
        for ms in (25, 50, 90):
            counts: list[int] = []
            for _ in range(max(1, rounds // 2)):
                counts += traced(10, ms / 1000, how, None)[1]
            caught = sum(c > 0 for c in counts) / max(1, len(counts))
            mean: Any = statistics.mean(counts) if counts else 0
            print(
                f"  {how:5s} {ms:3d} ms: {len(counts):3d} steps, "
                f"{caught:6.1%} sampled, {mean:.1f} samples a step"
            )


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--n", type=int, default=600_000, help="additions per step")
    args = p.parse_args()
    cost(args.rounds, args.steps, args.n)
    catch(args.rounds)
    print(f"(interleaved, {args.rounds} rounds; the machine's load matters)")


if __name__ == "__main__":
    run()
