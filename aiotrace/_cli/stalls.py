"""``aiotrace stalls FILE``: each loop stall, who held the loop, and where."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._common import positive, report_truncated

if TYPE_CHECKING:
    from ..analysis import Summary

HELP = "list loop stalls with the coroutine that held the loop and its stacks"
ORDER = 21


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        metavar="FILE",
        nargs="+",
        help="a trace file, or - for stdin; several files (one per process) "
        "list the stalls of every process, on one timeline",
    )
    p.add_argument("--json", action="store_true", help="print JSON, for machines")
    p.add_argument(
        "--stacks",
        type=positive,
        default=3,
        metavar="N",
        help="most common stacks to show per stall (default 3)",
    )
    p.add_argument(
        "--frames",
        type=positive,
        default=12,
        metavar="N",
        help="frames to show per stack, innermost first (default 12)",
    )
    p.add_argument(
        "--min",
        type=float,
        default=0.0,
        metavar="MS",
        help="only stalls at least this long, in milliseconds",
    )


def run(args: argparse.Namespace) -> int:
    from ..analysis import format_stalls
    from .stats import load, load_many

    if args.min < 0:
        args.parser.error(f"--min must not be negative, not {args.min:g}")
    summary: Summary | None
    if len(args.file) > 1:
        many, status = load_many(args.file)
        if many is None:
            return status
        summary = many.total
        args.file = ", ".join(args.file)
    else:
        args.file = args.file[0]
        summary, status = load(args.file)
    if summary is None:
        return status
    summary.stalls = [s for s in summary.stalls if s.duration_ns >= args.min * 1e6]
    if args.json:
        doc = {
            "lost_events": summary.lost_events,
            "truncated": summary.truncated,
            "stalls": [s.to_dict() for s in summary.stalls],
        }
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_stalls(summary, stacks=args.stacks, frames=args.frames))
    report_truncated(args.file, summary.truncated)
    return status
