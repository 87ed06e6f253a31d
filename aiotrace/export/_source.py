"""Event sources for the exporters: a path, a binary file, or events."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import IO, Any, Protocol

from ..reader import Event, Reader, TraceError


class Readable(Protocol):
    """Anything with a binary ``read(n)``, as a file opened with ``"rb"``."""

    def read(self, n: int = -1, /) -> bytes:
        """Reads up to ``n`` bytes; ``b""`` at the end."""
        ...


Source = str | os.PathLike[str] | IO[bytes] | Readable | Iterable[Event]
"""What an exporter reads: a trace path, a binary file object, or events."""


class EventStream:
    """EventStream iterates over a source's events once, keeping the first error.

    A TraceError ends the iteration instead of escaping it, so an exporter
    can finish its output with the events read before the fault; the error
    is then in ``error``. OSError (the file cannot be opened) is raised by
    the constructor.
    """

    def __init__(self, source: Source) -> None:
        self.error: TraceError | None = None
        self.events = 0
        self._close: Any = None
        if isinstance(source, str | os.PathLike):
            f = open(source, "rb")  # noqa: SIM115
            self._close = f.close
            self._iter: Iterable[Event] = Reader(f)
        elif callable(getattr(source, "read", None)):
            self._iter = Reader(source)  # type: ignore[arg-type]
        else:
            self._iter = source  # type: ignore[assignment]

    def __iter__(self) -> Iterator[Event]:
        try:
            for ev in self._iter:
                self.events += 1
                yield ev
        except TraceError as exc:
            self.error = exc
        finally:
            if self._close is not None:
                self._close()
                self._close = None
