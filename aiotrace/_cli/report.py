"""``aiotrace report FILE -o OUT.html``: a self-contained HTML report."""

from __future__ import annotations

import argparse
import os
import sys

from ._common import add_export_arguments, open_for_export

HELP = "write a self-contained HTML report: timeline, latencies, coroutines, stalls"
ORDER = 41


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_export_arguments(p, "HTML", ".html")
    p.add_argument(
        "--max-spans",
        type=int,
        default=250_000,
        metavar="N",
        help="the most timeline spans to embed; more are merged (default: 250000)",
    )
    p.add_argument(
        "--max-coroutines",
        type=int,
        default=200,
        metavar="N",
        help="the most coroutines given a timeline row (default: 200)",
    )


def run(args: argparse.Namespace) -> int:
    from ..export import write_report
    from ..reader import TraceError

    if args.max_spans < 1 or args.max_coroutines < 0:
        args.parser.error("--max-spans must be at least 1, --max-coroutines at least 0")
    opened = open_for_export(args, ".html")
    if opened is None:
        return 1
    out, source = opened
    try:
        with source:
            result = write_report(
                source,
                out,
                title=os.path.basename(args.file),
                max_spans=args.max_spans,
                max_coroutines=args.max_coroutines,
            )
    except TraceError as exc:
        print(f"aiotrace: {args.file}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aiotrace: {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if result.truncated:
        print(
            f"aiotrace: {args.file}: {result.truncated}; the report covers "
            f"the {result.events} events read before it",
            file=sys.stderr,
        )
    print(f"wrote {out}: {result.events} events")
    return 0
