"""``aiotrace demo``: trace a built-in program and show what its trace tells."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from ..analysis import Summary

HELP = "trace a built-in program and show what its trace tells"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "The program is a small coffee bar (aiotrace/_demo.py): orders are "
        "user tasks that cross coroutines and a worker thread, baristas wait "
        "for one espresso machine (an asyncio.Lock) and hand drinks to a "
        "waiter through an asyncio.Queue, and a receipt printer blocks the "
        "event loop once: the loop stall the trace catches, with its line."
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default="aiotrace-demo",
        help="directory for demo.trace and demo.html (default: ./aiotrace-demo)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    from pathlib import Path

    from .. import _demo
    from .._tracer import tracing
    from ..analysis import analyze, format_summary
    from ..export import write_report

    directory = Path(args.output)
    trace = directory / "demo.trace"
    report = directory / "demo.html"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        print(f"aiotrace demo: tracing a small coffee bar ({_demo.__file__})\n")
        with tracing(trace):
            asyncio.run(_demo.main())
        summary = analyze(trace)
        write_report(trace, report, title="aiotrace demo: a small coffee bar")
    except OSError as exc:
        where = exc.filename or directory
        print(f"aiotrace demo: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(format_summary(summary, top=5))
    print("\n".join(_guide(summary, trace, report)))
    return 0


def _guide(summary: Summary, trace: Path, report: Path) -> list[str]:
    """What to look at in this trace, where the files are, and what next."""
    import os
    import shlex

    from ..analysis import format_duration

    q = shlex.quote(str(trace))
    lines = ["What this trace shows:"]
    for stall in summary.stalls:
        folded = stall.folded()
        if folded and folded[0][0].frames:
            f = folded[0][0].frames[0]
            where = f"{f.func} ({os.path.basename(f.file)}:{f.line})"
        else:
            where = "no stack sampled"
        lines.append(
            f"  - a {format_duration(stall.duration_ns)} loop stall: {where}, "
            "a blocking call on the event loop, which ran nothing else meanwhile"
        )
    for reason, what in (
        ("lock", "the espresso machine, an asyncio.Lock"),
        ("queue", "the counter, an asyncio.Queue"),
    ):
        names = sorted(g.name for g in summary.coroutines if g.block_ns.get(reason))
        if names:
            total = sum(g.block_ns.get(reason, 0) for g in summary.coroutines)
            lines.append(
                f"  - {', '.join(names)} blocked {format_duration(total)} "
                f"in all on {reason!r}: {what}"
            )
    if "order" in summary.tasks:
        lines.append(
            f"  - {summary.tasks['order'].count} 'order' user tasks, each across "
            "three coroutines and a worker thread (grindBeans)"
        )
    rows = [
        (f"  {trace}", f"the trace: {summary.events:,} events"),
        (f"  {report}", "the report: open it in a browser"),
    ]
    width = max(len(a) for a, _ in rows)
    lines += ["", "Files:", *(f"{a.ljust(width)}   {b}" for a, b in rows)]
    steps = [
        (f"  aiotrace stalls {q}", "each stall with its stack samples"),
        (
            f"  aiotrace export {q}",
            "then open demo.pftrace in https://ui.perfetto.dev",
        ),
        ("  aiotrace run your_program.py [args]", "trace your own program"),
    ]
    width = max(len(a) for a, _ in steps)
    lines += ["", "Next:", *(f"{a.ljust(width)}   {b}" for a, b in steps)]
    return lines
