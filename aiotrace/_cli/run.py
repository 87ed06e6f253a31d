"""``aiotrace run [options] script.py [args]`` / ``... -m module [args]``."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

HELP = "run a Python program (a script or -m module) and trace it"
ORDER = 15


def _threshold(text: str) -> float | None:
    if text.lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds (or 'off')"
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the threshold must be a positive number of seconds"
        )
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = (
        "aiotrace run [-h] [-o FILE] [--stall-threshold S] [--flight S] [-q] "
        "(script.py [args ...] | -m module [args ...])"
    )
    p.epilog = (
        "Options go before the script or -m module: everything after it is the "
        "program's own argv, as with `python script.py args`. The program runs "
        "as __main__ with its exit status kept; the summary goes to stderr."
    )
    p.set_defaults(run_parser=p)  # usage errors name `aiotrace run`
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="the trace file (default: ./NAME.trace, NAME being the script's "
        "name without .py, or the module's name)",
    )
    p.add_argument(
        "--stall-threshold",
        metavar="S",
        type=_threshold,
        default=0.1,
        help="seconds a step may hold its loop before it is a stall "
        "(default 0.1; 'off' turns stall detection off)",
    )
    p.add_argument(
        "--flight",
        metavar="S",
        type=_positive,
        help="keep only the last S seconds or so, in memory, and write them "
        "at exit (the flight recorder)",
    )
    p.add_argument(
        "--flight-max-mib",
        metavar="M",
        type=_positive,
        help="with --flight, the most trace to keep in memory, in MiB "
        "(default 64; the oldest seconds go first)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print no summary at exit",
    )
    p.add_argument(
        "-m",
        dest="module",
        nargs=argparse.REMAINDER,
        help=argparse.SUPPRESS,  # shown with the positional: -m ends our options
    )
    p.add_argument(
        "program",
        nargs=argparse.REMAINDER,
        metavar="script.py | -m module",
        help="the program, as `python script.py` or `python -m module` would "
        "run it, then its arguments",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from .._errors import TracingError
    from .._run import (
        Program,
        ProgramNotFound,
        finish_on_sigterm,
        join_threads,
        report_uncaught,
    )

    if args.module is not None:
        if not args.module:
            args.run_parser.error("argument -m: expected a module name")
        # `-m mod -- x` leaves `-- x` to the positional: it is the program's.
        program = Program(args.module[0], [*args.module[1:], *args.program], True)
    elif args.program:
        program = Program(args.program[0], args.program[1:])
    else:
        args.run_parser.error("give a script to run, or -m module")
    if args.flight is None and args.flight_max_mib is not None:
        args.run_parser.error("--flight-max-mib goes with --flight")
    if args.flight_max_mib is None:
        args.flight_max_mib = 64.0
    try:
        program.check()
    except ProgramNotFound as exc:
        print(f"aiotrace run: {exc}", file=sys.stderr)
        return 2
    path = args.output or f"{program.name}.trace"
    try:
        stop = _record(path, args)
    except OSError as exc:
        print(f"aiotrace run: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. tracing already on in this interpreter
        print(f"aiotrace run: {exc}", file=sys.stderr)
        return 1

    def finish() -> bool:
        sys.stdout.flush()
        try:
            stop()
        except TracingError as exc:
            print(f"aiotrace run: {exc}", file=sys.stderr)
            return False
        return True

    def terminated() -> None:
        finish()
        print(
            f"aiotrace: terminated by SIGTERM; trace written to {path}",
            file=sys.stderr,
            flush=True,
        )

    finish_on_sigterm(terminated)
    status = program.run()
    try:
        join_threads()
    except KeyboardInterrupt as exc:
        status = report_uncaught(exc)
    if finish() and not args.quiet:
        from .._run import summary

        text = summary(path, stall_threshold=args.stall_threshold)
        if args.flight is not None:
            text = (
                f"aiotrace: flight recorder: kept about the last {args.flight:g} s "
                f"(whole generations, at most {args.flight_max_mib:g} MiB)\n{text}"
            )
        print(text, file=sys.stderr)
    return status


def _record(path: str, args: argparse.Namespace) -> Callable[[], None]:
    """Starts recording into ``path``; returns what finishes it."""
    from .._flight import FlightRecorder
    from .._tracer import start

    if args.flight is None:
        tracer = start(path, stall_threshold=args.stall_threshold)
        return tracer.stop
    rec = FlightRecorder(
        max_bytes=int(args.flight_max_mib * (1 << 20)),
        min_age=args.flight,
        stall_threshold=args.stall_threshold,
    )
    with open(path, "wb"):  # a bad path fails now, not when the program ends
        pass
    rec.start()

    def stop() -> None:
        rec.stop()
        rec.write_to(path)

    return stop
