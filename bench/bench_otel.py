"""bench_otel: what the OpenTelemetry bridge costs per span, in microseconds.

Run: ``python bench/bench_otel.py [--rounds N] [--spans N] [--quick]`` (about
20 s; ``--quick`` 2 s).

Each variant makes ``--spans`` spans in a burst, inside one asyncio task of
a running loop (no awaits: the bridge's cost, not the loop's), with the
real SDK ``TracerProvider`` and no exporter (an exporter's cost is the same
with or without the bridge). aiotrace traces to ``/dev/null`` throughout
(the default options: stall watchdog and metrics on) except in the "aiotrace
off" rows. The shapes:

- ``current child``: ``with tracer.start_as_current_span("child")`` under an
  open parent span: the bridge opens and ends a region and logs two ids;
- ``current root``: the same without a parent: a user task;
- ``bare child``: ``tracer.start_span("child").end()`` under a parent: a
  span not made current, so a task that is not made current.

For each shape, the provider without the bridge ("SDK") and with it
("bridge") run in the same rounds, in a shuffled order; the table gives the
median over rounds of each, in us per span (thread CPU time), the median of
the within-round differences and of the within-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import aiotrace
from aiotrace.contrib import opentelemetry as aotel


def current_child(tracer: Any, n: int) -> None:
    with tracer.start_as_current_span("parent"):
        for _ in range(n):
            with tracer.start_as_current_span("child"):
                pass


def current_root(tracer: Any, n: int) -> None:
    for _ in range(n):
        with tracer.start_as_current_span("root"):
            pass


def bare_child(tracer: Any, n: int) -> None:
    with tracer.start_as_current_span("parent"):
        for _ in range(n):
            tracer.start_span("child").end()


SHAPES: dict[str, Callable[[Any, int], None]] = {
    "current child (region)": current_child,
    "current root (task)": current_root,
    "bare child (task, not current)": bare_child,
}


async def burst(fn: Callable[[Any, int], None], tracer: Any, n: int) -> float:
    """Thread CPU us per span, the fastest of 3 parts, each its own step of
    the loop: a part longer than the stall threshold (0.1 s) would be a
    stall, which the bridge would add to every span ending in it."""
    best = float("inf")
    for _ in range(3):
        await asyncio.sleep(0)
        t0 = time.thread_time_ns()
        fn(tracer, n)
        best = min(best, (time.thread_time_ns() - t0) / n / 1000)
    return best


async def measure(rounds: int, n: int) -> dict[str, dict[str, list[float]]]:
    plain = TracerProvider().get_tracer("bench")
    bridged_provider = TracerProvider()
    inst = aotel.instrument(bridged_provider, metrics=False)
    bridged = bridged_provider.get_tracer("bench")
    out: dict[str, dict[str, list[float]]] = {
        s: {"SDK": [], "bridge": []} for s in SHAPES
    }
    try:
        for _ in range(rounds):
            jobs = [(s, k) for s in SHAPES for k in ("SDK", "bridge")]
            random.shuffle(jobs)
            for shape, kind in jobs:
                tracer = plain if kind == "SDK" else bridged
                out[shape][kind].append(await burst(SHAPES[shape], tracer, n))
    finally:
        inst.uninstall()
    return out


def table(title: str, res: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{title}\n")
    print("| shape | SDK us/span | bridge us/span | bridge - SDK (us) | bridge / SDK |")
    print("|---|---|---|---|---|")
    for shape, r in res.items():
        sdk, br = r["SDK"], r["bridge"]
        diff = statistics.median(b - s for s, b in zip(sdk, br, strict=True))
        ratio = statistics.median(b / s for s, b in zip(sdk, br, strict=True))
        print(
            f"| {shape} | {statistics.median(sdk):.2f} | {statistics.median(br):.2f}"
            f" | {diff:.2f} | {ratio:.2f}x |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--spans", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 300 spans")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.spans = 3, 300
    trace.set_tracer_provider(TracerProvider())  # nothing global is measured
    with aiotrace.tracing("/dev/null"):
        on = asyncio.run(measure(args.rounds, args.spans))
    off = asyncio.run(measure(args.rounds, args.spans))
    table("aiotrace tracing (the bridge mirrors every span)", on)
    table("aiotrace off (the bridge installed, idle)", off)


if __name__ == "__main__":
    main()
