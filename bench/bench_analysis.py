"""bench_analysis: time and memory of ``analysis.analyze`` and ``profile``.

Run: ``python bench/bench_analysis.py [--events N [N ...]] [--rounds N] [--quick]
[--passes P ...]``
(default 1 M events, about 1 min; ``--events 1000000 10000000`` adds the
10 M-event trace, about 6 min more). ``--write FILE --events N`` only writes
the workload; ``--trace FILE ...`` analyses existing traces instead.

For each size it writes a trace through the real writer
(``aiotrace.tracing(path)``; the events are appended to the recorder's list
for this thread, as hooks do, in chunks the drainer encodes as it would in
production). The workload is a synthetic server: one loop running ~200 live
coroutines of 12 coroutine functions that churn (each lives 1-60 steps, then
ends and a new one is created and labelled, so a 10 M-event trace names
about 97,000 coroutines), steps that yield or block on a queue, a lock,
I/O or a sleep, user tasks spanning a coroutine's life, regions and logs
inside steps, idle gaps, and a loop stall with stack samples every ~90k
events.

Then, in interleaved rounds (the order rotating), it times a typed read
alone (``for ev in Reader(f)``), ``analyze(path)`` (what ``aiotrace stats``
and ``stalls`` run: it reads the file's records, see
``aiotrace/analysis/_records.py``), ``analyze`` over typed Events (what
``aiotrace report`` runs, sharing its read with the timeline) and the four
``profile(path, kind)`` in CPU time (``time.process_time``: on a shared
machine wall time swings with the other tenants' load, CPU time much less),
each as a ratio to the same round's read (``--passes`` picks some).

Memory: a child process runs ``analyze(path)`` and reports its peak RSS
(VmHWM), and the parent's ``getrusage(RUSAGE_CHILDREN).ru_maxrss``
after it (which on Linux also counts the parent's RSS at fork, so VmHWM is
the honest figure). The target: a 10 M-event trace within 200 MB of RSS.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from _common import NoiseProbe, environment, print_table, read_typed, summarize

import aiotrace
from aiotrace import _recorder
from aiotrace._format.spec import C, ResourceKind

CHUNK = 50_000
"""Events appended at a time; the writer drains between chunks."""

LOOP = 1
FUNCTIONS = (
    "handle_request",
    "Server.serve_client",
    "fetch_user",
    "Cache.get",
    "Pool.acquire",
    "render_page",
    "send_email",
    "poll_queue",
    "heartbeat",
    "write_log",
    "Session.refresh",
    "metrics_push",
)
REASONS = ("queue", "lock", "io", "sleep", "sleep", "io")
STALL_STACK = (
    ("parse_json", "/srv/app/codec.py", 88),
    ("handle_request", "/srv/app/views.py", 41),
    ("Handle._run", "/usr/lib/python3.11/asyncio/events.py", 80),
)


class Workload:
    """Workload simulates a busy asyncio server's trace, chunk by chunk."""

    def __init__(self, seed: int, start_ns: int, thread: int) -> None:
        self.rng = random.Random(seed)
        self.t = start_ns
        self.thread = thread
        self.next_id = 1
        self.next_task = 1
        self.ready: deque[int] = deque()
        self.waiting: list[int] = []
        self.left: dict[int, int] = {}  # coroutine -> steps left
        self.task_of: dict[int, int] = {}
        self.since_stall = 0
        self.out: list[tuple[Any, ...]] = []

    def tick(self, lo: int = 1_000, hi: int = 20_000) -> int:
        self.t += self.rng.randint(lo, hi)
        return self.t

    def create(self) -> None:
        rng, out = self.rng, self.out
        cid = self.next_id
        self.next_id += 1
        t = self.tick()
        out.append((C["CoroCreate"], t, cid, None))
        label = rng.choice(FUNCTIONS)
        if rng.random() < 0.3:
            label += f" conn-{cid}"
        out.append((C["Label"], t, ResourceKind.COROUTINE, cid, label))
        self.left[cid] = rng.randint(1, 60)
        self.ready.append(cid)

    def chunks(self, n: int) -> Iterator[list[tuple[Any, ...]]]:
        """Yields lists of about CHUNK events, ``n`` in all."""
        out = self.out
        out.append((C["LoopStatus"], self.tick(), LOOP, 2))
        for _ in range(200):
            self.create()
        done = 0
        while done < n:
            while len(out) < CHUNK:
                self.iteration()
            chunk, self.out = out[: n - done], []
            out = self.out
            done += len(chunk)
            yield chunk

    def iteration(self) -> None:
        rng, out = self.rng, self.out
        if not self.ready:
            out.append((C["LoopIdle"], self.tick(), LOOP))
            out.append((C["LoopRun"], self.tick(50_000, 2_000_000), LOOP))
        # Wake a few waiters (timers, I/O, queue puts).
        for _ in range(min(len(self.waiting), rng.randint(1, 8))):
            cid = self.waiting.pop(rng.randrange(len(self.waiting)))
            out.append(
                (C["CoroUnblock"], self.tick(), cid, rng.choice(("timer", "io")))
            )
            self.ready.append(cid)
        for _ in range(len(self.ready)):
            self.step(self.ready.popleft())

    def step(self, cid: int) -> None:
        rng, out = self.rng, self.out
        out.append((C["CoroStart"], self.tick(), cid))
        self.since_stall += 1
        if self.since_stall >= 25_000:
            self.since_stall = 0
            self.stall(cid)
        task = self.task_of.get(cid)
        if task is None and rng.random() < 0.3:
            task = self.task_of[cid] = self.next_task
            self.next_task += 1
            out.append((C["TaskBegin"], self.tick(), task, 0, "request", None))
        if rng.random() < 0.2:
            kind = rng.choice(("db", "render", "auth"))
            out.append((C["RegionBegin"], self.tick(), task or 0, kind, None))
            out.append((C["RegionEnd"], self.tick(), task or 0, kind, None))
        if rng.random() < 0.1:
            out.append((C["Log"], self.tick(), task or 0, "http", f"GET /{cid}", None))
        self.left[cid] -= 1
        if self.left[cid] <= 0:
            if task is not None:
                out.append((C["TaskEnd"], self.tick(), task, None))
                del self.task_of[cid]
            out.append((C["CoroEnd"], self.tick(), cid, "returned"))
            del self.left[cid]
            self.create()
        elif rng.random() < 0.25:
            out.append((C["CoroYield"], self.tick(), cid, None))
            self.ready.append(cid)
        else:
            out.append((C["CoroBlock"], self.tick(), cid, rng.choice(REASONS), None))
            self.waiting.append(cid)

    def stall(self, cid: int) -> None:
        out = self.out
        t0 = self.t
        out.append((C["RangeBegin"], t0, "loop stall", ResourceKind.LOOP, LOOP, None))
        for _ in range(self.rng.randint(10, 30)):
            t = self.tick(10_000_000, 10_000_000)
            out.append((C["StackSample"], t, self.thread, LOOP, cid, STALL_STACK))
        out.append(
            (C["RangeEnd"], self.tick(), "loop stall", ResourceKind.LOOP, LOOP, None)
        )


def write_trace(path: str, n: int) -> float:
    """Records ``n`` workload events into ``path``; returns the seconds taken.

    Raises:
        RuntimeError: the writer dropped events.
    """
    t0 = time.monotonic()
    with aiotrace.tracing(path, runtime_events=False, metrics_interval=None) as tracer:
        rec = _recorder.active
        assert rec is not None
        buffer = rec.events()
        work = Workload(
            seed=n, start_ns=_recorder.clock(), thread=threading.get_native_id()
        )
        done = 0
        for chunk in work.chunks(n):
            buffer.extend(chunk)
            done += len(chunk)
            deadline = time.monotonic() + 120
            while tracer.events + tracer.lost_events < done:
                if not aiotrace.is_enabled() or time.monotonic() > deadline:
                    raise RuntimeError("the writer stopped or stalled; see above")
                time.sleep(0.005)
    if tracer.lost_events:
        raise RuntimeError(f"the writer dropped {tracer.lost_events} events")
    return time.monotonic() - t0


def run_analyze(path: str) -> int:
    from aiotrace.analysis import analyze

    return analyze(path).events


def run_analyze_events(path: str) -> int:
    """analyze() over typed Events (the report's way: it shares the read)."""
    from aiotrace.analysis import analyze
    from aiotrace.reader import Reader

    with open(path, "rb") as f:
        return analyze(iter(Reader(f))).events


def run_profile(kind: str) -> Any:
    def run(path: str) -> int:
        from aiotrace.analysis import profile

        return profile(path, kind).events

    return run


PASSES = {
    "analyze": run_analyze,
    "analyze (Events)": run_analyze_events,
    **{f"profile {k}": run_profile(k) for k in ("block", "sched", "exec", "stall")},
}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child_memory(path: str) -> None:
    """In a child process: analyses ``path``; prints events, RSS before, peak RSS."""
    from aiotrace.analysis import analyze

    before = _status_kib("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    s = analyze(path)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(s.events, before, _status_kib("VmHWM"), f"{seconds:.3f}", f"{cpu:.3f}")


def measure_memory(path: str) -> tuple[int, int, int, int, float, float]:
    """Returns (events, RSS before KiB, peak RSS KiB, ru_maxrss KiB, wall s, CPU s)."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child-memory", path],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout.split()
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(out[0]), int(out[1]), int(out[2]), maxrss, float(out[3]), float(out[4])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-memory":
        child_memory(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    p.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="200k events, 1 round")
    p.add_argument(
        "--trace",
        nargs="+",
        metavar="FILE",
        help="analyse these trace files instead of writing the workload "
        "(e.g. written earlier with --write)",
    )
    p.add_argument(
        "--passes",
        nargs="+",
        choices=list(PASSES),
        default=list(PASSES),
        help="what to time against the typed read (all by default)",
    )
    p.add_argument(
        "--write",
        metavar="FILE",
        help="only write the workload of --events N events into FILE",
    )
    args = p.parse_args()
    if args.quick:
        args.events, args.rounds = [200_000], 1
    if args.rounds < 1 or min(args.events) < 1000:
        p.error("--rounds must be at least 1 and --events at least 1000")
    if args.write:
        wrote = write_trace(args.write, args.events[0])
        print(f"{args.events[0]} events written to {args.write} in {wrote:.1f} s")
        return
    print(f"bench_analysis  {environment()}")
    rows, mem_rows = [], []
    probe = NoiseProbe()
    with tempfile.TemporaryDirectory(prefix="aiotrace-bench-") as tmp:
        for n_or_path in args.trace or args.events:
            if isinstance(n_or_path, int):
                path = os.path.join(tmp, f"analysis-{n_or_path}.trace")
                wrote = write_trace(path, n_or_path)
                how = f"{n_or_path} events written in {wrote:.1f} s"
            else:
                path = how = n_or_path
            size = os.path.getsize(path)
            total = read_typed(path)
            print(f"{how}: {total} typed events, {size / 2**20:.1f} MiB")
            names = ["read", *args.passes]
            cpu: dict[str, list[float]] = {k: [] for k in names}
            ratios: dict[str, list[float]] = {k: [] for k in names}
            fns = {"read": read_typed, **PASSES}
            for r in range(args.rounds):
                probe.sample()
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    t0 = time.process_time()
                    count = fns[name](path)
                    cpu[name].append(time.process_time() - t0)
                    if count != total:
                        raise RuntimeError(f"{name} saw {count} events, not {total}")
                for name in names:
                    ratios[name].append(cpu[name][-1] / cpu["read"][-1])
            for name in names:
                c, q = summarize(cpu[name]), summarize(ratios[name])
                rows.append(
                    [
                        f"{total}",
                        name,
                        f"{total / c.median / 1e6:.3f}",
                        f"{c.median:.2f}",
                        f"{q.median:.2f} ({q.lo:.2f}-{q.hi:.2f})",
                        f"{1e9 * c.median / total:.0f}",
                    ]
                )
            events, before, peak, maxrss, seconds, cpu = measure_memory(path)
            if events != total:
                raise RuntimeError(f"the child analysed {events} events")
            mem_rows.append(
                [
                    f"{events}",
                    f"{size / 2**20:.0f}",
                    f"{seconds:.1f} ({cpu:.1f})",
                    f"{before / 1024:.1f}",
                    f"{peak / 1024:.1f}",
                    f"{maxrss / 1024:.1f}",
                    "met" if peak * 1024 <= 200e6 else "NOT met",
                ]
            )
            if not args.trace:
                os.unlink(path)
    print_table(
        f"CPU time, median of {args.rounds} interleaved rounds; x read is the "
        "median of the within-round ratios",
        ["events", "pass", "M ev/s", "CPU s", "x read (min-max)", "ns/ev"],
        rows,
    )
    print(probe.report())
    print_table(
        "Memory: analyze(path) in a child process",
        [
            "events",
            "trace MiB",
            "wall s (CPU s)",
            "RSS before MiB",
            "peak RSS MiB",
            "ru_maxrss MiB",
            "<= 200 MB",
        ],
        mem_rows,
    )


if __name__ == "__main__":
    main()
