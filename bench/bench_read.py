"""bench_read: reader throughput (events/s) and memory while streaming.

Run: ``python bench/bench_read.py [--rounds N] [--quick] [--against REV]``
(about 2 min; ``--against`` adds about 2 min).

Writes a trace of 500,000 synthetic scheduling events (``bench/_common.py``)
through the real writer: ``aiotrace.start(path)``, then the events are
appended to the recorder's list for this thread, as hooks do, in chunks
that the drainer encodes as it would in production; then ``aiotrace.stop()``.
Then, in interleaved rounds, it times reading the file back:

- raw: ``for ev in Reader(f).raw()`` (decoded and validated, file order);
- typed: ``for ev in Reader(f)`` (ordered, with state tracking, Event
  objects), once with the C extension's loops (``typed C``) and once with
  their pure-Python twin (``typed Python``), when the extension is built.

Rates are events per second of CPU time (``time.process_time``: this
process only, so another tenant's load on a shared machine moves them less
than wall time). It reports the median over rounds, with min-max, and the
median of the per-round ratios C / Python. Memory: a child
process streams the 500k-event trace, another one a trace twice as long
(each raw, then typed), and each reports its peak RSS growth (VmHWM in
``/proc/self/status``, so Linux only) over its RSS before reading; equal
growth means memory does not grow with the length of the trace.

Execution trace: bench_sched's four workloads (ping-pong, create+await,
queue ping-pong, uvloop ping-pong; a fifth of the size with ``--quick``)
run whole under ``aiotrace.tracing(path)``, so the reader gets what the
execution tracer really writes (step records, creations, labels, wakers),
and the same interleaved rounds time reading it back, raw and typed.

``--against REV`` also compares the typed reader of git revision ``REV``
(its ``aiotrace`` package, exported with ``git archive`` into a temporary
directory) with the working tree's, on both traces: each round reads each
trace once with each, in a fresh child process (``PYTHONPATH`` pointing at
the tree; a first, untimed read warms it up), in alternating order; it
reports the medians and the median of the per-round ratios.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any

from _common import (
    Event,
    NoiseProbe,
    arguments,
    environment,
    event_mix,
    print_table,
    read_typed,
    scheduling_events,
    summarize,
)

import aiotrace
from aiotrace import _recorder
from aiotrace.reader import Reader, _impl

HERE = os.path.dirname(os.path.abspath(__file__))
_LABEL = {"c": "C", "python": "Python"}
CHUNK = 50_000
"""Events appended at a time; the writer drains between chunks."""


def write_trace(path: str, events: list[Event]) -> None:
    """Records ``events`` through a real tracer into ``path``.

    Raises:
        RuntimeError: the writer dropped events.
    """
    with aiotrace.tracing(path) as tracer:
        rec = _recorder.active
        assert rec is not None
        buffer = rec.events()
        done = 0
        for i in range(0, len(events), CHUNK):
            chunk = events[i : i + CHUNK]
            buffer.extend(chunk)
            done += len(chunk)
            while tracer.events + tracer.lost_events < done:
                time.sleep(0.005)
    if tracer.lost_events:
        raise RuntimeError(f"the writer dropped {tracer.lost_events} events")


def read_raw(path: str) -> int:
    """Streams the trace's raw events; returns how many there were."""
    n = 0
    with open(path, "rb") as f:
        for _ in Reader(f).raw():
            n += 1
    return n


def _status_kib(field: str) -> int:
    """Returns a ``/proc/self/status`` field in KiB, e.g. VmRSS or VmHWM."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def read_with(impl: str, path: str) -> int:
    """Streams the trace's typed events with ``impl`` ("c" or "python")."""
    _impl.use(impl)
    try:
        return read_typed(path)
    finally:
        _impl.use("python")


def child_memory(mode: str, path: str) -> None:
    """In a child process: streams ``path`` and prints its RSS growth in KiB."""
    if mode == "typed Python":
        _impl.use("python")
    with open(path, "rb") as f:
        before = _status_kib("VmRSS")  # everything is imported
        n = 0
        for _ in Reader(f).raw() if mode == "raw" else Reader(f):
            n += 1
    # VmHWM is this process's own peak RSS. (ru_maxrss is not: Linux keeps it
    # across fork and exec, so a child would report its parent's peak.)
    peak = _status_kib("VmHWM")
    print(n, peak - before, peak)


def measure_memory(mode: str, path: str) -> tuple[int, int, int]:
    """Returns (events, peak RSS growth KiB, peak RSS KiB) of a child streaming.

    ``mode`` is "raw", "typed" or "typed Python" (the pure-Python twin).
    """
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child-memory", mode, path],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def record_execution(path: str, quick: bool) -> bool:
    """Records bench_sched's workloads, run whole, into ``path``.

    Returns False, having written nothing, without uvloop or viztracer
    (bench_sched imports both).

    Raises:
        RuntimeError: the writer dropped events.
    """
    try:
        from bench_sched import WORKLOADS
    except ImportError as exc:
        print(f"no execution trace: bench_sched needs {exc.name}")
        return False
    with aiotrace.tracing(path) as tracer:
        for w in WORKLOADS:
            w.run(w.main(w.n // 5 if quick else w.n))
    if tracer.lost_events:
        raise RuntimeError(f"the writer dropped {tracer.lost_events} events")
    return True


def export_tree(rev: str, into: str) -> str:
    """Extracts the ``aiotrace`` package of git revision ``rev`` into ``into``."""
    repo = os.path.dirname(HERE)
    tar = subprocess.run(
        ["git", "-C", repo, "archive", "--format=tar", rev, "aiotrace"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into


def child_read(path: str) -> None:
    """In a child process: reads ``path`` typed twice, the first to warm up;
    prints the second's events/s and where aiotrace was imported from."""
    read_typed(path)
    t0 = time.perf_counter_ns()
    n = read_typed(path)
    seconds = (time.perf_counter_ns() - t0) / 1e9
    print(n, n / seconds, aiotrace.__file__)


def timed_in_child(tree: str, path: str) -> tuple[int, float]:
    """Returns (events, events/s) of a typed read by ``tree``'s aiotrace."""
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child-read", path],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env=env,
    ).stdout.split()
    if not os.path.abspath(out[2]).startswith(os.path.abspath(tree) + os.sep):
        raise RuntimeError(f"the child imported {out[2]}, not the tree {tree}")
    return int(out[0]), float(out[1])


def compare(rev: str, traces: dict[str, str], rounds: int, tmp: str) -> None:
    """Times REV's typed reader against the working tree's, interleaved."""
    trees = {
        rev: export_tree(rev, os.path.join(tmp, "against")),
        "working tree": os.path.dirname(HERE),
    }
    rates: dict[tuple[str, str], list[float]] = {}
    counts: dict[str, set[int]] = {name: set() for name in traces}
    probe = NoiseProbe()
    for r in range(rounds):
        probe.sample()
        for name, path in traces.items():
            order = list(trees.items())
            if r % 2:
                order.reverse()
            for label, tree in order:
                n, rate = timed_in_child(tree, path)
                counts[name].add(n)
                rates.setdefault((name, label), []).append(rate)
    rows = []
    for name in traces:
        if len(counts[name]) != 1:
            raise RuntimeError(f"{name}: the readers disagree: {counts[name]} events")
        before, after = rates[name, rev], rates[name, "working tree"]
        ratio = summarize([a / b for a, b in zip(after, before, strict=True)])
        rows.append(
            [
                name,
                f"{counts[name].pop()}",
                f"{summarize(before).median / 1e6:.3f}",
                f"{summarize(after).median / 1e6:.3f}",
                f"{ratio.median:.2f}x",
                ratio.spread("{:.2f}"),
            ]
        )
    print_table(
        f"Typed read, {rev} against the working tree ({rounds} interleaved rounds, "
        "a child process per read)",
        ["trace", "events", f"{rev} M ev/s", "now M ev/s", "speedup", "min-max"],
        rows,
    )
    print(probe.report())


def _pop_option(name: str) -> str | None:
    """Removes ``name VALUE`` from sys.argv and returns VALUE (or None)."""
    if name not in sys.argv:
        return None
    i = sys.argv.index(name)
    if i + 1 >= len(sys.argv):
        sys.exit(f"{name} needs a value")
    value = sys.argv[i + 1]
    del sys.argv[i : i + 2]
    return value


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child-memory":
        child_memory(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--child-read":
        child_read(sys.argv[2])
        return
    against = _pop_option("--against")
    args = arguments(__doc__ or "", rounds=7)
    n = 100_000 if args.quick else 500_000
    print(f"bench_read  {environment()}")
    with tempfile.TemporaryDirectory(prefix="aiotrace-bench-") as tmp:
        path = os.path.join(tmp, "bench.trace")
        events = scheduling_events(n)
        print(f"trace: {n} events ({event_mix(events)})")
        write_trace(path, events)
        del events
        size = os.path.getsize(path)
        # Warm up (page cache, imports) and count: raw events are what was
        # recorded plus thread labels; typed ones add each generation's SYNC.
        impls = ["c", "python"] if _impl.available() else ["python"]
        if not _impl.available():
            print("the C extension is not built: pure Python only")
        readers: dict[str, tuple[Any, str]] = {}
        traces = {"synthetic": path}
        exec_path = os.path.join(tmp, "exec.trace")
        if record_execution(exec_path, args.quick):
            traces["execution"] = exec_path
        expected: dict[str, int] = {}
        for name, p in traces.items():
            readers[f"{name} raw"] = (read_raw, p)
            for impl in impls:
                readers[f"{name} typed {_LABEL[impl]}"] = (
                    functools.partial(read_with, impl),
                    p,
                )
        for key, (fn, p) in readers.items():
            expected[key] = fn(p)
        for name, p in traces.items():
            counts = {expected[f"{name} typed {_LABEL[i]}"] for i in impls}
            if len(counts) != 1:
                raise RuntimeError(f"{name}: C and Python disagree: {counts} events")
            print(
                f"{name} trace: {expected[f'{name} raw']} raw events "
                f"({counts.pop()} typed) in {os.path.getsize(p)} bytes, "
                f"{os.path.getsize(p) / expected[f'{name} raw']:.2f} bytes/event"
            )
        print(f"{args.rounds} interleaved rounds, CPU time (every reader, every trace)")
        rates: dict[str, list[float]] = {name: [] for name in readers}
        probe = NoiseProbe()
        for r in range(args.rounds):
            probe.sample()
            order = list(readers.items())
            if r % 2:
                order.reverse()
            for name, (fn, p) in order:
                t0 = time.process_time()
                count = fn(p)
                seconds = time.process_time() - t0
                if count != expected[name]:
                    raise RuntimeError(
                        f"{name} read {count} events, expected {expected[name]}"
                    )
                rates[name].append(count / seconds)
        targets = {"raw": 1e6, "typed C": 2e6}
        for name, p in traces.items():
            rows = []
            size = os.path.getsize(p)
            for what in ("raw", *(f"typed {_LABEL[i]}" for i in impls)):
                key = f"{name} {what}"
                s = summarize(rates[key])
                target = targets.get(what)
                rows.append(
                    [
                        f"Reader(f){'.raw()' if what == 'raw' else ''}"
                        + (f" [{what[6:]}]" if what != "raw" else ""),
                        f"{s.median / 1e6:.3f}",
                        f"{s.lo / 1e6:.3f}-{s.hi / 1e6:.3f}",
                        f"{1e9 / s.median:.0f}",
                        f"{size * s.median / expected[key] / 1e6:.1f}",
                        ""
                        if target is None
                        else f">= {target / 1e6:g} M/s: "
                        f"{'met' if s.median >= target else 'NOT met'}",
                    ]
                )
            print_table(
                f"Reader throughput, {name} trace, {expected[f'{name} raw']} raw "
                "events, CPU time",
                ["reader", "M ev/s", "min-max", "ns/ev", "MB/s in", "target"],
                rows,
            )
            if len(impls) == 2:
                c, py = rates[f"{name} typed C"], rates[f"{name} typed Python"]
                ratio = summarize([a / b for a, b in zip(c, py, strict=True)])
                print(
                    f"typed, C / Python, median of per-round ratios: "
                    f"{ratio.median:.2f}x (min-max {ratio.spread('{:.2f}')})"
                )
        print(probe.report())

        long_path = os.path.join(tmp, "bench-2x.trace")
        write_trace(
            long_path, scheduling_events(2 * n, seed=3, start_ns=_recorder.clock())
        )
        rows = []
        modes = ["raw", "typed"] + (["typed Python"] if len(impls) == 2 else [])
        for mode, (p, least) in itertools.product(
            modes, ((path, n), (long_path, 2 * n))
        ):
            count, growth, peak = measure_memory(mode, p)
            if count < least:
                raise RuntimeError(f"the child read {count} events from {p}")
            rows.append(
                [
                    mode,
                    f"{count}",
                    f"{os.path.getsize(p) / 2**20:.1f}",
                    f"{growth / 1024:.1f}",
                    f"{peak / 1024:.1f}",
                ]
            )
        print_table(
            "Memory while streaming (a child process per row)",
            ["reader", "events", "trace MiB", "peak RSS growth MiB", "peak RSS MiB"],
            rows,
        )
        if args.quick:
            print(
                "(--quick: the traces are only a few generations long, so these "
                "memory figures say little)"
            )
        if against is not None:
            compare(against, traces, args.rounds, tmp)


if __name__ == "__main__":
    main()
