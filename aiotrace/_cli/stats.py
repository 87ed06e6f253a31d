"""``aiotrace stats FILE``: what a trace tells, from one streaming pass."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..analysis import Summary

HELP = "summarise a trace: tasks, regions, coroutines, loops, stalls"
ORDER = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a trace file, or - for stdin")
    p.add_argument("--json", action="store_true", help="print JSON, for machines")
    p.add_argument(
        "--top",
        type=_positive,
        default=10,
        metavar="N",
        help="coroutine groups and stalls to list (default 10)",
    )


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


class _Progress:
    """_Progress shows how far the analysis is, on a terminal's stderr."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.shown = False
        self.last = ""
        self.next = time.monotonic() + 0.5

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + 0.2
        if total:
            where = f"{100 * done / total:.0f}% of {total / 2**20:.0f} MiB"
        else:
            where = f"{done / 2**20:.0f} MiB"
        text = f"\raiotrace: reading {self.file}: {where} "
        if text != self.last:
            sys.stderr.write(text)
            sys.stderr.flush()
            self.last = text
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def load(file: str) -> tuple[Summary | None, int]:
    """Analyses ``file`` (``-`` is stdin); returns (summary or None, exit status).

    Errors go to stderr; a truncated trace still gives its summary, with
    status 1. Progress is shown on stderr when it is a terminal.
    """
    from ..analysis import analyze
    from ..reader import TraceError

    progress = _Progress(file) if sys.stderr.isatty() else None
    try:
        if file == "-":
            summary = analyze(sys.stdin.buffer, progress=progress)
        else:
            summary = analyze(file, progress=progress)
    except OSError as exc:
        print(f"aiotrace: {file}: {exc.strerror or exc}", file=sys.stderr)
        return None, 1
    except TraceError as exc:
        if progress is not None:
            progress.clear()
        print(f"aiotrace: {file}: {exc}", file=sys.stderr)
        return None, 1
    if progress is not None:
        progress.clear()
    return summary, 1 if summary.truncated else 0


def report_truncated(file: str, summary: Summary) -> None:
    """Says on stderr that the trace was cut short, after the output."""
    if summary.truncated:
        sys.stdout.flush()
        print(
            f"aiotrace: {file}: {summary.truncated} (the output covers what was read)",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    from ..analysis import format_summary

    summary, status = load(args.file)
    if summary is None:
        return status
    if args.json:
        json.dump(summary.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_summary(summary, top=args.top))
    report_truncated(args.file, summary)
    return status
