"""``aiotrace export FILE -o OUT.json``: Perfetto / Chrome trace-event JSON."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "write a trace as Perfetto / Chrome trace-event JSON (ui.perfetto.dev)"
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a trace file")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="the JSON file to write (default: FILE with the suffix .json)",
    )
    p.add_argument(
        "--no-coroutine-tracks",
        dest="coroutine_tracks",
        action="store_false",
        help="leave out the track of each coroutine's states and the flow "
        "arrows (steps stay on the loop tracks): about 40% smaller",
    )


def default_output(file: str, suffix: str) -> str:
    """FILE with its suffix replaced by ``suffix`` (``out.trace`` -> ``out.json``)."""
    root, ext = os.path.splitext(file)
    return (root if ext else file) + suffix


def run(args: argparse.Namespace) -> int:
    from ..export import write_perfetto

    out = args.output or default_output(args.file, ".json")
    if os.path.abspath(out) == os.path.abspath(args.file):
        print(f"aiotrace: {out}: would overwrite the trace", file=sys.stderr)
        return 1
    try:
        source = open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"aiotrace: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        with source:
            result = write_perfetto(source, out, coroutine_tracks=args.coroutine_tracks)
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
    print(f"wrote {out}: {result.events} events; open it in https://ui.perfetto.dev")
    return 0
