"""bench_record: what recording one event costs the traced thread, in ns.

Run: ``python bench/bench_record.py [--rounds N] [--quick]`` (about 10 s).

With a real tracer running (``aiotrace.start(MemorySink())``, so the drain and
writer threads are live, as in production) it times bursts of recording, in
interleaved rounds, and reports the median over rounds with the min-max:

- the raw hook pattern, ``rec.events().append((code, clock(), *args))``, for a
  CoroBlock (coroutine, reason string, stack None) and a CoroStart (an int);
  also with the list already in a local (the floor), with the garbage
  collector disabled (to show its share), and wrapped in a hook function
  that checks ``_recorder.active`` first (what a scheduling hook will run);
- ``aiotrace.log(category, message)`` with tracing on (the public path);
- ``aiotrace.log`` with tracing off, against a plain empty function with the
  same signature (the ratio is taken within each round).

Times are thread CPU time (``time.thread_time_ns``), so the time the loop
spends waiting for the GIL while the drain thread encodes is not counted;
before each burst the benchmark waits until the drainer has encoded and
written every earlier event. A burst is timed in 5 back-to-back parts and
the fastest counts; the table shows the median of that over the rounds.
The cost of an empty loop iteration is subtracted ("net") and also shown.
Wall-clock medians are shown alongside.

A second table measures sustained recording: a long burst while the drainer
encodes concurrently, and the CPU time of the whole process (all threads)
until every event is encoded and written: what one event costs in total,
hot path plus encoding plus writing, most of it under the GIL.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable

from _common import (
    CORO_BLOCK,
    CORO_START,
    NoiseProbe,
    Summary,
    arguments,
    environment,
    print_table,
    quiesce,
    summarize,
)

import aiotrace
from aiotrace import _recorder
from aiotrace._recorder import Recorder
from aiotrace.sinks import MemorySink

COROUTINE = 42
REASON = "queue"
REPEATS = 5
"""Parts each timed burst is split into; the fastest part counts."""

Loop = Callable[[int], None]


def _active() -> Recorder:
    rec = _recorder.active
    if rec is None:
        raise RuntimeError("tracing is off")
    return rec


# Each loop records (or does nothing) ``n`` times. The event's fields are in
# locals, as they would be in a hook that receives them as arguments.


def empty_loop(n: int) -> None:
    for _ in range(n):
        pass


def append_local_block(n: int) -> None:
    append = _active().events().append
    clock = _recorder.clock
    code, coro, reason = CORO_BLOCK, COROUTINE, REASON
    for _ in range(n):
        append((code, clock(), coro, reason, None))


def events_append_block(n: int) -> None:
    rec = _active()
    clock = _recorder.clock
    code, coro, reason = CORO_BLOCK, COROUTINE, REASON
    for _ in range(n):
        events = rec.events()
        events.append((code, clock(), coro, reason, None))


def events_append_start(n: int) -> None:
    rec = _active()
    clock = _recorder.clock
    code, coro = CORO_START, COROUTINE
    for _ in range(n):
        events = rec.events()
        events.append((code, clock(), coro))


def events_append_block_nogc(n: int) -> None:
    gc.disable()
    try:
        events_append_block(n)
    finally:
        gc.enable()


_clock = _recorder.clock


def on_block(coroutine: int, reason: str) -> None:
    """A scheduling hook as the tracer will have them: check, then append."""
    rec = _recorder.active
    if rec is not None:
        rec.events().append((CORO_BLOCK, _clock(), coroutine, reason, None))


def hook_block(n: int) -> None:
    hook = on_block
    coro, reason = COROUTINE, REASON
    for _ in range(n):
        hook(coro, reason)


def log_loop(n: int) -> None:
    log = aiotrace.log
    for _ in range(n):
        log("db", "query done")


def noop(category: str, message: str) -> None:
    """A plain function with ``aiotrace.log``'s signature that does nothing."""


def noop_loop(n: int) -> None:
    fn = noop
    for _ in range(n):
        fn("db", "query done")


ON: dict[str, Loop] = {
    "empty loop (baseline)": empty_loop,
    "append CoroBlock, list in a local": append_local_block,
    "events().append CoroBlock": events_append_block,
    "events().append CoroStart": events_append_start,
    "events().append CoroBlock, gc off": events_append_block_nogc,
    "hook function CoroBlock": hook_block,
    "aiotrace.log, tracing on": log_loop,
}
OFF: dict[str, Loop] = {
    "empty loop, tracing off": empty_loop,
    "aiotrace.log, tracing off": log_loop,
    "empty function call": noop_loop,
}
RECORDS = {name for name in ON if name != "empty loop (baseline)"}


class Burst:
    """Burst times loops and keeps the drainer quiet between them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.recorded = 0
        self.tracer: aiotrace.Tracer | None = None

    def quiesce(self) -> None:
        """Waits until every event is encoded (or dropped) and written."""
        quiesce(self.tracer, self.recorded, 10)

    def time(self, name: str, fn: Loop) -> tuple[float, float]:
        """Returns thread-CPU and wall ns per iteration of ``fn``.

        ``fn`` runs ``n`` iterations in ``REPEATS`` back-to-back parts; the
        fastest part counts, which filters out most interrupts and
        preemptions on a shared machine. The median is then taken over rounds.
        """
        self.quiesce()
        part = self.n // REPEATS
        cpu = wall = float("inf")
        for _ in range(REPEATS):
            w0 = time.perf_counter_ns()
            c0 = time.thread_time_ns()
            fn(part)
            c1 = time.thread_time_ns()
            w1 = time.perf_counter_ns()
            cpu = min(cpu, (c1 - c0) / part)
            wall = min(wall, (w1 - w0) / part)
        if name in RECORDS:
            self.recorded += part * REPEATS
        return cpu, wall


def measure(
    rounds: int, n: int, probe: NoiseProbe
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Runs the interleaved rounds; returns CPU and wall ns per iteration."""
    rng = random.Random(7)
    cpu: dict[str, list[float]] = {k: [] for k in (*ON, *OFF)}
    wall: dict[str, list[float]] = {k: [] for k in (*ON, *OFF)}
    burst = Burst(n)
    # Warm up: register the thread's buffer, fill free lists, size the list.
    with aiotrace.tracing(MemorySink()) as burst.tracer:
        for name, fn in ON.items():
            burst.time(name, fn)
        burst.quiesce()
    for _ in range(rounds):
        probe.sample()
        burst.recorded = 0
        with aiotrace.tracing(MemorySink()) as tracer:
            burst.tracer = tracer
            order = list(ON.items())
            rng.shuffle(order)
            for name, fn in order:
                c, w = burst.time(name, fn)
                cpu[name].append(c)
                wall[name].append(w)
            burst.quiesce()
            if tracer.lost_events:
                print(f"warning: {tracer.lost_events} events lost", file=sys.stderr)
        burst.tracer = None
        order = list(OFF.items())
        rng.shuffle(order)
        for name, fn in order:
            c, w = burst.time(name, fn)
            cpu[name].append(c)
            wall[name].append(w)
    return cpu, wall


def sustained(rounds: int, n: int, probe: NoiseProbe) -> dict[str, list[float]]:
    """Records ``n`` events flat out per round while the drainer encodes.

    Returns per round, in ns per event: the recording loop's wall and thread
    CPU time, and the CPU time of the whole process (every thread) from the
    start of the loop until every event is encoded and written; and, under
    "lost", the events dropped over all rounds.
    """
    out: dict[str, list[float]] = {"loop wall": [], "loop cpu": [], "process": []}
    lost = 0
    for _ in range(rounds):
        probe.sample()
        with aiotrace.tracing(MemorySink()) as tracer:
            burst = Burst(n)
            burst.tracer = tracer
            burst.time("warm up", empty_loop)
            p0 = time.process_time_ns()
            w0 = time.perf_counter_ns()
            c0 = time.thread_time_ns()
            hook_block(n)
            c1 = time.thread_time_ns()
            w1 = time.perf_counter_ns()
            burst.recorded = n
            burst.quiesce()
            p1 = time.process_time_ns()
            lost += tracer.lost_events
        out["loop wall"].append((w1 - w0) / n)
        out["loop cpu"].append((c1 - c0) / n)
        out["process"].append((p1 - p0) / n)
    out["lost"] = [float(lost)]
    return out


def _row(name: str, s: Summary, base: Summary | None, wall: Summary) -> list[str]:
    net = s.median - base.median if base is not None else s.median
    return [
        name,
        f"{s.median:.0f}",
        f"{net:.0f}" if base is not None else "-",
        s.spread(),
        f"{wall.median:.0f}",
    ]


def main() -> None:
    args = arguments(__doc__ or "", rounds=15)
    n = 6_000 if args.quick else 30_000
    print(f"bench_record  {environment()}")
    print(
        f"{args.rounds} interleaved rounds; per round and variant, the fastest "
        f"of {REPEATS} runs of {n // REPEATS} iterations"
    )
    probe = NoiseProbe()
    cpu, wall = measure(args.rounds, n, probe)
    cs = {k: summarize(v) for k, v in cpu.items()}
    ws = {k: summarize(v) for k, v in wall.items()}
    base_on = cs["empty loop (baseline)"]
    base_off = cs["empty loop, tracing off"]
    headers = ["variant", "cpu ns/ev", "net of loop", "min-max", "wall ns/ev"]
    rows = [
        _row(k, cs[k], None if k.startswith("empty loop") else base_on, ws[k])
        for k in ON
    ]
    rows += [
        _row(k, cs[k], None if k.startswith("empty loop") else base_off, ws[k])
        for k in OFF
    ]
    print_table(
        "Hot path, tracing to a MemorySink (drainer idle during bursts)", headers, rows
    )

    ratio = summarize(
        [
            (a - b) / (c - b)
            for a, b, c in zip(
                cpu["aiotrace.log, tracing off"],
                cpu["empty loop, tracing off"],
                cpu["empty function call"],
                strict=True,
            )
        ]
    )
    gc_share = summarize(
        [
            a - b
            for a, b in zip(
                cpu["events().append CoroBlock"],
                cpu["events().append CoroBlock, gc off"],
                strict=True,
            )
        ]
    )
    print_table(
        "Ratios and differences (computed within each round, then the median)",
        ["quantity", "median", "min-max"],
        [
            [
                "aiotrace.log off / empty function call (net of loop)",
                f"{ratio.median:.2f}x",
                ratio.spread("{:.2f}"),
            ],
            [
                "garbage collector share of events().append CoroBlock, ns",
                f"{gc_share.median:.0f}",
                gc_share.spread(),
            ],
        ],
    )

    sn = 100_000 if args.quick else 600_000
    srounds = max(3, args.rounds // 2)
    s = sustained(srounds, sn, probe)
    sums = {k: summarize(v) for k, v in s.items() if k != "lost"}
    print_table(
        f"Sustained: hook function, {sn} CoroBlock events flat out per round, "
        f"drainer encoding concurrently ({srounds} rounds; "
        f"{s['lost'][0]:.0f} events lost)",
        ["quantity", "ns/ev median", "min-max"],
        [
            [
                "recording loop, wall",
                f"{sums['loop wall'].median:.0f}",
                sums["loop wall"].spread(),
            ],
            [
                "recording loop, thread cpu",
                f"{sums['loop cpu'].median:.0f}",
                sums["loop cpu"].spread(),
            ],
            [
                "process cpu, all threads, until encoded and written",
                f"{sums['process'].median:.0f}",
                sums["process"].spread(),
            ],
        ],
    )
    print(probe.report())


if __name__ == "__main__":
    main()
