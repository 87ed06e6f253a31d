"""``aiotrace stats FILE``: what a trace tells, from one streaming pass."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from ._common import positive, read_trace, report_truncated

if TYPE_CHECKING:
    from ..analysis import Diagnosis, ProcessesSummary, Summary

HELP = "summarise a trace: tasks, regions, coroutines, loops, stalls"
ORDER = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        metavar="FILE",
        nargs="+",
        help="a trace file, or - for stdin; several files (one per process: "
        "app.trace app.*.trace) are analysed on one timeline, each and in total",
    )
    p.add_argument("--json", action="store_true", help="print JSON, for machines")
    p.add_argument(
        "--top",
        type=positive,
        default=10,
        metavar="N",
        help="coroutine groups and stalls to list (default 10)",
    )
    p.add_argument(
        "--findings",
        type=positive,
        default=5,
        metavar="N",
        help="findings to list first, by time lost (default 5)",
    )


def load(file: str) -> tuple[Summary | None, int]:
    """Analyses ``file`` (``-`` is stdin); returns (summary or None, exit status).

    Errors go to stderr; a truncated trace still gives its summary, with
    status 1. Progress is shown on stderr when it is a terminal.
    """
    from ..analysis import analyze

    summary = read_trace(
        file, lambda source, progress: analyze(source, progress=progress)
    )
    if summary is None:
        return None, 1
    return summary, 1 if summary.truncated else 0


def load_with_findings(file: str) -> tuple[Summary | None, Diagnosis | None, int]:
    """As ``load``, with the trace's findings (``analysis.diagnose``): two
    passes over the file (stdin is read into memory first)."""
    import io

    from ..analysis import analyze, diagnose

    def both(source: object, progress: object) -> tuple[Summary, Diagnosis]:
        if not (isinstance(source, str) and os.path.isfile(source)):
            # stdin or a pipe: read once, into memory, for both passes.
            if isinstance(source, str):
                with open(source, "rb") as f:
                    source = io.BytesIO(f.read())
            else:
                source = io.BytesIO(source.read())  # type: ignore[attr-defined]
        summary = analyze(source, progress=progress)  # type: ignore[arg-type]
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return summary, diagnose(source, progress=progress)  # type: ignore[arg-type]

    got = read_trace(file, both)
    if got is None:
        return None, None, 1
    summary, diagnosis = got
    return summary, diagnosis, 1 if summary.truncated else 0


def load_many(files: list[str]) -> tuple[ProcessesSummary | None, int]:
    """Analyses several traces on one timeline; returns (summary or None,
    exit status), as ``load`` does for one."""
    from ..analysis._multi import analyze_one, combine
    from ..reader import TraceError

    if "-" in files:
        print("aiotrace: - (stdin) can only be read alone", file=sys.stderr)
        return None, 2
    each = []
    for file in skip_empty(files):
        try:
            each.append(analyze_one(file))
        except OSError as exc:
            print(f"aiotrace: {file}: {exc.strerror or exc}", file=sys.stderr)
            return None, 1
        except TraceError as exc:
            print(f"aiotrace: {file}: {exc}", file=sys.stderr)
            return None, 1
    many = combine(each)
    return many, 1 if many.truncated else 0


def skip_empty(files: list[str]) -> list[str]:
    """``files`` without the empty ones, each said on stderr: a child that
    ran another program (``os.exec*``) or was killed as it started leaves
    an empty trace, which should not stop the others being read."""
    kept = []
    for file in files:
        try:
            empty = os.path.getsize(file) == 0
        except OSError:
            empty = False  # reading it says why
        if empty:
            print(f"aiotrace: {file}: empty; left out", file=sys.stderr)
        else:
            kept.append(file)
    return kept


def run(args: argparse.Namespace) -> int:
    from ..analysis import format_findings, format_sections, format_summary

    if len(args.file) > 1:
        return _run_many(args)
    args.file = args.file[0]
    summary, diagnosis, status = load_with_findings(args.file)
    if summary is None or diagnosis is None:
        return status
    if args.json:
        out = summary.to_dict()
        out.update(diagnosis.to_dict())
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_findings(diagnosis, top=args.findings) + "\n")
        sys.stdout.write(format_summary(summary, top=args.top))
        sys.stdout.write(format_sections(diagnosis))
    report_truncated(args.file, summary.truncated)
    return status


def _run_many(args: argparse.Namespace) -> int:
    from ..analysis import format_processes

    many, status = load_many(args.file)
    if many is None:
        return status
    if args.json:
        json.dump(many.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_processes(many, top=args.top))
    for p in many.processes:
        report_truncated(p.file, p.summary.truncated)
    return status
