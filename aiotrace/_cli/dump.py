"""``aiotrace dump FILE``: one line per event."""

from __future__ import annotations

import argparse
import sys

HELP = "print one line per event"
ORDER = 90


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a trace file, or - for stdin")
    p.add_argument(
        "--validate",
        action="store_true",
        help="also check the trace's invariants (legal state transitions, "
        "balanced tasks, regions and ranges); exit 1 if any is broken",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="raw events in file order, without ordering or context",
    )


def run(args: argparse.Namespace) -> int:
    if args.raw and args.validate:
        args.parser.error("--validate checks typed events; it does not go with --raw")
    return dump(args.file, raw=args.raw, validate=args.validate)


def dump(
    file: str, *, raw: bool, validate: bool = False, limit: int | None = None
) -> int:
    """Prints ``file``'s events; returns the exit status."""
    from ..reader import Reader, TraceError, Validator, format_event

    validator = Validator() if validate else None
    try:
        stream = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"aiotrace: {file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    out = sys.stdout
    n = 0
    try:
        with stream:
            reader = Reader(stream)
            if raw:
                for rev in reader.raw():
                    args = " ".join(
                        f"{k}={v!r}"
                        for k, v in zip(rev.spec.arg_names, rev.args, strict=True)
                    )
                    out.write(f"{rev.time} T{rev.thread} {rev.spec.name} {args}\n")
                    n += 1
                    if limit is not None and n >= limit:
                        break
            else:
                for ev in reader:
                    if validator is not None:
                        validator.check(ev)
                    out.write(format_event(ev) + "\n")
                    n += 1
                    if limit is not None and n >= limit:
                        break
    except TraceError as exc:
        out.flush()
        print(f"aiotrace: {file}: {exc}", file=sys.stderr)
        return 1
    if validator is not None and validator.problems:
        out.flush()
        for problem in validator.problems:
            print(f"aiotrace: {file}: invalid: {problem}", file=sys.stderr)
        return 1
    return 0
