"""Shared helpers for the benchmarks: statistics, tables and synthetic workloads.

Not a benchmark itself. The ``bench_*.py`` scripts import it by name, which
works because Python puts a script's own directory first on ``sys.path``.

The synthetic workloads are lists of in-memory events, exactly the tuples the
hot path appends (``(code, time_ns, *args)``, see ``aiotrace/_recorder.py``),
produced by a small simulation of one event loop running ~100 coroutines that
ping-pong with ``asyncio.sleep(0)``, queues and short sleeps.
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

import aiotrace
from aiotrace._format.spec import C

Event = tuple[Any, ...]

CORO_CREATE = C["CoroCreate"]
CORO_START = C["CoroStart"]
CORO_BLOCK = C["CoroBlock"]
CORO_YIELD = C["CoroYield"]
CORO_UNBLOCK = C["CoroUnblock"]
LOOP_RUN = C["LoopRun"]
LOOP_IDLE = C["LoopIdle"]
LOG = C["Log"]
REGION_BEGIN = C["RegionBegin"]
REGION_END = C["RegionEnd"]

LOOP_ID = 1
"""The loop id the synthetic workloads use (a small int, as ids are assigned)."""

YIELD_SHARE = 0.3
"""Share of steps that end in ``await asyncio.sleep(0)`` (CoroYield)."""
QUEUE_SHARE = 0.4
"""Share of steps that pass a token on and block on a queue."""
SLEEP_NS = (500_000, 20_000_000)
"""The rest sleep (CoroBlock "sleep") for this long, uniform, in ns."""

WIDE_ID_BASE = 0x7F3A_5C00_0000
"""Where ``id()``-like coroutine ids start: a typical 64-bit heap address."""


# --------------------------------------------------------------------------
# Statistics and output


@dataclass(frozen=True)
class Summary:
    """Summary is the spread of one measured quantity over rounds."""

    median: float
    lo: float
    hi: float
    q1: float
    q3: float
    n: int

    def spread(self, fmt: str = "{:.0f}") -> str:
        """Returns ``"lo-hi"`` formatted with ``fmt``."""
        return f"{fmt.format(self.lo)}-{fmt.format(self.hi)}"

    def iqr(self, fmt: str = "{:.0f}") -> str:
        """Returns ``"q1-q3"`` formatted with ``fmt``."""
        return f"{fmt.format(self.q1)}-{fmt.format(self.q3)}"


def drive(coro: Coroutine[Any, Any, None]) -> None:
    """Runs a coroutine that never suspends to the end, without a loop."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the coroutine suspended")


def empty_loop(n: int) -> None:
    """The reference loop: ``n`` iterations doing nothing."""
    for _ in range(n):
        pass


def summarize(values: Sequence[float]) -> Summary:
    """Returns the median, min, max and quartiles of ``values``."""
    if not values:
        raise ValueError("no values to summarize")
    xs = sorted(values)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return Summary(statistics.median(xs), xs[0], xs[-1], q1, q3, len(xs))


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """Prints a plain-text table; the first column is left-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    print()
    print(title)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    sys.stdout.flush()


class NoiseProbe:
    """NoiseProbe tells whether the machine was busy during each round.

    On a shared machine, another tenant (on the sibling hyperthread, say)
    can slow everything down by 1.5-2x for seconds at a time. Sampling a
    fixed pure-Python loop once per round shows which rounds were slowed:
    a round whose sample is over ``DISTURBED`` times the fastest one.
    """

    DISTURBED = 1.25

    def __init__(self) -> None:
        self.samples: list[float] = []

    def sample(self) -> None:
        """Times the reference loop (about 0.5 ms), keeping the best of 3."""
        best = float("inf")
        for _ in range(3):
            t0 = time.thread_time_ns()
            acc = []
            for i in range(4000):
                acc.append((i, i))
            best = min(best, (time.thread_time_ns() - t0) / 4000)
        self.samples.append(best)

    def report(self) -> str:
        """Returns a line saying how many rounds were disturbed."""
        if not self.samples:
            return "machine: not probed"
        fastest = min(self.samples)
        slow = sum(1 for x in self.samples if x > self.DISTURBED * fastest)
        verdict = (
            "quiet"
            if slow == 0
            else "BUSY: medians are inflated, rerun for clean figures"
            if 2 * slow >= len(self.samples)
            else "partly busy: medians are robust to this, min-max are not"
        )
        return (
            f"machine: {slow} of {len(self.samples)} rounds disturbed "
            f"(reference loop over {self.DISTURBED}x its fastest): {verdict}"
        )


def quiesce(tracer: aiotrace.Tracer | None, recorded: int, timeout: float) -> None:
    """Waits until ``recorded`` events are encoded (or dropped) and written."""
    if tracer is None:
        return
    outbox = getattr(tracer, "_outbox", None)  # private: best effort
    deadline = time.monotonic() + timeout
    while (
        tracer.events + tracer.lost_events < recorded or getattr(outbox, "bytes", 0) > 0
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the drainer did not catch up in {timeout:g} s")
        time.sleep(0.002)


def environment() -> str:
    """Returns one line describing the interpreter, machine and date."""
    try:
        from msgpack import _cmsgpack  # noqa: F401

        packer = "C extension"
    except ImportError:
        packer = "pure Python"
    return (
        f"{datetime.date.today().isoformat()}  "
        f"{platform.python_implementation()} {platform.python_version()}  "
        f"{platform.system()} {platform.machine()}  {os.cpu_count()} CPUs  "
        f"aiotrace {aiotrace.__version__}{_revision()}  "
        f"msgpack {'.'.join(map(str, msgpack.version))} ({packer})"
    )


def _revision() -> str:
    """Returns " (commit abc1234)" for a git checkout of aiotrace, else ""."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(aiotrace.__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "aiotrace"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" (commit {head}{', modified' if dirty else ''})"


def arguments(description: str, rounds: int) -> argparse.Namespace:
    """Parses the options every benchmark takes: ``--rounds`` and ``--quick``."""
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    p.add_argument(
        "--rounds",
        type=int,
        default=rounds,
        help=f"measured rounds, interleaved (default {rounds})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 3 rounds and smaller inputs (numbers are not reliable)",
    )
    args = p.parse_args()
    if args.quick:
        args.rounds = 3
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


# --------------------------------------------------------------------------
# Synthetic workloads


class _Simulation:
    """_Simulation plays a scheduler of ``coroutines`` coroutines on one loop.

    Every step starts a ready coroutine (CoroStart), then it yields with
    ``sleep(0)`` (CoroYield, requeued; ``YIELD_SHARE`` of steps), hands a
    token to a coroutine waiting on a queue and blocks on its own queue
    (CoroUnblock of the peer, then CoroBlock "queue"; ``QUEUE_SHARE``), or
    sleeps (CoroBlock "sleep"; the rest) until its timer fires (CoroUnblock,
    at the start of a loop iteration). When nothing is ready the loop goes
    idle until the next timer (LoopIdle ... LoopRun). Consecutive events are
    1-20 us apart (uniform); sleeps last ``SLEEP_NS``.
    """

    def __init__(
        self,
        *,
        coroutines: int,
        seed: int,
        start_ns: int,
        annotate: bool,
        wide_ids: bool,
    ) -> None:
        self.rng = random.Random(seed)
        self.t = start_ns
        self.annotate = annotate
        base = WIDE_ID_BASE if wide_ids else 1
        step = 0x1F0 if wide_ids else 1
        self.ids = [base + i * step for i in range(coroutines)]
        self.out: list[Event] = []
        self.ready: deque[int] = deque(self.ids)
        self.queue_waiters: deque[int] = deque()
        self.timers: list[tuple[int, int]] = []  # a heap of (deadline, coroutine)
        self.unique = 0

    def tick(self) -> int:
        self.t += self.rng.randint(1_000, 20_000)
        return self.t

    def run(self, n: int) -> list[Event]:
        out = self.out
        for cid in self.ids:
            out.append((CORO_CREATE, self.tick(), cid, None))
        out.append((LOOP_RUN, self.tick(), LOOP_ID))
        while len(out) < n:
            self.iteration()
        del out[n:]
        return out

    def iteration(self) -> None:
        rng, out, timers = self.rng, self.out, self.timers
        if not self.ready:
            out.append((LOOP_IDLE, self.tick(), LOOP_ID))
            if timers:
                self.t = max(self.t, timers[0][0])
            else:
                self.t += rng.randint(50_000, 2_000_000)
            out.append((LOOP_RUN, self.tick(), LOOP_ID))
            if not timers and self.queue_waiters:
                # Something outside the loop (a socket, say) feeds a queue.
                self.wake(self.queue_waiters.popleft())
        # Timers that are due fire at the start of an iteration.
        while timers and timers[0][0] <= self.t:
            self.wake(heapq.heappop(timers)[1])
        for _ in range(len(self.ready)):
            self.step(self.ready.popleft())

    def wake(self, cid: int) -> None:
        self.out.append((CORO_UNBLOCK, self.tick(), cid, ""))
        self.ready.append(cid)

    def step(self, cid: int) -> None:
        rng, out = self.rng, self.out
        out.append((CORO_START, self.tick(), cid))
        region = None
        if self.annotate:
            region = self.annotations()
        r = rng.random()
        if region is not None:
            out.append((REGION_END, self.tick(), region[0], region[1], None))
        if r < YIELD_SHARE:
            out.append((CORO_YIELD, self.tick(), cid, None))
            self.ready.append(cid)
        elif r < YIELD_SHARE + QUEUE_SHARE:
            if self.queue_waiters:
                self.wake(self.queue_waiters.popleft())
            out.append((CORO_BLOCK, self.tick(), cid, "queue", None))
            self.queue_waiters.append(cid)
        else:
            out.append((CORO_BLOCK, self.tick(), cid, "sleep", None))
            deadline = self.t + rng.randint(*SLEEP_NS)
            heapq.heappush(self.timers, (deadline, cid))

    def annotations(self) -> tuple[int, str] | None:
        """Adds the user annotations of one step; returns an open region."""
        rng, out = self.rng, self.out
        region = None
        if rng.random() < 0.2:
            task = 1 + rng.randrange(20)
            region = (task, rng.choice(("handle", "parse", "query", "render")))
            out.append((REGION_BEGIN, self.tick(), region[0], region[1], None))
        if rng.random() < 0.3:
            category = rng.choice(("db", "http", "cache", "auth"))
            if rng.random() < 0.5:
                self.unique += 1
                message = f"request {self.unique} done in {rng.randrange(100)} ms"
            else:
                message = rng.choice(_MESSAGES)
            out.append((LOG, self.tick(), 0, category, message, None))
        return region


_MESSAGES = tuple(f"cache miss for key user:{i}" for i in range(50))


def scheduling_events(
    n: int,
    *,
    coroutines: int = 100,
    seed: int = 1,
    start_ns: int = 1_000_000_000_000,
    wide_ids: bool = False,
) -> list[Event]:
    """Returns ``n`` scheduling events (coroutine and loop transitions only).

    Coroutine ids are small integers unless ``wide_ids``, which uses
    ``id()``-sized 64-bit values instead, to show what they would cost.
    """
    sim = _Simulation(
        coroutines=coroutines,
        seed=seed,
        start_ns=start_ns,
        annotate=False,
        wide_ids=wide_ids,
    )
    return sim.run(n)


def annotated_events(
    n: int, *, coroutines: int = 100, seed: int = 2, start_ns: int = 1_000_000_000_000
) -> list[Event]:
    """Returns ``n`` scheduling events mixed with logs and regions.

    A step opens a region (20% of steps; 4 region types, 20 task ids) and
    logs (30% of steps; 4 categories; half the messages unique, half from a
    set of 50).
    """
    sim = _Simulation(
        coroutines=coroutines,
        seed=seed,
        start_ns=start_ns,
        annotate=True,
        wide_ids=False,
    )
    return sim.run(n)


def event_mix(events: Sequence[Event]) -> str:
    """Returns the share of each event type, e.g. ``"CoroStart 37%, ..."``."""
    from aiotrace._format.spec import BY_CODE

    counts: dict[int, int] = {}
    for ev in events:
        counts[ev[0]] = counts.get(ev[0], 0) + 1
    parts = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(
        f"{BY_CODE[code].name} {100 * k / len(events):.0f}%" for code, k in parts
    )


def read_typed(path: str) -> int:
    """Streams the trace's typed events; returns how many there were."""
    from aiotrace.reader import Reader

    n = 0
    with open(path, "rb") as f:
        for _ in Reader(f):
            n += 1
    return n
