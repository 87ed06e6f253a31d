"""The ``aiotrace`` command line: a thin layer over the library.

Each command lives in its own module here (``aiotrace/_cli/<command>.py``)
and provides ``HELP`` (one line), ``ORDER`` (its place in ``--help``),
``add_arguments(parser)`` and ``run(args) -> int``. Modules must be cheap
to import: they import the library inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType


def _commands() -> list[tuple[str, ModuleType]]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append((info.name, module))
    found.sort(key=lambda item: (getattr(item[1], "ORDER", 100), item[0]))
    return found


def _parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    p = argparse.ArgumentParser(
        prog="aiotrace",
        description="An execution tracer for asyncio, in the spirit of Go's "
        "runtime/trace.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, module in _commands():
        cmd = sub.add_parser(
            name.replace("_", "-"), help=module.HELP, description=module.HELP
        )
        module.add_arguments(cmd)
        modules[name.replace("_", "-")] = module
    return p, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser, modules = _parser()
    args = parser.parse_args(argv)
    args.parser = parser
    try:
        status: int = modules[args.command].run(args)
    except BrokenPipeError:
        # `aiotrace dump t.trace | head` closes the pipe early: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    return status
