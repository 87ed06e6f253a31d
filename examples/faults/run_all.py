"""Runs each fault program traced and prints what ``aiotrace stats`` found.

For each program of this folder (or those named), runs
``aiotrace run -o DIR/NAME.trace NAME.py`` then ``aiotrace stats`` on its
trace, and prints the stats' Findings block (``--full``: the whole stats
text). This is the output docs/diagnosis.md shows.

    python examples/faults/run_all.py                 # all eight
    python examples/faults/run_all.py lock executor   # some
    python examples/faults/run_all.py --full --keep traces/
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAMS = (
    "blocking",
    "lock",
    "backpressure",
    "pending",
    "lost_wakeup",
    "executor",
    "gc_pressure",
    "slow_route",
)


def findings_block(text: str) -> str:
    """The Findings block of ``aiotrace stats`` text: from its "Findings"
    line to the first blank line, or ``""``."""
    out: list[str] = []
    for line in text.splitlines():
        if out and not line.strip():
            break
        if out or line.lstrip().startswith("Findings"):
            out.append(line)
    return "\n".join(out)


def trace_and_stats(name: str, folder: Path) -> tuple[str, float]:
    """Runs the program ``name`` traced into ``folder``; returns the stats
    text (or what went wrong) and the run's wall time in seconds."""
    trace = folder / f"{name}.trace"
    aiotrace = [sys.executable, "-m", "aiotrace"]
    start = time.monotonic()
    run = subprocess.run(
        [*aiotrace, "run", "-q", "-o", str(trace), str(HERE / f"{name}.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - start
    if run.returncode != 0:
        return f"(the program failed, status {run.returncode})\n{run.stderr}", took
    stats = subprocess.run(
        [*aiotrace, "stats", str(trace)], capture_output=True, text=True, check=False
    )
    if stats.returncode != 0:
        return f"(aiotrace stats failed)\n{stats.stderr}", took
    return stats.stdout, took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME", help=", ".join(PROGRAMS))
    p.add_argument("--full", action="store_true", help="print all the stats text")
    p.add_argument("--keep", metavar="DIR", help="keep the traces in DIR")
    args = p.parse_args()
    names = args.names or PROGRAMS
    unknown = sorted(set(names) - set(PROGRAMS))
    if unknown:
        p.error(f"no fault program {', '.join(unknown)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            text, took = trace_and_stats(name, folder)
            shown = text if args.full else findings_block(text)
            print(f"=== {name}.py (ran {took:.1f} s)")
            print(shown or "(no Findings block in `aiotrace stats`)")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
