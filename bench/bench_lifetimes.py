"""bench_lifetimes: the memory a traced program keeps, against untraced.

Run: ``python bench/bench_lifetimes.py [--rounds N]`` (about 10 s; default
2,000 rounds). Each of gather, shield and wait runs in a fresh process:
``asyncio.run`` of N rounds of ``await asyncio.gather(child(), child())``
(``asyncio.shield(child())``, ``asyncio.wait([task])``), each child returning
100 kB; untraced, traced to a file (``aiotrace.tracing``), and with a
``FlightRecorder(max_bytes=8 MiB)`` on. Prints the resident memory before
the run and after it (after ``gc.collect()``, tracing still on). A tracer
that kept the program's objects shows it here: before the waker cache was
keyed by code, 2,000 gathers took 24 -> 411 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

import aiotrace

KINDS = ("gather", "shield", "wait")
MODES = ("untraced", "traced", "flight")


async def _child() -> bytes:
    await asyncio.sleep(0)
    return b"x" * 100_000


async def _program(kind: str, rounds: int) -> None:
    for _ in range(rounds):
        if kind == "gather":
            await asyncio.gather(_child(), _child())
        elif kind == "shield":
            await asyncio.shield(_child())
        else:
            await asyncio.wait([asyncio.ensure_future(_child())])


def _one(kind: str, mode: str, rounds: int) -> str:
    """Runs one program in this process; returns the RSS line."""
    proc = psutil.Process()
    before = proc.memory_info().rss
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "traced":
            with aiotrace.tracing(Path(tmp) / "t.trace"):
                asyncio.run(_program(kind, rounds))
                gc.collect()
                after = proc.memory_info().rss
        elif mode == "flight":
            fr = aiotrace.FlightRecorder(max_bytes=8 << 20)
            fr.start()
            try:
                asyncio.run(_program(kind, rounds))
                gc.collect()
                after = proc.memory_info().rss
            finally:
                fr.stop()
        else:
            asyncio.run(_program(kind, rounds))
            gc.collect()
            after = proc.memory_info().rss
    return f"| {kind} | {mode} | {before / 2**20:.0f} | {after / 2**20:.0f} |"


def main() -> None:
    """Runs every program in a fresh process and prints a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument(
        "--one", nargs=2, metavar=("KIND", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        print(_one(*args.one, args.rounds))
        return
    print(f"{args.rounds} rounds, 100 kB per child, RSS in MiB")
    print("| program | mode | before | after |")
    print("|---|---|---|---|")
    for kind in KINDS:
        for mode in MODES:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--rounds",
                    str(args.rounds),
                    "--one",
                    kind,
                    mode,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            print(out.stdout.strip())


if __name__ == "__main__":
    main()
