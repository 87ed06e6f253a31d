"""bench_run_exit: how long ``aiotrace run`` takes to exit after its program ends.

Run: ``python bench/bench_run_exit.py [--steps N] [--rounds R]``.

The program (written to a temporary directory) runs 100 coroutines that
each ``await asyncio.sleep(0)`` N/100 times (about N step events), then
prints ``time.time()`` as its last act. The delay is from that print to the
``aiotrace run`` process's exit, as the parent sees it (``wait()``), so it
covers stopping the trace (encoding and writing what is left) and the exit
summary. Reported: the trace's events and bytes, and the median delay over
R rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROGRAM = """
import asyncio, sys, time

async def spin(n):
    for _ in range(n):
        await asyncio.sleep(0)

async def main(n):
    await asyncio.gather(*(spin(n // 100) for _ in range(100)))

asyncio.run(main(int(sys.argv[1])))
print(time.time(), flush=True)
"""


def once(directory: str, steps: int) -> tuple[float, int]:
    """Runs the program once under ``aiotrace run``; returns (delay s, bytes)."""
    script = os.path.join(directory, "spin.py")
    trace = os.path.join(directory, "spin.trace")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiotrace", "run", "-o", trace, script, str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ended = float(proc.stdout.readline())
    _, err = proc.communicate()
    delay = time.time() - ended
    if proc.returncode != 0:
        raise SystemExit(f"aiotrace run failed ({proc.returncode}):\n{err}")
    print(err.splitlines()[0], file=sys.stderr)
    return delay, os.path.getsize(trace)


def main() -> None:
    """Runs the rounds and prints the median delay."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "spin.py"), "w") as f:
            f.write(PROGRAM)
        delays = []
        size = 0
        for _ in range(args.rounds):
            delay, size = once(d, args.steps)
            delays.append(delay)
    print(
        f"steps={args.steps:,} trace={size / 1e6:.1f} MB "
        f"exit delay median={statistics.median(delays):.3f} s "
        f"(each: {', '.join(f'{x:.3f}' for x in delays)})"
    )


if __name__ == "__main__":
    main()
