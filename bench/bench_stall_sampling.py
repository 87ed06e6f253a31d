"""What sampling a stall costs the stalled code, and how many samples it gets.

A coroutine step runs a fixed amount of pure-Python work (a loop of N
additions, some 0.3 s) that stalls its loop. It is run untraced, traced with
stall detection off, and traced with it on (threshold 0.05 s: the watchdog
samples the loop thread every ``aiotrace._stall.STALL_TICK`` while it
stalls), interleaved, ``--rounds`` times. Prints the median time of each and
the slowdown of the stalled work, and the median samples per stall.

    python bench/bench_stall_sampling.py [--rounds 7] [--n 3000000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time

import aiotrace
from aiotrace import analysis
from aiotrace.sinks import MemorySink


async def work(n: int) -> float:
    await asyncio.sleep(0)
    t = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t


async def main(n: int) -> float:
    return await asyncio.create_task(work(n))


def once(n: int, mode: str) -> tuple[float, int]:
    if mode == "untraced":
        return asyncio.run(main(n)), 0
    sink = MemorySink()
    threshold = 0.05 if mode == "stalls on" else None
    with aiotrace.tracing(sink, stall_threshold=threshold, metrics_interval=None):
        dt = asyncio.run(main(n))
    stalls = analysis.analyze(io.BytesIO(sink.getvalue())).stalls
    return dt, sum(len(s.samples) for s in stalls)


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--n", type=int, default=3_000_000)
    args = p.parse_args()
    modes = ("untraced", "stalls off", "stalls on")
    times: dict[str, list[float]] = {m: [] for m in modes}
    samples: list[int] = []
    for _ in range(args.rounds):
        for m in modes:
            dt, k = once(args.n, m)
            times[m].append(dt)
            if m == "stalls on":
                samples.append(k)
    base = statistics.median(times["untraced"])
    for m in modes:
        med = statistics.median(times[m])
        print(f"{m:10s}  median {med * 1e3:7.1f} ms  x{med / base:.3f}")
    print(f"samples per stall: median {statistics.median(samples)}")
    print(f"(interleaved, {args.rounds} rounds; the machine's load matters)")


if __name__ == "__main__":
    run()
