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
        "--max-mb",
        type=float,
        default=10.0,
        metavar="MB",
        help="the page's budget for timeline data; beyond it, the busiest rows "
        "show coarser detail (default: 10)",
    )
    p.add_argument(
        "--max-coroutines",
        type=int,
        default=200,
        metavar="N",
        help="the most coroutines given a timeline row, chosen by stalls, waits, "
        "time lost and slow tasks; the rest are found by search (default: 200)",
    )


def run(args: argparse.Namespace) -> int:
    from ..export import write_report
    from ..reader import TraceError

    if not args.max_mb >= 0.1 or args.max_coroutines < 0:
        args.parser.error("--max-mb must be at least 0.1, --max-coroutines at least 0")
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
                max_bytes=int(args.max_mb * 1_000_000),
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
    print(
        f"wrote {out}: {result.events} events, {result.page_bytes / 1e6:.1f} MB, "
        f"timeline detail {_fmt_res(result.loops_resolution_ns)} or finer"
        + (
            f" ({_fmt_res(result.timeline_resolution_ns)} on some coroutine rows)"
            if result.timeline_resolution_ns > result.loops_resolution_ns
            else ""
        )
    )
    return 0


def _fmt_res(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:g} s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:g} ms"
    return f"{ns / 1e3:g} µs"
