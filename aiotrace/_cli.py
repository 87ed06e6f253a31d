"""The ``aiotrace`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aiotrace",
        description="An execution tracer for asyncio, in the spirit of Go's "
        "runtime/trace.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="trace a built-in program and dump its trace")
    demo.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default="aiotrace-demo",
        help="directory for demo.trace (default: ./aiotrace-demo)",
    )
    demo.add_argument(
        "-n", "--lines", type=int, default=20, help="dump lines to print (default 20)"
    )
    dump = sub.add_parser("dump", help="print one line per event")
    dump.add_argument("file", metavar="FILE", help="a trace file, or - for stdin")
    dump.add_argument(
        "--validate",
        action="store_true",
        help="also check the trace's invariants (legal state transitions, "
        "balanced tasks, regions and ranges); exit 1 if any is broken",
    )
    dump.add_argument(
        "--raw",
        action="store_true",
        help="raw events in file order, without ordering or context",
    )
    probes = sub.add_parser("probes", help="list the tracepoints a module declares")
    probes.add_argument(
        "module",
        metavar="MODULE",
        help="a module name (importable from the current directory) or a .py file",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "dump" and args.raw and args.validate:
        parser.error("--validate checks typed events; it does not go with --raw")
    try:
        if args.command == "demo":
            return _demo(Path(args.output), args.lines)
        if args.command == "probes":
            return _probes(args.module)
        return _dump(args.file, raw=args.raw, validate=args.validate)
    except BrokenPipeError:
        # `aiotrace dump t.trace | head` closes the pipe early: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _dump(
    file: str, *, raw: bool, validate: bool = False, limit: int | None = None
) -> int:
    from .reader import Reader, TraceError, Validator, format_event

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


def _demo(directory: Path, lines: int) -> int:
    from . import _demo
    from ._tracer import tracing

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo.trace"
    with tracing(path) as tracer:
        asyncio.run(_demo.main())
    print(
        f"aiotrace: traced the demo program: {tracer.events} events, "
        f"{tracer.bytes_written} bytes -> {path}"
    )
    print(f"first {lines} events (aiotrace dump {path}):")
    return _dump(str(path), raw=False, limit=lines)


def _probes(target: str) -> int:
    import importlib
    import importlib.util

    from ._probe import describe, tracepoints

    path = Path(target)
    # Import as `python -m` would: the current directory (or the file's own
    # directory) comes first on sys.path.
    entry = str(path.parent.resolve()) if path.suffix == ".py" else os.getcwd()
    sys.path.insert(0, entry)
    try:
        if path.suffix == ".py":
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {target}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as exc:
        print(f"aiotrace: {target}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        sys.path.remove(entry)
    found = tracepoints(module)
    for tp in found:
        print(describe(tp))
    if not found:
        print(f"aiotrace: {target} declares no tracepoints", file=sys.stderr)
    return 0
