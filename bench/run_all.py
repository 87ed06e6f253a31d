"""run_all: runs every aiotrace benchmark and prints their tables.

Run: ``python bench/run_all.py [--rounds N] [--quick]`` (about 12 min, 11 of
them ``bench_sched``; ``--quick`` about 25 s).

Each benchmark runs in its own process, one after the other (never in
parallel: they would disturb each other's timings), with this interpreter;
``--rounds`` and ``--quick`` are passed on. See ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

BENCHMARKS = (
    "bench_record.py",
    "bench_annotate.py",
    "bench_encode.py",
    "bench_read.py",
    "bench_analysis.py",
    "bench_sched.py",
    "bench_probe.py",
    "bench_flight.py",
    "bench_aiohttp.py",
    "bench_otel.py",
)


def main() -> int:
    p = argparse.ArgumentParser(description="Runs every aiotrace benchmark.")
    p.add_argument("--rounds", type=int, help="rounds for every benchmark")
    p.add_argument("--quick", action="store_true", help="a smoke run")
    args = p.parse_args()
    extra: list[str] = []
    if args.rounds is not None:
        extra += ["--rounds", str(args.rounds)]
    if args.quick:
        extra.append("--quick")
    here = os.path.dirname(os.path.abspath(__file__))
    failed: list[str] = []
    for name in BENCHMARKS:
        print(f"=== {name} {' '.join(extra)}".rstrip(), flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, os.path.join(here, name), *extra])
        print(f"=== {name}: {time.monotonic() - t0:.1f} s, exit status {rc}\n")
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
