"""bench_probe: what firing a tracepoint costs, in ns, with and without probes.

Run: ``python bench/bench_probe.py [--rounds N] [--quick]`` (about 15 s).

Three tables, in thread CPU ns per firing, net of the empty loop:

- **Nothing attached.** ``trace_x("bob")``, a sync tracepoint, against an
  empty function called the same way (``empty("bob")``); a ``record=True``
  tracepoint with tracing off (a second check); ``await atrace_x("bob")``,
  an async tracepoint, against awaiting an empty ``async def``, in a
  coroutine driven without an event loop (one ``coro.send(None)`` runs the
  whole loop: nothing suspends). Two designs that ``aiotrace.probe`` did
  not take are measured too, for the record: an object whose ``__call__``
  checks the same attribute, and a closure that takes ``*args``. Ratios
  are taken within each round, then the median. Target: a tracepoint costs
  about one attribute check more than an empty function call.
- **One probe attached.** The same tracepoints with one empty probe,
  against calling that probe directly: what dispatch costs.
- **Tracing on.** A ``record=True`` tracepoint fired while tracing into a
  ``MemorySink`` (each firing is one LOG), against ``aiotrace.log``.

Timing is ``bench_annotate``'s: each variant once per round in a shuffled
order, each burst in 5 back-to-back parts of which the fastest counts, the
drainer quiesced before each burst while tracing.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    NoiseProbe,
    arguments,
    drive,
    empty_loop,
    environment,
    print_table,
    quiesce,
    summarize,
)

import aiotrace
from aiotrace import probe
from aiotrace.sinks import MemorySink

REPEATS = 5
"""Parts each timed burst is split into; the fastest part counts."""

Loop = Callable[[int], None]


@probe.tracepoint
def trace_x(who: str) -> None:
    """A sync tracepoint."""


@probe.tracepoint(record=True)
def trace_rec(who: str) -> None:
    """A sync tracepoint recorded in the trace while tracing."""


@probe.tracepoint
async def atrace_x(who: str) -> None:
    """An async tracepoint."""


def empty(who: str) -> None:
    """An empty function."""


def empty_probe(who: str) -> None:
    """The probe attached in the second table: does nothing."""


async def aempty(who: str) -> None:
    """An empty coroutine function."""


class _State:
    __slots__ = ("probes",)

    def __init__(self) -> None:
        self.probes: tuple[object, ...] = ()


class CallObject:
    """The rejected design: an object with ``__call__`` checking ``probes``."""

    __slots__ = ("probes",)

    def __init__(self) -> None:
        self.probes: tuple[object, ...] = ()

    def __call__(self, who: str) -> None:
        if self.probes:
            raise AssertionError("nothing is attached")


def _star_closure() -> Callable[..., None]:
    state = _State()

    def fire(*args: Any) -> None:
        if state.probes:
            raise AssertionError("nothing is attached")

    return fire


call_object = CallObject()
star_closure = _star_closure()


def calls(fn: Callable[[str], object]) -> Loop:
    """Returns a loop that calls ``fn("bob")`` ``n`` times."""

    def loop(n: int) -> None:
        for _ in range(n):
            fn("bob")

    return loop


async def _async_empty(n: int) -> None:
    for _ in range(n):
        pass


async def _async_tracepoint(n: int) -> None:
    for _ in range(n):
        await atrace_x("bob")


async def _async_plain(n: int) -> None:
    for _ in range(n):
        await aempty("bob")


def async_empty_loop(n: int) -> None:
    drive(_async_empty(n))


def async_tracepoint_loop(n: int) -> None:
    drive(_async_tracepoint(n))


def async_plain_loop(n: int) -> None:
    drive(_async_plain(n))


def log_loop(n: int) -> None:
    for _ in range(n):
        aiotrace.log("bench_probe.trace_rec", "who='bob'")


OFF: dict[str, Loop] = {
    "empty loop": empty_loop,
    "empty('bob')": calls(empty),
    "trace_x('bob')": calls(trace_x),
    "trace_rec('bob'), record=True": calls(trace_rec),
    "object with __call__ (rejected)": calls(call_object),
    "closure taking *args (rejected)": calls(star_closure),
    "async: empty loop": async_empty_loop,
    "await aempty('bob')": async_plain_loop,
    "await atrace_x('bob')": async_tracepoint_loop,
}
ATTACHED: dict[str, Loop] = {
    "empty loop": empty_loop,
    "empty_probe('bob'), called directly": calls(empty_probe),
    "trace_x('bob'), one probe": calls(trace_x),
    "async: empty loop": async_empty_loop,
    "await atrace_x('bob'), one sync probe": async_tracepoint_loop,
}
ON: dict[str, Loop] = {
    "empty loop": empty_loop,
    "trace_rec('bob'), tracing on": calls(trace_rec),
    "aiotrace.log(category, message)": log_loop,
}


def _base(name: str) -> str:
    return "async: empty loop" if name.startswith(("async", "await")) else "empty loop"


class Burst:
    """Burst times loops and keeps the drainer quiet between them."""

    def __init__(self, tracer: aiotrace.Tracer | None = None) -> None:
        self.recorded = 0
        self.tracer = tracer

    def time(self, fn: Loop, n: int, events: int = 0) -> float:
        """Returns thread-CPU ns per iteration of ``fn``: the fastest of 5 parts."""
        quiesce(self.tracer, self.recorded, 30)
        part = max(1, n // REPEATS)
        best = float("inf")
        for _ in range(REPEATS):
            c0 = time.thread_time_ns()
            fn(part)
            c1 = time.thread_time_ns()
            best = min(best, (c1 - c0) / part)
        self.recorded += part * REPEATS * events
        return best


def measure(rounds: int, n: int, noise: NoiseProbe) -> dict[str, list[float]]:
    """Runs the interleaved rounds; returns ns per iteration by variant.

    Keys: ``off:<name>``, ``attached:<name>`` and ``on:<name>``.
    """
    rng = random.Random(7)
    out: dict[str, list[float]] = {}

    def run(prefix: str, loops: dict[str, Loop], burst: Burst, events: int) -> None:
        order = list(loops.items())
        rng.shuffle(order)
        for name, fn in order:
            ev = 0 if name.endswith("empty loop") else events
            out.setdefault(f"{prefix}:{name}", []).append(burst.time(fn, n, ev))

    def one_round(prefix: str) -> None:
        run(f"{prefix}off", OFF, Burst(), 0)
        with probe.ProbeGroup() as g:
            trace_x.attach(empty_probe, group=g)
            atrace_x.attach(empty_probe, group=g)
            run(f"{prefix}attached", ATTACHED, Burst(), 0)
        with aiotrace.tracing(MemorySink()) as tracer:
            burst = Burst(tracer)
            run(f"{prefix}on", ON, burst, 1)
            quiesce(tracer, burst.recorded, 30)
            if tracer.lost_events:
                print(f"warning: {tracer.lost_events} events lost", file=sys.stderr)

    one_round("warm ")
    for _ in range(rounds):
        noise.sample()
        one_round("")
    return {k: v for k, v in out.items() if not k.startswith("warm ")}


class Nets:
    """Nets holds one group's times net of the empty loop.

    ``rounds[name]`` is the variant's time minus its loop's, round by round;
    ``fastest[name]`` its fastest round minus the loop's fastest round (each
    robust on its own to a round that a busy machine slowed down).
    """

    def __init__(self, times: dict[str, list[float]], prefix: str) -> None:
        raw = {k.split(":", 1)[1]: v for k, v in times.items() if k.startswith(prefix)}
        self.rounds: dict[str, list[float]] = {}
        self.fastest: dict[str, float] = {}
        for name, v in raw.items():
            if name.endswith("empty loop"):
                continue
            base = raw[_base(name)]
            self.rounds[name] = [x - y for x, y in zip(v, base, strict=True)]
            self.fastest[name] = min(v) - min(base)


def table(title: str, nets: Nets, pairs: list[tuple[str, str]]) -> None:
    """Prints each variant against its reference: ns, extra ns and ratios."""
    rows = []
    for name, ref in pairs:
        a, b = nets.rounds[name], nets.rounds[ref]
        r = summarize([x / y for x, y in zip(a, b, strict=True)])
        d = summarize([x - y for x, y in zip(a, b, strict=True)])
        fa, fb = nets.fastest[name], nets.fastest[ref]
        rows.append(
            [
                name,
                f"{summarize(a).median:.1f} ({fa:.1f})",
                ref,
                f"{summarize(b).median:.1f} ({fb:.1f})",
                f"{d.median:+.1f} ({fa - fb:+.1f})",
                f"{r.median:.2f}x ({fa / fb:.2f}x)",
                r.spread("{:.2f}"),
            ]
        )
    print_table(
        title,
        [
            "variant",
            "ns (fastest)",
            "against",
            "ns (fastest)",
            "extra",
            "ratio",
            "min-max",
        ],
        rows,
    )


def main() -> None:
    args = arguments(__doc__ or "", rounds=15)
    n = 40_000 if args.quick else 200_000
    print(f"bench_probe  {environment()}")
    print(
        f"{args.rounds} interleaved rounds; per round and variant, the fastest of "
        f"{REPEATS} runs of {n // REPEATS} iterations"
    )
    noise = NoiseProbe()
    times = measure(args.rounds, n, noise)
    off = Nets(times, "off:")
    table(
        "Nothing attached, tracing off: thread CPU ns per firing net of the loop, "
        "median over rounds (fastest round less the loop's fastest); extra and "
        "ratio against the reference: median within rounds (of the fastest)",
        off,
        [
            ("trace_x('bob')", "empty('bob')"),
            ("trace_rec('bob'), record=True", "empty('bob')"),
            ("object with __call__ (rejected)", "empty('bob')"),
            ("closure taking *args (rejected)", "empty('bob')"),
            ("await atrace_x('bob')", "await aempty('bob')"),
        ],
    )
    attached = Nets(times, "attached:")
    table(
        "One empty probe attached: the firing against calling the probe directly",
        attached,
        [
            ("trace_x('bob'), one probe", "empty_probe('bob'), called directly"),
            (
                "await atrace_x('bob'), one sync probe",
                "empty_probe('bob'), called directly",
            ),
        ],
    )
    on = Nets(times, "on:")
    table(
        "Tracing on, MemorySink: a record=True firing (one LOG) against "
        "aiotrace.log (drainer idle during bursts)",
        on,
        [("trace_rec('bob'), tracing on", "aiotrace.log(category, message)")],
    )
    print(noise.report())


if __name__ == "__main__":
    main()
