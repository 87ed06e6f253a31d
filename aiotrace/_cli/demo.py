"""``aiotrace demo``: trace a built-in program."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "trace a built-in program and show what its trace tells"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default="aiotrace-demo",
        help="directory for demo.trace (default: ./aiotrace-demo)",
    )
    p.add_argument(
        "-n", "--lines", type=int, default=20, help="dump lines to print (default 20)"
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    from .. import _demo
    from .._tracer import tracing
    from .dump import dump

    directory = Path(args.output)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo.trace"
    with tracing(path) as tracer:
        asyncio.run(_demo.main())
    print(
        f"aiotrace: traced the demo program: {tracer.events} events, "
        f"{tracer.bytes_written} bytes -> {path}"
    )
    print(f"first {args.lines} events (aiotrace dump {path}):")
    return dump(str(path), raw=False, limit=args.lines)
