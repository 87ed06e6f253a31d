"""bench_read: reader throughput (events/s) and memory while streaming.

Run: ``python bench/bench_read.py [--rounds N] [--quick]`` (about 20 s).

Writes a trace of 500,000 synthetic scheduling events (``bench/_common.py``)
through the real writer: ``aiotrace.start(path)``, then the events are
appended to the recorder's list for this thread, as hooks do, in chunks
that the drainer encodes as it would in production; then ``aiotrace.stop()``.
Then, in interleaved rounds, it times reading the file back:

- raw: ``for ev in Reader(f).raw()`` (decoded and validated, file order);
- typed: ``for ev in Reader(f)`` (ordered, with state tracking, Event objects).

It reports the median events/s over rounds, with min-max. Memory: a child
process streams the 500k-event trace, another one a trace twice as long
(each raw, then typed), and each reports its peak RSS growth (VmHWM in
``/proc/self/status``, so Linux only) over its RSS before reading; equal
growth means memory does not grow with the length of the trace.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time

from _common import (
    Event,
    NoiseProbe,
    arguments,
    environment,
    event_mix,
    print_table,
    scheduling_events,
    summarize,
)

import aiotrace
from aiotrace import _recorder
from aiotrace.reader import Reader

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


def read_typed(path: str) -> int:
    """Streams the trace's typed events; returns how many there were."""
    n = 0
    with open(path, "rb") as f:
        for _ in Reader(f):
            n += 1
    return n


def _status_kib(field: str) -> int:
    """Returns a ``/proc/self/status`` field in KiB, e.g. VmRSS or VmHWM."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child_memory(mode: str, path: str) -> None:
    """In a child process: streams ``path`` and prints its RSS growth in KiB."""
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

    ``mode`` is "raw" or "typed".
    """
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child-memory", mode, path],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child-memory":
        child_memory(sys.argv[2], sys.argv[3])
        return
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
        expected = {"raw": read_raw(path), "typed": read_typed(path)}
        total = expected["typed"]
        print(
            f"written through aiotrace.start(path): {expected['raw']} raw events "
            f"({total} typed) in {size} bytes, {size / expected['raw']:.2f} "
            "bytes/event"
        )
        print(f"{args.rounds} interleaved rounds (raw, typed)")
        rates: dict[str, list[float]] = {"raw": [], "typed": []}
        probe = NoiseProbe()
        for r in range(args.rounds):
            probe.sample()
            order = [("raw", read_raw), ("typed", read_typed)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                t0 = time.perf_counter_ns()
                count = fn(path)
                seconds = (time.perf_counter_ns() - t0) / 1e9
                if count != expected[name]:
                    raise RuntimeError(
                        f"{name} read {count} events, expected {expected[name]}"
                    )
                rates[name].append(count / seconds)
        rows = []
        targets = {"raw": 1e6, "typed": 0.3e6}
        for name, values in rates.items():
            s = summarize(values)
            rows.append(
                [
                    f"Reader(f){'.raw()' if name == 'raw' else ''}",
                    f"{s.median / 1e6:.3f}",
                    f"{s.lo / 1e6:.3f}-{s.hi / 1e6:.3f}",
                    f"{1e9 / s.median:.0f}",
                    f"{size * s.median / expected[name] / 1e6:.1f}",
                    f">= {targets[name] / 1e6:g} M/s: "
                    f"{'met' if s.median >= targets[name] else 'NOT met'}",
                ]
            )
        print_table(
            f"Reader throughput, {expected['raw']} events, one thread",
            ["reader", "M ev/s", "min-max", "ns/ev", "MB/s in", "target"],
            rows,
        )
        print(probe.report())

        long_path = os.path.join(tmp, "bench-2x.trace")
        write_trace(
            long_path, scheduling_events(2 * n, seed=3, start_ns=_recorder.clock())
        )
        rows = []
        for mode, (p, least) in itertools.product(
            ("raw", "typed"), ((path, n), (long_path, 2 * n))
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


if __name__ == "__main__":
    main()
