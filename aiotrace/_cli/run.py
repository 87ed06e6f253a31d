"""``aiotrace run [options] script.py [args]`` / ``... -m module [args]``."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._drain import Drainer
    from .._run_summary import Follower

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


def _defaults() -> dict[str, Any]:
    """``aiotrace.start``'s defaults: the flags' defaults are the library's."""
    import inspect

    from .._tracer import start

    return {
        name: p.default
        for name, p in inspect.signature(start).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = _defaults()
    p.usage = (
        "aiotrace run [-h] [-o FILE] [options] [-q] "
        "(script.py [args ...] | -m module [args ...])"
    )
    p.epilog = (
        "Options go before the script or -m module: everything after it is the "
        "program's own argv, as with `python script.py args`. The program runs "
        "as __main__ with its exit status kept; the summary goes to stderr. "
        "Each option is the aiotrace.start option of the same name."
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
        default=d["stall_threshold"],
        help="seconds a step may hold its loop before it is a stall "
        f"(default {d['stall_threshold']}; 'off' turns stall detection off)",
    )
    p.add_argument(
        "--metrics-interval",
        metavar="S",
        type=_threshold,
        default=d["metrics_interval"],
        help="seconds between samples of the runtime metrics (GC, memory, "
        f"loop lag; default {d['metrics_interval']}; 'off' records none)",
    )
    p.add_argument(
        "--block-stacks",
        action=argparse.BooleanOptionalAction,
        default=d["block_stacks"],
        help="record a coroutine's await stack each time it blocks, so that "
        "`aiotrace profile` names where it waited (default: "
        f"{'on' if d['block_stacks'] else 'off'}; see docs/performance.md)",
    )
    p.add_argument(
        "--annotation-stacks",
        action=argparse.BooleanOptionalAction,
        default=d["annotation_stacks"],
        help="record the caller's stack on every task, region and log "
        f"annotation (default: {'on' if d['annotation_stacks'] else 'off'})",
    )
    p.add_argument(
        "--runtime-events",
        action=argparse.BooleanOptionalAction,
        default=d["runtime_events"],
        help="record coroutines, loops, stalls, GC and metrics; "
        "--no-runtime-events records the program's annotations only",
    )
    p.add_argument(
        "--max-buffer-mib",
        metavar="M",
        type=_positive,
        help="the most trace held in memory while the file falls behind, in "
        f"MiB (default {int(d['max_buffer_bytes']) / (1 << 20):g}; past it "
        "events are dropped and counted)",
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
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="trace child Python processes too (multiprocessing's fork, spawn "
        "and forkserver, process pools, os.fork): each writes FILE with its "
        "pid before the suffix, app.<pid>.trace (default: on; not with "
        "--flight)",
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


def start_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``aiotrace.start`` (or of the flight recorder) that
    ``args`` give."""
    options: dict[str, Any] = {
        "stall_threshold": args.stall_threshold,
        "metrics_interval": args.metrics_interval,
        "block_stacks": args.block_stacks,
        "annotation_stacks": args.annotation_stacks,
        "runtime_events": args.runtime_events,
    }
    if args.max_buffer_mib is not None:
        options["max_buffer_bytes"] = int(args.max_buffer_mib * (1 << 20))
    return options


def run(args: argparse.Namespace) -> int:
    from .._run import (
        INTERRUPTED,
        Program,
        ProgramNotFound,
        SigintExit,
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
    if args.flight is not None and args.max_buffer_mib is not None:
        args.run_parser.error(
            "--max-buffer-mib is for a trace written as it goes; with --flight "
            "the bound is --flight-max-mib"
        )
    if args.flight_max_mib is None:
        args.flight_max_mib = 64.0
    try:
        program.check()
    except ProgramNotFound as exc:
        print(f"aiotrace run: {exc}", file=sys.stderr)
        return 2
    path = args.output or f"{program.name}.trace"
    try:
        recording = _record(path, args)
    except OSError as exc:
        print(f"aiotrace run: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. tracing already on in this interpreter
        print(f"aiotrace run: {exc}", file=sys.stderr)
        return 1

    # File times come from the kernel's coarse clock, which can lag
    # time.time_ns() by a few milliseconds: a child trace created at once
    # would look older than the run.
    started_ns = time.time_ns() - _MTIME_SLACK_NS
    parent = os.getpid()
    follow = args.follow and args.flight is None
    if follow:
        from .._follow import follow_children

        follow_children(path, **start_options(args))

    def terminated() -> None:
        recording.finish()
        print(
            f"aiotrace: terminated by SIGTERM; trace written to {path}",
            file=sys.stderr,
            flush=True,
        )

    sigint = SigintExit()
    finish_on_sigterm(terminated)
    try:
        status = program.run()
    except ProgramNotFound as exc:
        recording.discard()
        print(f"aiotrace run: {exc}", file=sys.stderr)
        return 1
    interrupted = program.interrupted
    if os.getpid() != parent:
        # A child of os.fork() (a gunicorn worker, say) that returned from the
        # program: the parent's trace and summary are not its own.
        from .._follow import finish_child

        join_threads()
        finish_child()
        sigint.due = interrupted
        return status
    try:
        join_threads()
    except KeyboardInterrupt as exc:
        status = report_uncaught(exc)
        interrupted = True
    try:
        if recording.finish() and not args.quiet:
            print(recording.summary(with_findings=True), file=sys.stderr)
            children = _children_summary(path, started_ns) if follow else None
            if children:
                print(children, file=sys.stderr)
    except KeyboardInterrupt:
        status = INTERRUPTED
        interrupted = True
        print(recording.interrupted(), file=sys.stderr)
    sigint.due = interrupted
    return status


@dataclass
class _Recording:
    """_Recording is the trace ``aiotrace run`` writes, and its summary."""

    path: str
    args: argparse.Namespace
    stop: Callable[[], None]
    counts: Callable[[], tuple[int, int, int]]  # events, lost, bytes written
    whole: Callable[[], bool]  # whether the file has been written whole
    follower: Follower
    finished: bool = False
    stopped: bool = False

    def finish(self) -> bool:
        """Stops the trace once; returns whether it was written whole."""
        from .._errors import TracingError

        if self.finished:
            return self.stopped
        self.finished = True
        sys.stdout.flush()
        try:
            self.stop()
        except TracingError as exc:
            print(f"aiotrace run: {exc}", file=sys.stderr)
            return False
        self.stopped = True
        return True

    def discard(self) -> None:
        """Stops the trace and removes its file: the program never ran."""
        import contextlib

        from .._errors import TracingError

        self.finished = True
        with contextlib.suppress(TracingError):
            self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def summary(self, *, with_findings: bool = False) -> str:
        """The exit summary, from what was followed while tracing; with the
        trace's findings first if ``with_findings`` and the file is whole."""
        from .._run_summary import summary

        events, lost, written = self.counts()
        changed = _changed(self.path, written)
        text = summary(
            self.path,
            self.follower,
            events=events,
            lost_events=lost,
            stall_threshold=self.args.stall_threshold,
            runtime_events=self.args.runtime_events,
            changed=changed,
        )
        if self.args.flight is not None:
            text = (
                f"aiotrace: flight recorder: kept about the last "
                f"{self.args.flight:g} s (whole generations, at most "
                f"{self.args.flight_max_mib:g} MiB, {written:,} bytes written); "
                "the figures below cover the whole run\n" + text
            )
        if with_findings and changed is None:
            found = _findings(self.path, written)
            if found:
                first, _, rest = text.partition("\n")
                text = f"{first}\n{found}" + (f"\n{rest}" if rest else "")
        return text

    def interrupted(self) -> str:
        """What a second Ctrl-C, while the trace was being finished, left."""
        if self.stopped or self.whole():
            return (
                f"aiotrace: interrupted; the trace {self.path} is whole "
                "(no summary printed)"
            )
        return (
            f"aiotrace: interrupted while finishing the trace; {self.path} is "
            "cut short (aiotrace reads it up to the cut, with a warning)"
        )


_MTIME_SLACK_NS = 1_000_000_000
"""How much older than the run a child's trace file may look and still count."""


def _children_summary(path: str, since_ns: int) -> str | None:
    """The lines of the exit summary that list the child processes' traces."""
    from .._follow import child_traces

    found = child_traces(path, since_ns)
    files = [f for f in found if _size(f) != 0]
    empty = len(found) - len(files)
    note = (
        f"\n  and {empty} empty (a child that ran another program or died as it "
        "started), left out"
        if empty
        else ""
    )
    if not files:
        return f"aiotrace: no child process trace{note}" if empty else None
    shown = files if len(files) <= 8 else [*files[:8], f"... ({len(files) - 8} more)"]
    return (
        f"aiotrace: {len(files)} child process trace{'s' if len(files) > 1 else ''}: "
        + ", ".join(shown)
        + f"\n  all together: aiotrace stats {path} {_pattern(path)}"
        + note
    )


FINDINGS_MAX_BYTES = 8 << 20
"""The largest trace whose findings ``aiotrace run`` works out at exit; a
larger one gets a pointer to ``aiotrace stats``, which has them."""


def _findings(path: str, written: int) -> str:
    """The findings of the trace in ``path``, as the exit summary shows them."""
    q = shlex.quote(path)
    if written > FINDINGS_MAX_BYTES:
        return f"aiotrace: findings: see `aiotrace stats {q}` (a large trace)"
    from ..analysis import diagnose, format_findings
    from ..reader import TraceError

    try:
        diagnosis = diagnose(path)
    except (OSError, TraceError) as exc:
        return f"aiotrace: no findings: the trace could not be read back ({exc})"
    if not diagnosis.findings:
        return ""  # the summary below says what there is to say
    return format_findings(diagnosis, top=5, prefix="aiotrace: ").rstrip("\n")


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _pattern(path: str) -> str:
    """The shell pattern of ``path``'s child traces: ``app.*.trace``."""
    root, ext = os.path.splitext(path)
    return f"{root}.*{ext}" if ext else f"{path}.*"


def _changed(path: str, written: int) -> str | None:
    """Says how the file differs from the ``written`` bytes, if it does."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return f"the trace file is gone or unreadable now ({exc.strerror or exc})"
    if size < written:
        return (
            f"the trace file was changed after it was written: it is truncated "
            f"({size:,} of {written:,} bytes)"
        )
    if size > written:
        return (
            f"the trace file grew after it was written ({size:,} bytes, "
            f"not {written:,})"
        )
    return None


def _record(path: str, args: argparse.Namespace) -> _Recording:
    """Starts recording into ``path``, following it for the summary."""
    from .._flight import FlightRecorder
    from .._tracer import start

    options = start_options(args)
    if args.flight is None:
        tracer = start(path, **options)
        follower = _follow(tracer._drainer)
        return _Recording(
            path,
            args,
            tracer.stop,
            lambda: (tracer.events, tracer.lost_events, tracer.bytes_written),
            lambda: tracer._writer_done.is_set() and tracer.error is None,
            follower,
        )
    rec = FlightRecorder(
        max_bytes=int(args.flight_max_mib * (1 << 20)),
        min_age=args.flight,
        **options,
    )
    with open(path, "wb"):  # a bad path fails now, not when the program ends
        pass
    rec.start()
    session = rec._session
    assert session is not None
    drainer = session.drainer
    follower = _follow(drainer)
    written = [0]

    def stop() -> None:
        rec.stop()
        written[0] = rec.write_to(path)

    return _Recording(
        path,
        args,
        stop,
        lambda: (drainer.events, drainer.lost_events, written[0]),
        lambda: written[0] > 0,
        follower,
    )


def _follow(drainer: Drainer) -> Follower:
    from .._run_summary import Follower

    labels = drainer.tracker.scope["coro_labels"]
    follower = Follower(lambda cid: str(labels.get(cid, "")))
    drainer.on_batch = follower.feed
    return follower
