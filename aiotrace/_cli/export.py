"""``aiotrace export FILE [-o OUT]``: Perfetto's protobuf, or trace-event JSON."""

from __future__ import annotations

import argparse
import os
import sys

from ._common import add_export_arguments, open_for_export

HELP = "write a trace for Perfetto (ui.perfetto.dev): its protobuf format, or JSON"
ORDER = 40
SUFFIXES = {"proto": ".pftrace", "json": ".json"}
# Beyond these sizes a browser tab tends to run out of memory loading the
# file (the 834 MB of JSON did; the protobuf unpacks to ~8x its size).
BROWSER_LIMIT = {"proto": 150 * 2**20, "json": 300 * 2**20}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write a trace for Perfetto: its own protobuf format (TracePacket / "
        "TrackEvent, by default), which ui.perfetto.dev and trace processor "
        "open, or Chrome trace-event JSON (--format json), which "
        "ui.perfetto.dev and chrome://tracing open. The protobuf is about a "
        "twentieth of the JSON's size."
    )
    add_export_arguments(p, "output", ".pftrace, or .json with --format json")
    for action in p._actions:
        if action.dest == "file":  # several traces: one per process
            action.nargs = "+"
            action.help = (
                "a trace file; several (one per process: app.trace app.*.trace) "
                "go into one output on one timeline, each trace its own processes"
            )
    p.add_argument(
        "--format",
        choices=("proto", "json"),
        default=None,
        help="proto: Perfetto's protobuf (the default); json: Chrome "
        "trace-event JSON (the default when OUT ends in .json)",
    )
    p.add_argument(
        "--no-coroutine-tracks",
        dest="coroutine_tracks",
        action="store_false",
        help="leave out the track of each coroutine's states and the flow "
        "arrows between coroutines (the steps stay on the loop tracks): for "
        "traces of many coroutines; the output is about 40%% smaller",
    )


def run(args: argparse.Namespace) -> int:
    from ..export import write_perfetto

    fmt = args.format
    if fmt is None:
        fmt = "json" if (args.output or "").endswith(".json") else "proto"
    if len(args.file) > 1:
        return _run_many(args, fmt)
    args.file = args.file[0]
    opened = open_for_export(args, SUFFIXES[fmt])
    if opened is None:
        return 1
    out, source = opened
    try:
        with source:
            result = write_perfetto(
                source, out, coroutine_tracks=args.coroutine_tracks, format=fmt
            )
    except OSError as exc:
        print(f"aiotrace: {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    error = result.error
    if error is not None:
        print(
            f"aiotrace: {args.file}: {error}; {out} holds the "
            f"{result.events} events read before it",
            file=sys.stderr,
        )
        # A trace cut short (a killed program) is still worth looking at;
        # a corrupt one is an error.
        if not error.reason.startswith("the trace is truncated"):
            return 1
    print(f"wrote {out}: {result.events} events; {where_to_open(out, fmt)}")
    return 0


def where_to_open(out: str, fmt: str) -> str:
    """Says what can open the output, by its format and its size."""
    try:
        size = os.path.getsize(out)
    except OSError:
        size = 0
    if size > BROWSER_LIMIT[fmt]:
        return (
            f"{size / 2**20:.0f} MiB is likely more than ui.perfetto.dev can "
            f"load in a browser tab: run `trace_processor --httpd {out}` "
            "(https://perfetto.dev/docs/visualization/large-traces) and open "
            "https://ui.perfetto.dev, which then uses it"
            + ("; --format proto is far smaller" if fmt == "json" else "")
        )
    if fmt == "json":
        return "open it in https://ui.perfetto.dev or chrome://tracing"
    return "open it in https://ui.perfetto.dev (or with trace_processor)"


def _run_many(args: argparse.Namespace, fmt: str) -> int:
    from ..export._processes import write_perfetto_processes
    from ._common import default_output

    out: str = args.output or default_output(args.file[0], SUFFIXES[fmt])
    full = {os.path.abspath(f) for f in args.file}
    if os.path.abspath(out) in full:
        print(f"aiotrace: {out}: would overwrite a trace", file=sys.stderr)
        return 1
    from .stats import skip_empty

    files = skip_empty(args.file)
    if not files:
        return 1
    try:
        result = write_perfetto_processes(
            files,
            out,
            coroutine_tracks=args.coroutine_tracks,
            format="json" if fmt == "json" else "proto",
        )
    except OSError as exc:
        print(f"aiotrace: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    status = 0
    for p in result.processes:
        if not p.aligned:
            print(
                f"aiotrace: {p.file}: no clock sync; placed at the start, unaligned",
                file=sys.stderr,
            )
        if p.error is not None:
            print(
                f"aiotrace: {p.file}: {p.error}; {out} holds the {p.events} "
                "events read before it",
                file=sys.stderr,
            )
            if not p.error.reason.startswith("the trace is truncated"):
                status = 1
    events = sum(p.events for p in result.processes)
    print(
        f"wrote {out}: {len(result.processes)} processes, {events} events; "
        f"{where_to_open(out, fmt)}"
    )
    return status
