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
    for action in p._actions:
        if action.dest == "file":  # several traces: one per process
            action.nargs = "+"
            action.help = (
                "a trace file; several (one per process: app.trace app.*.trace) "
                "make one report, every process on one timeline"
            )
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
    if len(args.file) > 1:
        return _run_many(args)
    args.file = args.file[0]
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


def _run_many(args: argparse.Namespace) -> int:
    """One report of several traces (one per process), on one timeline."""
    from ..export import write_report
    from ..export._processes import merged_events
    from ..reader import TraceError
    from ._common import default_output
    from .stats import skip_empty

    files = skip_empty(args.file)
    if not files:
        return 1
    out: str = args.output or default_output(files[0], ".html")
    if os.path.abspath(out) in {os.path.abspath(f) for f in files}:
        print(f"aiotrace: {out}: would overwrite a trace", file=sys.stderr)
        return 1
    errors: list[tuple[str, TraceError]] = []
    try:
        result = write_report(
            merged_events(files, errors),
            out,
            title=f"{os.path.basename(files[0])} and {len(files) - 1} more",
            max_bytes=int(args.max_mb * 1_000_000),
            max_coroutines=args.max_coroutines,
        )
    except TraceError as exc:
        print(f"aiotrace: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aiotrace: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    status = 0
    for file, error in errors:
        print(
            f"aiotrace: {file}: {error}; the report covers what was read",
            file=sys.stderr,
        )
        if not error.reason.startswith("the trace is truncated"):
            status = 1
    print(
        f"wrote {out}: {len(files)} processes, {result.events} events, "
        f"{result.page_bytes / 1e6:.1f} MB"
    )
    return status
