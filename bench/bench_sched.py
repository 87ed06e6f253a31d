"""bench_sched: what the execution tracer costs whole asyncio programs.

Run: ``python bench/bench_sched.py [--rounds N] [--quick]`` (about 11 min,
most of it VizTracer's ``save()``). Needs uvloop and viztracer.

Programs, each run whole by ``asyncio.run`` (or ``uvloop.run``):
**ping-pong**, 100 coroutines each doing ``await asyncio.sleep(0)`` N times;
**create+await**, ``await asyncio.create_task(child())`` N times, the child
returning at once; **queue ping-pong**, two coroutines passing an item back
and forth N times through two ``asyncio.Queue``; **uvloop ping-pong**. A
step is one run of a task: 100 N for ping-pong, 2 N for the others.

Once per round each, in an order rotating from round to round: untraced;
**aiotrace**, ``with aiotrace.tracing(path): asyncio.run(main())``, default
options, timed with entering and leaving the ``with`` block (``stop()``
encodes what is left); **VizTracer** with ``log_async=True``: ``start();
asyncio.run(main()); stop()`` is "run"; ``save()``, which converts the
entries kept in memory and dumps them to JSON, is added for "run+save".
Ratios to untraced and the ns added per step are taken within each round,
then the median; wall time, as the drain and writer threads share the GIL.
Every aiotrace trace is read back (untimed) and checked with ``validate``.

Extra rows: "asyncio.run alone", the aiotrace run without entering and
leaving ``tracing()``; for ping-pong and queue ping-pong, to a ``MemorySink``
with ``stall_threshold=None, metrics_interval=None``: "hooks only", the
drain thread paused (a private attribute), ``asyncio.run`` alone timed;
"hooks, then encode in stop()", the same run with entering and leaving
``tracing()`` (the pause excluded); "hooks, drainer live", encoding every
50 ms as usual, ``asyncio.run`` alone; "hooks+encode", that run with
entering and leaving; "annotations only", ``runtime_events=False``, whole.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import os
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import uvloop
from _common import NoiseProbe, Summary, arguments, environment, print_table, summarize
from viztracer import VizTracer  # type: ignore[import-untyped]

import aiotrace
from aiotrace.reader import EventKind, read_events, validate
from aiotrace.sinks import MemorySink

VIZ_ENTRIES = 30_000_000
"""VizTracer's ring buffer (default 1,000,000; it overwrites the oldest when
full): 6-57 entries per step here, 3.4-4.5 M per run, so none is dropped."""
PINGERS = 100
RUN_ALONE = "asyncio.run alone"
DIAGNOSIS = (
    *("hooks only", "hooks, then encode in stop()", "hooks, drainer live"),
    *("hooks+encode", "annotations only"),
)
HEADERS = (
    *("workload", "untraced ms", "ns/step", "aiotrace", "min-max", "+ns/step"),
    *("target (moonshot)", "verdict", "viz run", "viz run+save"),
)
FACT_HEADERS = (
    *("workload", "transitions/step", "bytes/event", "bytes/step"),
    *("events lost", "validate problems", "viz entries/step", "viz overflow"),
)

Main = Coroutine[Any, Any, None]


async def _pinger(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def ping_pong(n: int) -> None:
    await asyncio.gather(*(_pinger(n) for _ in range(PINGERS)))


async def _child() -> None:
    return None


async def create_await(n: int) -> None:
    for _ in range(n):
        await asyncio.create_task(_child())


async def queue_ping_pong(n: int) -> None:
    there: asyncio.Queue[int] = asyncio.Queue()
    back: asyncio.Queue[int] = asyncio.Queue()

    async def serve() -> None:
        for i in range(n):
            there.put_nowait(i)
            await back.get()

    async def answer() -> None:
        for _ in range(n):
            back.put_nowait(await there.get())

    await asyncio.gather(serve(), answer())


@dataclass(frozen=True)
class Workload:
    name: str
    main: Callable[[int], Main]
    run: Callable[[Main], object]
    n: int  # untraced 0.2-0.3 s on the reference machine
    steps_per_n: int
    target: float
    moonshot: float
    diagnose: bool = False


WORKLOADS = (
    Workload("ping-pong", ping_pong, asyncio.run, 2500, PINGERS, 1.35, 1.10, True),
    Workload("create+await", create_await, asyncio.run, 50_000, 2, 1.30, 1.08),
    Workload(
        "queue ping-pong", queue_ping_pong, asyncio.run, 40_000, 2, 1.25, 1.05, True
    ),
    Workload("uvloop ping-pong", ping_pong, uvloop.run, 5000, PINGERS, 1.80, 1.25),
)


class Runner:
    """Runner runs one workload in each configuration and keeps the times."""

    def __init__(self, w: Workload, n: int, tmp: str) -> None:
        self.w, self.n, self.steps, self.tmp = w, n, n * w.steps_per_n, tmp
        self.times: dict[str, list[float]] = {}
        self.facts: dict[str, Any] = {"lost": 0, "viz overflow": False}
        self.facts.update({"problems": [], "bad traces": 0})
        self.path = os.path.join(tmp, "sched.trace")
        self.viz_path = os.path.join(tmp, "viz.json")

    def program(self) -> None:
        self.w.run(self.w.main(self.n))

    def add(self, key: str, ns: float) -> None:
        self.times.setdefault(key, []).append(ns)

    def untraced(self) -> None:
        t0 = time.perf_counter_ns()
        self.program()
        self.add("untraced", time.perf_counter_ns() - t0)

    def aiotrace(self, key: str = "aiotrace", **options: Any) -> None:
        t0 = time.perf_counter_ns()
        with aiotrace.tracing(self.path, **options) as tracer:
            t1 = time.perf_counter_ns()
            self.program()
            t2 = time.perf_counter_ns()
        self.add(key, time.perf_counter_ns() - t0)
        self.facts["lost"] += tracer.lost_events
        if key == "aiotrace":  # read back and validated, every round
            self.add(RUN_ALONE, t2 - t1)
            events = read_events(self.path)
            problems = validate(events)
            self.facts["problems"] += problems
            self.facts["bad traces"] += bool(problems)
            if "events" not in self.facts:  # sizes: the first round's trace
                kinds = [ev.kind for ev in events]
                self.facts["events"] = len(events)
                self.facts["transitions"] = kinds.count(EventKind.STATE_TRANSITION)
                self.facts["bytes"] = os.path.getsize(self.path)
        os.remove(self.path)

    def viztracer(self) -> None:
        tracer = VizTracer(
            tracer_entries=VIZ_ENTRIES,
            log_async=True,
            output_file=self.viz_path,
            verbose=0,
            register_global=False,  # or builtins keeps it and its entries
        )
        t0 = time.perf_counter_ns()
        tracer.start()
        self.program()
        tracer.stop()
        t1 = time.perf_counter_ns()
        tracer.save()
        t2 = time.perf_counter_ns()
        self.add("viz run", t1 - t0)
        self.add("viz run+save", t2 - t0)
        self.facts["viz entries"] = tracer.total_entries
        self.facts["viz overflow"] |= tracer.total_entries >= VIZ_ENTRIES
        os.remove(self.viz_path)

    def memory(self, paused: bool) -> None:
        t0 = time.perf_counter_ns()
        with aiotrace.tracing(
            MemorySink(), stall_threshold=None, metrics_interval=None
        ) as tracer:
            entered = time.perf_counter_ns() - t0
            if paused:
                tracer._drainer.interval = 3600.0  # private: best effort
                time.sleep(0.12)  # its first 50 ms wait is over: it sleeps
            t1 = time.perf_counter_ns()
            self.program()
            t2 = time.perf_counter_ns()
        total = entered + time.perf_counter_ns() - t1  # without the sleep
        self.facts["lost"] += tracer.lost_events
        if paused:
            self.add("hooks only", t2 - t1)
            self.add("hooks, then encode in stop()", total)
        else:
            self.add("hooks, drainer live", t2 - t1)
            self.add("hooks+encode", total)

    def configurations(self) -> list[Callable[[], None]]:
        out = [self.untraced, self.aiotrace, self.viztracer]
        if self.w.diagnose:
            out += [
                lambda: self.memory(paused=True),
                lambda: self.memory(paused=False),
                lambda: self.aiotrace("annotations only", runtime_events=False),
            ]
        return out

    def ratio(self, key: str) -> tuple[Summary, Summary]:
        """The ratio to untraced and the ns added per step, within rounds."""
        pairs = list(zip(self.times[key], self.times["untraced"], strict=True))
        return (
            summarize([a / b for a, b in pairs]),
            summarize([(a - b) / self.steps for a, b in pairs]),
        )

    def cells(self, key: str) -> list[str]:
        r, extra = self.ratio(key)
        return [f"{r.median:.2f}x", r.spread("{:.2f}"), f"{extra.median:.0f}"]


def measure(runners: list[Runner], rounds: int, probe: NoiseProbe) -> None:
    """Runs every configuration of every workload once per round."""
    for runner in runners:  # warm up: imports, first loops, caches
        warm = Runner(runner.w, max(1, runner.n // 20), runner.tmp)
        for config in warm.configurations():
            config()
    for r in range(rounds):
        probe.sample()
        for runner in runners:
            configs = runner.configurations()
            k = r % len(configs)
            for config in configs[k:] + configs[:k]:
                gc.collect()
                config()


def verdict(w: Workload, ratio: float) -> str:
    if ratio <= w.moonshot:
        return "moonshot MET"
    return "MET" if ratio <= w.target else "not met"


def report(runners: list[Runner]) -> None:
    rows, facts = [], []
    for rn in runners:
        w, base = rn.w, summarize(rn.times["untraced"]).median
        rows.append(
            [
                f"{w.name} (N={rn.n}, {rn.steps} steps)",
                f"{base / 1e6:.0f}",
                f"{base / rn.steps:.0f}",
                *rn.cells("aiotrace"),
                f"<= {w.target:.2f}x ({w.moonshot:.2f}x)",
                verdict(w, rn.ratio("aiotrace")[0].median),
                rn.cells("viz run")[0],
                rn.cells("viz run+save")[0],
            ]
        )
        for key in (RUN_ALONE, *DIAGNOSIS) if w.diagnose else (RUN_ALONE,):
            rows.append([f"  {key}", "", "", *rn.cells(key), "", "", "", ""])
        f, problems, n = rn.facts, rn.facts["problems"], len(rn.times["aiotrace"])
        facts.append(
            [
                w.name,
                f"{f['transitions'] / rn.steps:.2f}",
                f"{f['bytes'] / f['events']:.2f}",
                f"{f['bytes'] / rn.steps:.2f}",
                f"{f['lost']}",
                f"{len(problems)} ({f['bad traces']} of {n} traces)"
                + (f" (first: {problems[0]})" if problems else ""),
                f"{f['viz entries'] / rn.steps:.1f}",
                "YES: entries dropped" if f["viz overflow"] else "no",
            ]
        )
    print_table(
        "Whole programs traced, against untraced: wall time, median over rounds "
        "of the within-round ratio (min-max) and ns added per step; aiotrace "
        "timed with entering and leaving tracing(); VizTracer's run, then "
        "run+save",
        HEADERS,
        rows,
    )
    print_table(
        "Traces: aiotrace's first round read back, every round validated; "
        "VizTracer's entries",
        FACT_HEADERS,
        facts,
    )


def main() -> None:
    args = arguments(__doc__ or "", rounds=7)
    print(f"bench_sched  {environment()}")
    print(
        f"{args.rounds} interleaved rounds; uvloop "
        f"{importlib.metadata.version('uvloop')}, viztracer "
        f"{importlib.metadata.version('viztracer')}"
    )
    probe = NoiseProbe()
    with tempfile.TemporaryDirectory(prefix="bench_sched") as tmp:
        runners = [Runner(w, w.n // 20 if args.quick else w.n, tmp) for w in WORKLOADS]
        measure(runners, args.rounds, probe)
    report(runners)
    print(probe.report())


if __name__ == "__main__":
    main()
