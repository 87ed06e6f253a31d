"""``aiotrace export FILE -o OUT.json``: Perfetto / Chrome trace-event JSON."""

from __future__ import annotations

import argparse
import sys

from ._common import add_export_arguments, open_for_export

HELP = "write a trace as Perfetto / Chrome trace-event JSON (ui.perfetto.dev)"
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_export_arguments(p, "JSON", ".json")
    p.add_argument(
        "--no-coroutine-tracks",
        dest="coroutine_tracks",
        action="store_false",
        help="leave out the track of each coroutine's states and the flow "
        "arrows (steps stay on the loop tracks): about 40% smaller",
    )


def run(args: argparse.Namespace) -> int:
    from ..export import write_perfetto

    opened = open_for_export(args, ".json")
    if opened is None:
        return 1
    out, source = opened
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
