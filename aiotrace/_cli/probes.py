"""``aiotrace probes MODULE``: the tracepoints a module declares."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "list the tracepoints a module declares"
ORDER = 80


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "module",
        metavar="MODULE",
        help="a module name (importable from the current directory) or a .py file",
    )


def run(args: argparse.Namespace) -> int:
    import importlib
    import importlib.util

    from .._probe import describe, tracepoints

    target: str = args.module
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
