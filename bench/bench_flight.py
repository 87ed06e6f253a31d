"""bench_flight: what a flight recorder running all the time costs.

Run: ``python bench/bench_flight.py [--rounds N] [--quick]`` (about 1 min).
Needs uvloop (and viztracer, which bench_sched imports).

The workloads are bench_sched's (ping-pong, create+await, queue ping-pong,
uvloop ping-pong), each run whole by ``asyncio.run`` (``uvloop.run``). Once
per round each, in an order rotating from round to round: **untraced**;
**flight recorder**, ``FlightRecorder()`` (defaults: 10 MiB, 10 s) started
before and stopped after, only the run timed, as for a recorder that is
always on; **trace to a file**, ``aiotrace.start(path)`` likewise started
before and stopped after, only the run timed; **both**, a recorder and a
trace at once (one recording shared). Ratios to untraced are taken within
each round, then the median; wall time.

The second table: after each flight-recorder run, the memory the recorder
holds (``memory_bytes``), the snapshot's size and generations, and the time
``write_to`` takes to a ``MemorySink`` (the cut of the generation being
recorded included); every snapshot is read back and validated.

The third: the drain thread's cost of following what is alive, so that
each generation can restate it: ``Encoder.encode_batch`` with the tracker
following in the same pass (``Encoder(follow=StateTracker())``,
``follow=True``) plus the generation's ``StateTracker.cut``, against
encoding alone; ns per event, on the batches the drain thread took while
each workload ran under a trace (N/5) and on 200k synthetic scheduling
events (``_common.scheduling_events``); the two interleaved, median of the
rounds; the drain thread's CPU time (``time.thread_time_ns``).
"""

from __future__ import annotations

import gc
import io
import os
import tempfile
import time
from collections.abc import Callable

from _common import (
    NoiseProbe,
    Summary,
    arguments,
    environment,
    print_table,
    scheduling_events,
    summarize,
)
from bench_sched import WORKLOADS, Workload

import aiotrace
from aiotrace._drain import BATCH_EVENTS
from aiotrace._encode import Encoder
from aiotrace._recorder import Event
from aiotrace._restate import StateTracker
from aiotrace.reader import EventKind, Reader, validate
from aiotrace.sinks import MemorySink

CONFIGS = ("untraced", "flight recorder", "trace to a file", "both")
HEADERS = (
    *("workload", "untraced ms", "flight recorder", "min-max", "+ns/step"),
    *("trace to a file", "both"),
)
MEMORY_HEADERS = (
    *("workload", "memory held", "snapshot", "generations", "write_to ms"),
    "validate problems",
)
MIB = 1 << 20


class Runner:
    """Runner runs one workload in each configuration and keeps the times."""

    def __init__(self, w: Workload, n: int, tmp: str) -> None:
        self.w, self.n, self.steps = w, n, n * w.steps_per_n
        self.path = os.path.join(tmp, "flight.trace")
        self.times: dict[str, list[float]] = {}
        self.memory: list[int] = []
        self.snapshots: list[tuple[int, int, float]] = []
        self.problems = 0

    def add(self, key: str, ns: float) -> None:
        self.times.setdefault(key, []).append(ns)

    def timed(self) -> float:
        gc.collect()
        t0 = time.perf_counter_ns()
        self.w.run(self.w.main(self.n))
        return time.perf_counter_ns() - t0

    def untraced(self) -> None:
        self.add("untraced", self.timed())

    def flight(self) -> None:
        rec = aiotrace.FlightRecorder()
        rec.start()
        try:
            self.add("flight recorder", self.timed())
            self.memory.append(rec.memory_bytes)
            snap = MemorySink()
            t0 = time.perf_counter_ns()
            rec.write_to(snap)
            took = time.perf_counter_ns() - t0
        finally:
            rec.stop()
        events = list(Reader(io.BytesIO(snap.getvalue())))
        gens = sum(ev.kind is EventKind.SYNC for ev in events)
        self.problems += len(validate(events))
        self.snapshots.append((len(snap), gens, took / 1e6))

    def trace(self) -> None:
        tracer = aiotrace.start(self.path)
        try:
            self.add("trace to a file", self.timed())
        finally:
            tracer.stop()
        os.remove(self.path)

    def both(self) -> None:
        rec = aiotrace.FlightRecorder()
        rec.start()
        try:
            tracer = aiotrace.start(self.path)
            try:
                self.add("both", self.timed())
            finally:
                tracer.stop()
        finally:
            rec.stop()
        os.remove(self.path)

    def configurations(self) -> list[Callable[[], None]]:
        return [self.untraced, self.flight, self.trace, self.both]

    def ratio(self, key: str) -> tuple[Summary, Summary]:
        pairs = list(zip(self.times[key], self.times["untraced"], strict=True))
        return (
            summarize([a / b for a, b in pairs]),
            summarize([(a - b) / self.steps for a, b in pairs]),
        )


def measure(runners: list[Runner], rounds: int, probe: NoiseProbe) -> None:
    """Runs every configuration of every workload once per round."""
    for runner in runners:  # warm up
        warm = Runner(runner.w, max(1, runner.n // 20), os.path.dirname(runner.path))
        for config in warm.configurations():
            config()
    for r in range(rounds):
        probe.sample()
        for runner in runners:
            configs = runner.configurations()
            k = r % len(configs)
            for config in configs[k:] + configs[:k]:
                config()


def report(runners: list[Runner]) -> None:
    rows: list[list[str]] = []
    memory: list[list[str]] = []
    for rn in runners:
        base = summarize(rn.times["untraced"]).median
        flight, extra = rn.ratio("flight recorder")
        rows.append(
            [
                f"{rn.w.name} (N={rn.n}, {rn.steps} steps)",
                f"{base / 1e6:.0f}",
                f"{flight.median:.2f}x",
                flight.spread("{:.2f}"),
                f"{extra.median:.0f}",
                f"{rn.ratio('trace to a file')[0].median:.2f}x",
                f"{rn.ratio('both')[0].median:.2f}x",
            ]
        )
        sizes = summarize([s for s, _, _ in rn.snapshots])
        gens = summarize([g for _, g, _ in rn.snapshots])
        took = summarize([t for _, _, t in rn.snapshots])
        held = summarize(rn.memory)
        memory.append(
            [
                rn.w.name,
                f"{held.median / MIB:.2f} MiB (max {held.hi / MIB:.2f})",
                f"{sizes.median / MIB:.2f} MiB",
                f"{gens.median:.0f}",
                f"{took.median:.1f} ({took.spread('{:.1f}')})",
                str(rn.problems),
            ]
        )
    print_table(
        "Whole programs with a flight recorder always on, against untraced: "
        "wall time of the run, median over rounds of the within-round ratio "
        "(min-max) and ns added per step; a trace to a file, and both at once",
        HEADERS,
        rows,
    )
    print_table(
        "The recorder after each run (defaults: max_bytes 10 MiB, min_age 10 s): "
        "memory held, snapshot size and generations, write_to time (median)",
        MEMORY_HEADERS,
        memory,
    )


Batch = tuple[int, str, list[Event]]


def recorded_batches(w: Workload, n: int) -> list[Batch]:
    """Returns the batches the drain thread encodes while ``w`` runs traced."""
    batches: list[Batch] = []
    original = Encoder.encode_batch

    def capture(
        self: Encoder, thread: int, name: str, events: list[Event], **kw: bool
    ) -> bytes:
        if kw.get("follow"):
            batches.append((thread, name, list(events)))
        return original(self, thread, name, events, **kw)

    Encoder.encode_batch = capture  # type: ignore[method-assign]
    try:
        with aiotrace.tracing(MemorySink()):
            w.run(w.main(n))
    finally:
        Encoder.encode_batch = original  # type: ignore[method-assign]
    return batches


def encode_ns(batches: list[Batch], *, follow: bool) -> float:
    """ns/event to encode ``batches`` as one generation, following or not."""
    tracker = StateTracker()
    enc = Encoder(follow=tracker if follow else None)
    enc.begin_generation(0)
    t0 = time.thread_time_ns()  # CPU time: steadier on a shared machine
    for thread, name, events in batches:
        enc.encode_batch(thread, name, events, follow=follow)
    if follow:
        tracker.cut()
    return (time.thread_time_ns() - t0) / sum(len(b[2]) for b in batches)


def drain_cost(rounds: int, n: int, quick: bool) -> None:
    """Prints ns/event of following state against encoding, on the drain side."""
    events = scheduling_events(n)
    sets = {
        w.name: recorded_batches(w, w.n // (100 if quick else 5)) for w in WORKLOADS
    }
    sets["synthetic"] = [
        (1, "MainThread", events[i : i + BATCH_EVENTS])
        for i in range(0, n, BATCH_EVENTS)
    ]
    rows: list[list[str]] = []
    for name, batches in sets.items():
        plain: list[float] = []
        extra: list[float] = []
        for _ in range(rounds):
            p = encode_ns(batches, follow=False)
            f = encode_ns(batches, follow=True)
            plain.append(p)
            extra.append(f - p)
        p, x = summarize(plain), summarize(extra)
        rows.append(
            [
                f"{name} ({sum(len(b[2]) for b in batches)} events)",
                f"{p.median:.0f}",
                f"{x.median:.0f}",
                x.spread("{:.0f}"),
                f"{x.median / p.median:.2f}",
            ]
        )
    print_table(
        f"Drain thread, ns per event: encoding, and what following the state "
        f"adds (in the same pass, with the cut), median of {rounds}",
        ("batches", "encode", "+follow", "min-max", "follow / encode"),
        rows,
    )


def main() -> None:
    args = arguments(__doc__ or "", rounds=7)
    print(f"bench_flight  {environment()}")
    print(f"{args.rounds} interleaved rounds")
    probe = NoiseProbe()
    with tempfile.TemporaryDirectory(prefix="bench_flight") as tmp:
        runners = [Runner(w, w.n // 20 if args.quick else w.n, tmp) for w in WORKLOADS]
        measure(runners, args.rounds, probe)
    report(runners)
    drain_cost(args.rounds, 20_000 if args.quick else 200_000, args.quick)
    print(probe.report())


if __name__ == "__main__":
    main()
