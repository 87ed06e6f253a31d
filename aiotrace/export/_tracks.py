"""Tracks whose slices always nest, whatever order they begin and end in.

Perfetto drops a slice that ends while a slice begun after it is still
open on the same track. Trace ranges do not promise to nest (a loop stall
can end after the step it covers), so a Track that is asked to end a slice
below the top of its stack ends the slices above it, ends it, and begins
them again at the same time, marked ``"continued": true``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ._chrome import JsonWriter


class Track:
    """Track is one timeline row: a thread track (B/E) or an async track (b/e).

    Invariant: ``_open`` lists the slices begun and not yet ended, outermost
    first, as (key, name, cat, args); every B written has its E.
    """

    __slots__ = ("_open", "_out", "async_id", "pid", "tid")

    def __init__(
        self,
        out: JsonWriter,
        pid: int,
        tid: int,
        async_id: int | None = None,
    ) -> None:
        self._out = out
        self.pid = pid
        self.tid = tid
        self.async_id = async_id
        self._open: list[tuple[Hashable, str, str, dict[str, Any] | None]] = []

    def __bool__(self) -> bool:
        return bool(self._open)

    def is_open(self, key: Hashable) -> bool:
        """Says whether a slice begun with ``key`` is still open."""
        return any(k == key for k, _, _, _ in self._open)

    def begin(
        self,
        ts: float,
        key: Hashable,
        name: str,
        cat: str,
        args: dict[str, Any] | None = None,
    ) -> None:
        """Begins a slice, nested in whatever is open."""
        self._open.append((key, name, cat, args))
        self._emit("B", ts, name, cat, args)

    def end(self, ts: float, key: Hashable, args: dict[str, Any] | None = None) -> bool:
        """Ends the innermost open slice begun with ``key``; False if none is."""
        opened = self._open
        for i in range(len(opened) - 1, -1, -1):
            if opened[i][0] == key:
                break
        else:
            return False
        above = opened[i + 1 :]
        for _, name, cat, _ in reversed(above):
            self._emit("E", ts, name, cat, None)
        _, name, cat, _ = opened[i]
        self._emit("E", ts, name, cat, args)
        del opened[i:]
        for k, name, cat, a in above:
            cont = dict(a or ())
            cont["continued"] = True
            opened.append((k, name, cat, cont))
            self._emit("B", ts, name, cat, cont)
        return True

    def end_all(self, ts: float, args: dict[str, Any] | None = None) -> None:
        """Ends every open slice, innermost first."""
        while self._open:
            _, name, cat, _ = self._open.pop()
            self._emit("E", ts, name, cat, args)

    def instant(self, ts: float, name: str, cat: str, args: dict[str, Any]) -> None:
        """Writes an instant event on this (thread) track."""
        self._out.write(
            {
                "ph": "i",
                "s": "t",
                "ts": ts,
                "pid": self.pid,
                "tid": self.tid,
                "name": name,
                "cat": cat,
                "args": args,
            }
        )

    def _emit(
        self, ph: str, ts: float, name: str, cat: str, args: dict[str, Any] | None
    ) -> None:
        if self.async_id is not None:
            ph = "b" if ph == "B" else "e"
        self._out.write_slice(
            ph, ts, self.pid, self.tid, name, cat, args, self.async_id
        )
