"""bench_annotate: what user annotations (regions, logs, tasks) cost, in ns.

Run: ``python bench/bench_annotate.py [--rounds N] [--quick]`` (about 35 s).

Four tables:

- **Tracing off.** ``with aiotrace.region("x"): pass`` against a plain no-op
  context manager instantiated per use (``with Noop(): pass``) and against
  two calls of an empty function; ``async with aiotrace.region("x")``
  against an async no-op context manager, in a coroutine driven without an
  event loop (one ``coro.send(None)`` runs the whole loop: nothing
  suspends); a ``@aiotrace.region("x")``-decorated function (decorated while
  tracing is off, as at import time) against an undecorated one, sync and
  async; ``start_region("x").end()``, ``with new_task("t")`` (tasks exist
  with tracing off too) and ``aiotrace.log``. The ratios are net of the
  empty loop and taken within each round. Target: ``with region`` at most
  1.5x the no-op context manager (moonshot 1.2x).
- **Allocations, tracing off** (``tracemalloc``): the bytes still allocated
  after 10,000 iterations (net) and the peak above the start, per 10,000.
  "Allocates nothing avoidable" means a net of ~0 and a peak no higher than
  the no-op context manager's.
- **Tracing on**: a real tracer (``aiotrace.start(MemorySink())``, drain and
  writer threads live, as in ``bench_record``); each region, log and task
  operation, in ns per operation and per recorded event.
- **Annotation stacks**: a region and a log recorded with a given number of
  Python frames on the stack (10 and 30, counted from the outermost module
  frame to the frame that annotates; stacks keep at most 32), under a tracer
  started with ``annotation_stacks=False`` and one with ``True``, in the same
  rounds. Then, in fresh traces: bytes per event (marginal, for one
  annotation site repeated; its stack is interned once per generation and
  its first definition is shown separately), and the CPU time of the whole
  process (all threads) per event until encoded and written. A repeated
  stack takes a 1-byte id, as no stack does; events recorded with stacks are
  further apart, so their time deltas may take a byte more. The encoder
  looks each stack up in a dict, which hashes every code object on it, and
  a code object's hash grows with its bytecode (a module's covers all its
  functions): the frames outside the padding are this script's, its
  ``<module>`` and ``main`` among them, so the process CPU column depends
  on them as a real program's depends on its own frames.

Timing is as in ``bench_record``: thread CPU time (``time.thread_time_ns``),
each variant once per round in a shuffled order, each burst in 5 back-to-back
parts of which the fastest counts, the drainer quiesced before each burst.
The tables give, net of the empty loop: the median over rounds of the
within-round difference, the fastest round less the loop's fastest round,
and the min-max of the within-round differences.
"""

from __future__ import annotations

import contextvars
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from itertools import repeat
from types import FrameType, TracebackType

from _common import (
    NoiseProbe,
    Summary,
    arguments,
    drive,
    empty_loop,
    environment,
    print_table,
    quiesce,
    summarize,
)

import aiotrace
from aiotrace.sinks import MemorySink

REPEATS = 5
"""Parts each timed burst is split into; the fastest part counts."""
DEPTHS = (10, 30)
"""Python frames on the stack where the stack variants annotate."""

Loop = Callable[[int], None]


# --------------------------------------------------------------------------
# What the annotations are compared with


class Noop:
    """A plain context manager that does nothing, as anyone would write it."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class AsyncNoop:
    """A plain async context manager that does nothing."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def call(arg: str) -> None:
    """An empty function."""


def plain(x: int) -> int:
    return x


# region() returns Region | _Off; mypy calls a decorator of a union type
# untyped, though both __call__ are typed.
@aiotrace.region("x")
def decorated(x: int) -> int:
    return x


async def aplain() -> None:
    return None


@aiotrace.region("x")
async def adecorated() -> None:
    return None


# --------------------------------------------------------------------------
# The loops. Each runs its statement ``n`` times, written as a user would.


def region_loop(n: int) -> None:
    for _ in range(n):
        with aiotrace.region("x"):
            pass


def noop_cm_loop(n: int) -> None:
    for _ in range(n):
        with Noop():
            pass


def two_calls_loop(n: int) -> None:
    for _ in range(n):
        call("x")
        call("x")


def start_region_loop(n: int) -> None:
    for _ in range(n):
        aiotrace.start_region("x").end()


def decorated_loop(n: int) -> None:
    for i in range(n):
        decorated(i)


def plain_loop(n: int) -> None:
    for i in range(n):
        plain(i)


async def _async_empty(n: int) -> None:
    for _ in range(n):
        pass


async def _async_region(n: int) -> None:
    for _ in range(n):
        async with aiotrace.region("x"):
            pass


async def _async_noop(n: int) -> None:
    for _ in range(n):
        async with AsyncNoop():
            pass


async def _async_decorated(n: int) -> None:
    for _ in range(n):
        await adecorated()


async def _async_plain(n: int) -> None:
    for _ in range(n):
        await aplain()


def async_empty_loop(n: int) -> None:
    drive(_async_empty(n))


def async_region_loop(n: int) -> None:
    drive(_async_region(n))


def async_noop_loop(n: int) -> None:
    drive(_async_noop(n))


def async_decorated_loop(n: int) -> None:
    drive(_async_decorated(n))


def async_plain_loop(n: int) -> None:
    drive(_async_plain(n))


def log_loop(n: int) -> None:
    for _ in range(n):
        aiotrace.log("db", "query done")


def with_task_loop(n: int) -> None:
    for _ in range(n):
        with aiotrace.new_task("t"):
            pass


def _task_end_loop(n: int) -> None:
    for _ in range(n):
        aiotrace.new_task("t").end()


def task_end_loop(n: int) -> None:
    # Each new_task stays current (end() does not restore the previous one),
    # so run in a copy of the context, dropped afterwards.
    contextvars.copy_context().run(_task_end_loop, n)


OFF: dict[str, Loop] = {
    "empty loop": empty_loop,
    "with region('x')": region_loop,
    "with Noop()": noop_cm_loop,
    "two empty function calls": two_calls_loop,
    "start_region('x').end()": start_region_loop,
    "@region function call": decorated_loop,
    "plain function call": plain_loop,
    "async: empty loop": async_empty_loop,
    "async with region('x')": async_region_loop,
    "async with AsyncNoop()": async_noop_loop,
    "await @region async function": async_decorated_loop,
    "await plain async function": async_plain_loop,
    "with new_task('t')": with_task_loop,
    "aiotrace.log('db', 'query done')": log_loop,
}
OFF_BASE = {
    k: "async: empty loop" if k.startswith(("async", "await")) else "empty loop"
    for k in OFF
}

ON: dict[str, tuple[Loop, int]] = {
    # name: (loop, events recorded per iteration)
    "empty loop": (empty_loop, 0),
    "with region('x')": (region_loop, 2),
    "start_region('x').end()": (start_region_loop, 2),
    "@region function call": (decorated_loop, 2),
    "async: empty loop": (async_empty_loop, 0),
    "async with region('x')": (async_region_loop, 2),
    "await @region async function": (async_decorated_loop, 2),
    "aiotrace.log('db', 'query done')": (log_loop, 1),
    "with new_task('t')": (with_task_loop, 2),
    "new_task('t').end()": (task_end_loop, 2),
}
ON_BASE = {
    k: "async: empty loop" if k.startswith(("async", "await")) else "empty loop"
    for k in ON
}


# --------------------------------------------------------------------------
# Call depth


def _frames_above() -> int:
    """Returns how many Python frames its caller's frame sits on, itself included."""
    frame: FrameType | None = sys._getframe(1)
    k = 0
    while frame is not None:
        k += 1
        frame = frame.f_back
    return k


def _nest(k: int, fn: Loop, n: int) -> None:
    if k:
        _nest(k - 1, fn, n)
    else:
        fn(n)


def at_depth(depth: int, fn: Loop) -> Loop:
    """Returns a loop that runs ``fn`` as the ``depth``-th Python frame."""

    def nested(n: int) -> None:
        pad = depth - _frames_above() - 2  # -2: _nest(0) and fn itself
        if pad < 0:
            raise RuntimeError(f"already {depth - pad} frames deep")
        _nest(pad, fn, n)

    return nested


def _region_depth_probe(n: int) -> None:
    with aiotrace.region("x"):
        _seen.append(_frames_above())


_seen: list[int] = []


def check_depths() -> None:
    """Checks that ``at_depth`` puts the annotating frame where it says."""
    for depth in DEPTHS:
        _seen.clear()
        at_depth(depth, _region_depth_probe)(1)
        if _seen != [depth]:
            raise RuntimeError(f"at_depth({depth}) ran at {_seen}")


STACKED: dict[str, tuple[Loop, int]] = {}
for _depth in DEPTHS:
    STACKED[f"with region('x'), {_depth} frames"] = (at_depth(_depth, region_loop), 2)
    STACKED[f"aiotrace.log, {_depth} frames"] = (at_depth(_depth, log_loop), 1)
STACKED["empty loop"] = (empty_loop, 0)


# --------------------------------------------------------------------------
# Timing


class Burst:
    """Burst times loops and keeps the drainer quiet between them."""

    def __init__(self) -> None:
        self.recorded = 0
        self.tracer: aiotrace.Tracer | None = None

    def quiesce(self) -> None:
        """Waits until every event is encoded (or dropped) and written."""
        quiesce(self.tracer, self.recorded, 30)

    def time(self, fn: Loop, n: int, events: int = 0) -> float:
        """Returns thread-CPU ns per iteration of ``fn``: the fastest of 5 parts."""
        self.quiesce()
        part = max(1, n // REPEATS)
        best = float("inf")
        for _ in range(REPEATS):
            c0 = time.thread_time_ns()
            fn(part)
            c1 = time.thread_time_ns()
            best = min(best, (c1 - c0) / part)
        self.recorded += part * REPEATS * events
        return best


def measure(
    rounds: int, sizes: tuple[int, int, int], probe: NoiseProbe
) -> dict[str, list[float]]:
    """Runs the interleaved rounds; returns ns per iteration by variant.

    Keys: ``off:<name>``, ``on:<name>`` and ``stacks <False|True>:<name>``.
    """
    n_off, n_on, n_stacks = sizes
    rng = random.Random(11)
    out: dict[str, list[float]] = {}

    def run(
        prefix: str, burst: Burst, loops: dict[str, tuple[Loop, int]], n: int
    ) -> None:
        order = list(loops.items())
        rng.shuffle(order)
        for name, (fn, events) in order:
            out.setdefault(f"{prefix}:{name}", []).append(burst.time(fn, n, events))

    off = {k: (fn, 0) for k, fn in OFF.items()}
    # Warm up every path once (caches, free lists, the thread's buffer).
    run("warm", Burst(), off, n_off // 10)
    with aiotrace.tracing(MemorySink()) as tracer:
        burst = Burst()
        burst.tracer = tracer
        run("warm", burst, ON, n_on // 10)
        run("warm", burst, STACKED, n_stacks // 10)
        burst.quiesce()
    for r in range(rounds):
        probe.sample()
        run("off", Burst(), off, n_off)
        for stacks in (False, True) if r % 2 == 0 else (True, False):
            with aiotrace.tracing(MemorySink(), annotation_stacks=stacks) as tracer:
                burst = Burst()
                burst.tracer = tracer
                if not stacks:
                    run("on", burst, ON, n_on)
                run(f"stacks {stacks}", burst, STACKED, n_stacks)
                burst.quiesce()
                if tracer.lost_events:
                    print(f"warning: {tracer.lost_events} events lost", file=sys.stderr)
    return {k: v for k, v in out.items() if not k.startswith("warm:")}


def allocations(n: int) -> dict[str, tuple[int, int]]:
    """Returns (net bytes, peak bytes above the start) per ``n`` iterations.

    Tracing is off. The loops iterate over ``itertools.repeat`` so that the
    loop itself allocates nothing (``range`` makes an int per iteration).
    """

    def loop(stmt: Callable[[], object]) -> Loop:
        def run(k: int) -> None:
            for _ in repeat(None, k):
                stmt()

        return run

    def with_region() -> None:
        with aiotrace.region("x"):
            pass

    def with_noop() -> None:
        with Noop():
            pass

    def async_region() -> None:
        drive(_async_region(1))

    def async_noop() -> None:
        drive(_async_noop(1))

    variants: dict[str, Loop] = {
        "empty function (baseline)": loop(lambda: None),
        "with region('x')": loop(with_region),
        "with Noop()": loop(with_noop),
        "start_region('x').end()": loop(lambda: aiotrace.start_region("x").end()),
        "@region function call": loop(lambda: decorated(1)),
        "async with region('x') (+ a coroutine per iteration)": loop(async_region),
        "async with AsyncNoop() (+ a coroutine per iteration)": loop(async_noop),
    }
    out: dict[str, tuple[int, int]] = {}
    for name, fn in variants.items():
        fn(1000)
        tracemalloc.start()
        try:
            fn(1000)
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            fn(n)
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        out[name] = (after - before, peak - before)
    return out


def trace_size(stacks: bool, fn: Loop, n: int, events: int) -> tuple[int, float]:
    """Traces ``n`` iterations of ``fn`` in a fresh trace to a MemorySink.

    Returns the trace's size in bytes once stopped, and the CPU time of the
    whole process (every thread) in ns from the start of the loop until
    every event it recorded is encoded and written.
    """
    sink = MemorySink()
    with aiotrace.tracing(sink, annotation_stacks=stacks) as tracer:
        burst = Burst()
        burst.tracer = tracer
        p0 = time.process_time_ns()
        fn(n)
        burst.recorded = n * events
        burst.quiesce()
        p1 = time.process_time_ns()
        if tracer.lost_events:
            print(f"warning: {tracer.lost_events} events lost", file=sys.stderr)
    return len(sink), float(p1 - p0)


def stack_costs(
    rounds: int, n: int, probe: NoiseProbe
) -> dict[tuple[str, bool], tuple[float, float, Summary]]:
    """Measures stacks in fresh traces, for each STACKED variant and setting.

    Returns, by (variant, stacks): the marginal bytes per event (one
    annotation site repeated ``n`` times), the bytes its first occurrence
    adds to an empty trace beyond that, and the process CPU ns per event.
    """
    out: dict[tuple[str, bool], tuple[float, float, Summary]] = {}
    cpu: dict[tuple[str, bool], list[float]] = {}
    sizes: dict[tuple[str, bool], tuple[int, int, int]] = {}
    variants = [(k, v) for k, v in STACKED.items() if v[1]]
    for _ in range(rounds):
        probe.sample()
        for name, (fn, events) in variants:
            for stacks in (False, True):
                empty, _ = trace_size(stacks, fn, 0, events)
                one, _ = trace_size(stacks, fn, 1, events)
                full, ns = trace_size(stacks, fn, n + 1, events)
                sizes[name, stacks] = (empty, one, full)
                cpu.setdefault((name, stacks), []).append(ns / ((n + 1) * events))
    for (name, stacks), (empty, one, full) in sizes.items():
        events = STACKED[name][1]
        marginal = (full - one) / (n * events)
        first = one - empty - marginal * events
        out[name, stacks] = (marginal, first, summarize(cpu[name, stacks]))
    return out


class Nets:
    """Nets holds one group's times (``off``, ``on``, ...) net of its loops.

    ``rounds[name]`` is the variant's time minus its baseline loop's, round
    by round; ``fastest[name]`` is the variant's fastest round minus the
    loop's fastest round (each fastest round is robust on its own to a
    round that a busy machine slowed down).
    """

    def __init__(
        self, times: dict[str, list[float]], prefix: str, base: dict[str, str]
    ) -> None:
        self.raw = {
            k[len(prefix) + 1 :]: v
            for k, v in times.items()
            if k.startswith(f"{prefix}:")
        }
        self.rounds: dict[str, list[float]] = {}
        self.fastest: dict[str, float] = {}
        for name, b_name in base.items():
            if name == b_name:
                continue
            a, b = self.raw[name], self.raw[b_name]
            self.rounds[name] = [x - y for x, y in zip(a, b, strict=True)]
            self.fastest[name] = min(a) - min(b)

    def ratio(self, a: str, b: str) -> tuple[Summary, float]:
        """Returns the within-round ratios a/b and the ratio of the fastest nets."""
        r = [x / y for x, y in zip(self.rounds[a], self.rounds[b], strict=True)]
        return summarize(r), self.fastest[a] / self.fastest[b]


def verdict(ratio: float, target: float, moonshot: float) -> str:
    if ratio <= moonshot:
        return "met, and the moonshot"
    if ratio <= target:
        return "met (not the moonshot)"
    return "NOT met"


def main() -> None:
    args = arguments(__doc__ or "", rounds=15)
    scale = 5 if args.quick else 1
    sizes = (50_000 // scale, 20_000 // scale, 5_000 // scale)
    print(f"bench_annotate  {environment()}")
    print(
        f"{args.rounds} interleaved rounds; per round and variant, the fastest of "
        f"{REPEATS} runs of {sizes[0] // REPEATS} iterations (tracing off), "
        f"{sizes[1] // REPEATS} (on), {sizes[2] // REPEATS} (stacks)"
    )
    check_depths()
    probe = NoiseProbe()
    times = measure(args.rounds, sizes, probe)

    # Tracing off.
    off = Nets(times, "off", OFF_BASE)
    rows = []
    for name in OFF:
        s = summarize(off.raw[name])
        if name in off.rounds:
            net = summarize(off.rounds[name])
            rows.append(
                [
                    name,
                    f"{s.median:.1f}",
                    f"{net.median:.1f}",
                    f"{off.fastest[name]:.1f}",
                    net.spread("{:.1f}"),
                ]
            )
        else:
            rows.append([name, f"{s.median:.1f}", "-", "-", s.spread("{:.1f}")])
    print_table(
        "Tracing off: thread CPU ns per iteration, median over rounds; net of the "
        "loop: median and min-max within rounds, fastest round less the loop's "
        "fastest (the loops' own rows: min-max of their times)",
        ["variant", "ns/op", "net", "fastest net", "min-max"],
        rows,
    )

    region, noop, calls = "with region('x')", "with Noop()", "two empty function calls"
    comparisons = [
        (f"{region} / {noop}", region, noop, True),
        (f"{region} / {calls}", region, calls, False),
        (f"{noop} / {calls}", noop, calls, False),
        ("start_region('x').end() / " + calls, "start_region('x').end()", calls, False),
        (
            "async with region('x') / async with AsyncNoop()",
            "async with region('x')",
            "async with AsyncNoop()",
            True,
        ),
        (
            "@region function call / plain function call",
            "@region function call",
            "plain function call",
            False,
        ),
        (
            "await @region async fn / await plain async fn",
            "await @region async function",
            "await plain async function",
            False,
        ),
    ]
    rows = []
    for label, a, b, targeted in comparisons:
        r, fastest = off.ratio(a, b)
        rows.append(
            [
                label,
                f"{r.median:.2f}x",
                r.spread("{:.2f}"),
                f"{fastest:.2f}x",
                verdict(r.median, 1.5, 1.2) if targeted else "-",
            ]
        )
    print_table(
        "Tracing off: ratios net of the empty loop (within each round, then the "
        "median; and of the fastest nets). Target <= 1.5x, moonshot <= 1.2x",
        ["ratio", "median", "min-max", "fastest", "target (median)"],
        rows,
    )

    n_alloc = 10_000
    alloc = allocations(n_alloc)
    print_table(
        f"Tracing off: tracemalloc, bytes per {n_alloc} iterations (after warming up)",
        ["statement", "net bytes", "peak above start"],
        [[k, f"{net}", f"{peak}"] for k, (net, peak) in alloc.items()],
    )

    # Tracing on.
    on = Nets(times, "on", ON_BASE)
    rows = []
    for name, (_, events) in ON.items():
        if name not in on.rounds:
            continue
        net = summarize(on.rounds[name])
        rows.append(
            [
                name,
                f"{events}",
                f"{net.median:.0f}",
                f"{on.fastest[name]:.0f}",
                net.spread(),
                f"{net.median / events:.0f}",
                f"{on.fastest[name] / events:.0f}",
            ]
        )
    print_table(
        "Tracing on, MemorySink, annotation_stacks=False: thread CPU ns per "
        "operation net of the loop (drainer idle during bursts): median, fastest, "
        "min-max; and per event, median and fastest",
        ["operation", "events", "ns/op", "fastest", "min-max", "ns/ev", "fastest"],
        rows,
    )

    # Stacks.
    base = dict.fromkeys(STACKED, "empty loop")
    st_off = Nets(times, "stacks False", base)
    st_on = Nets(times, "stacks True", base)
    n_size = sizes[2]
    costs = stack_costs(max(3, args.rounds // 5), n_size, probe)
    rows = []
    for name, (_, events) in STACKED.items():
        if not events:
            continue
        s_off = summarize([x / events for x in st_off.rounds[name]])
        s_on = summarize([x / events for x in st_on.rounds[name]])
        d = summarize(
            [
                (y - x) / events
                for x, y in zip(st_off.rounds[name], st_on.rounds[name], strict=True)
            ]
        )
        m0, first0, cpu0 = costs[name, False]
        m1, first1, cpu1 = costs[name, True]
        rows.append(
            [
                name,
                f"{s_off.median:.0f} ({st_off.fastest[name] / events:.0f})",
                f"{s_on.median:.0f} ({st_on.fastest[name] / events:.0f})",
                f"{d.median:+.0f}",
                f"{m0:.2f} / {m1:.2f}",
                f"{first1 - first0:.0f}",
                f"{cpu0.median:.0f} / {cpu1.median:.0f}",
            ]
        )
    print_table(
        "Annotation stacks off vs on: thread CPU ns per event net of the loop, "
        "median (fastest); the extra for stacks, within rounds; then in fresh "
        f"traces of {n_size} operations: bytes per event off / on, the bytes the "
        "first stack adds (once per generation), and process CPU ns per event "
        "(all threads, until written) off / on",
        [
            "variant",
            "off ns/ev",
            "on ns/ev",
            "extra",
            "bytes/ev",
            "1st stack B",
            "process ns/ev",
        ],
        rows,
    )
    print(probe.report())


if __name__ == "__main__":
    main()
