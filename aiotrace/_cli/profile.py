"""``aiotrace profile FILE``: block, scheduler-latency, execution or stall
time by stack, as a text top table or folded stacks for flame graphs."""

from __future__ import annotations

import argparse
import json
import sys

from ._common import positive, read_trace, report_truncated

HELP = "profile block, scheduler-latency, execution or stall time by stack"
ORDER = 22

# analysis.Profile.KINDS, without importing the analysis here
_KINDS = ("block", "sched", "exec", "stall")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a trace file, or - for stdin")
    p.add_argument(
        "--kind",
        choices=_KINDS,
        default="block",
        help="block: time waiting, by where coroutines blocked (default); "
        "sched: scheduler latency; exec: time running; stall: loop stalls",
    )
    p.add_argument(
        "--folded",
        action="store_true",
        help="print folded stacks (flamegraph.pl, speedscope), values in ns",
    )
    p.add_argument(
        "--json", action="store_true", help="print Profile.to_dict(), for machines"
    )
    p.add_argument(
        "--functions",
        action="store_true",
        help="name frames by function only, merging lines",
    )
    p.add_argument(
        "--top",
        type=positive,
        default=20,
        metavar="N",
        help="frames to list in the text table (default 20)",
    )
    p.add_argument(
        "--stacks",
        type=positive,
        default=5,
        metavar="N",
        help="heaviest stacks to show in the text output (default 5)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="write to OUT instead of stdout",
    )


def run(args: argparse.Namespace) -> int:
    from ..analysis import format_profile, profile

    if args.folded and args.json:
        args.parser.error("--folded and --json do not go together")
    p = read_trace(
        args.file,
        lambda source, progress: profile(source, args.kind, progress=progress),
    )
    if p is None:
        return 1
    lines = not args.functions
    if args.json:
        text = json.dumps(p.to_dict(), indent=1) + "\n"
    elif args.folded:
        text = p.folded(lines=lines)
    else:
        text = format_profile(p, top=args.top, stacks=args.stacks, lines=lines)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            print(f"aiotrace: {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    report_truncated(args.file, p.truncated)
    return 1 if p.truncated else 0
