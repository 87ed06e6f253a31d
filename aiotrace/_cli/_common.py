"""What several commands share: argument types, reading a trace with progress
and errors on stderr, and the output file of the export commands.

Cheap to import: the reader and the analysis are imported inside functions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

T = TypeVar("T")


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


class Progress:
    """Progress shows how far the analysis is, on a terminal's stderr."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.shown = False
        self.last = ""
        self.next = time.monotonic() + 0.5

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + 0.2
        if total:
            where = f"{100 * done / total:.0f}% of {total / 2**20:.0f} MiB"
        else:
            where = f"{done / 2**20:.0f} MiB"
        text = f"\raiotrace: reading {self.file}: {where} "
        if text != self.last:
            sys.stderr.write(text)
            sys.stderr.flush()
            self.last = text
        self.shown = True

    def clear(self) -> None:
        """Erases the progress line, if one was shown."""
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def read_trace(file: str, analyse: Callable[[Any, Progress | None], T]) -> T | None:
    """Returns ``analyse(source, progress)`` over ``file`` (``-`` is stdin).

    The source is the path, or stdin's binary buffer; progress is shown on
    stderr when it is a terminal. A file that cannot be read or a malformed
    trace is said on stderr and gives None.
    """
    from ..reader import TraceError

    progress = Progress(file) if sys.stderr.isatty() else None
    try:
        result = analyse(sys.stdin.buffer if file == "-" else file, progress)
    except OSError as exc:
        print(f"aiotrace: {file}: {exc.strerror or exc}", file=sys.stderr)
        return None
    except TraceError as exc:
        if progress is not None:
            progress.clear()
        print(f"aiotrace: {file}: {exc}", file=sys.stderr)
        return None
    if progress is not None:
        progress.clear()
    return result


def report_truncated(file: str, truncated: str | None) -> None:
    """Says on stderr that the trace was cut short, after the output."""
    if truncated:
        sys.stdout.flush()
        print(
            f"aiotrace: {file}: {truncated} (the output covers what was read)",
            file=sys.stderr,
        )


def add_export_arguments(p: argparse.ArgumentParser, kind: str, suffix: str) -> None:
    """Adds FILE and -o OUT, the ``kind`` file to write (default FILE.suffix)."""
    p.add_argument("file", metavar="FILE", help="a trace file")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help=f"the {kind} file to write (default: FILE with the suffix {suffix})",
    )


def default_output(file: str, suffix: str) -> str:
    """FILE with its suffix replaced by ``suffix`` (``out.trace`` -> ``out.json``)."""
    root, ext = os.path.splitext(file)
    return (root if ext else file) + suffix


class ProgressFile:
    """ProgressFile reads a binary file for the reader and shows, on a
    terminal's stderr, how much of it has been read."""

    def __init__(self, f: IO[bytes], name: str) -> None:
        self._f = f
        self._done = 0
        try:
            self._size: int | None = os.fstat(f.fileno()).st_size
        except (OSError, ValueError):
            self._size = None
        self.progress = Progress(name) if sys.stderr.isatty() else None

    def read(self, n: int = -1) -> bytes:
        """Reads up to ``n`` bytes, and shows progress now and then."""
        data = self._f.read(n)
        self._done += len(data)
        if self.progress is not None:
            self.progress(self._done, self._size)
        return data

    def __enter__(self) -> ProgressFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.clear()
        self._f.close()


def open_for_export(
    args: argparse.Namespace, suffix: str
) -> tuple[str, ProgressFile] | None:
    """Returns (output path, the trace opened for reading, with progress on
    a terminal) for an export command, or None after saying on stderr why
    not (the output would overwrite the trace, or the trace cannot be
    opened)."""
    out: str = args.output or default_output(args.file, suffix)
    if os.path.abspath(out) == os.path.abspath(args.file):
        print(f"aiotrace: {out}: would overwrite the trace", file=sys.stderr)
        return None
    try:
        source = open(args.file, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        print(f"aiotrace: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return None
    return out, ProgressFile(source, args.file)
