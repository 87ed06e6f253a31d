"""Tracks whose slices always nest, whatever order they begin and end in,
and the interface of the writers they draw through.

Perfetto drops a slice that ends while a slice begun after it is still
open on the same track. Trace ranges do not promise to nest (a loop stall
can end after the step it covers), so a Track that is asked to end a slice
below the top of its stack ends the slices above it, ends it, and begins
them again at the same time, marked ``"continued": true``.

Times are nanoseconds since the trace's first event.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple, Protocol

Args = dict[str, Any]


class Flow(NamedTuple):
    """Flow is an arrow from the slice open on ``src`` to a slice being begun."""

    id: int
    name: str
    src: Any  # the source track's handle


class Sink(Protocol):
    """Sink is what the exporter draws through: Perfetto protobuf or JSON.

    Track handles are whatever the sink's ``thread_track`` and
    ``async_track`` return.
    """

    def process(self, pid: int, name: str, sort_index: int) -> None:
        """Declares a process (a group of tracks)."""

    def thread_track(self, pid: int, tid: int, sort_index: int | None) -> Any:
        """Declares a thread track; returns its handle."""

    def async_track(self, pid: int, async_id: int, name: str) -> Any:
        """Declares an async track, named ``name``; returns its handle."""

    def name_thread(self, track: Any, name: str) -> None:
        """Names a thread track (once, after its events)."""

    def begin(
        self,
        track: Any,
        ts: int,
        name: str,
        cat: str,
        args: Args | None,
        flow: Flow | None,
    ) -> None:
        """Begins a slice; ``flow`` ends an arrow on it."""

    def end(self, track: Any, ts: int, name: str, cat: str, args: Args | None) -> None:
        """Ends the innermost slice open on the track."""

    def switch(
        self,
        track: Any,
        ts: int,
        old_name: str,
        old_cat: str,
        name: str,
        cat: str,
        args: Args | None,
        flow: Flow | None,
    ) -> None:
        """Ends the innermost slice (``old_name``) and begins another, at
        ``ts``: ``end`` then ``begin``, in one call."""

    def instant(self, track: Any, ts: int, name: str, cat: str, args: Args) -> None:
        """Draws an instant event on a thread track."""

    def counter(self, ts: int, name: str, value: float) -> None:
        """Sets the counter ``name`` of process 1."""


class Track:
    """Track is one timeline row: a thread track or an async track.

    Invariant: ``_open`` lists the slices begun and not yet ended, outermost
    first, as (key, name, cat, args); every slice begun is ended.
    """

    __slots__ = ("_open", "_sink", "handle", "is_async")

    def __init__(self, sink: Sink, handle: Any, *, is_async: bool = False) -> None:
        self._sink = sink
        self.handle = handle
        self.is_async = is_async
        self._open: list[tuple[Hashable, str, str, Args | None]] = []

    def __bool__(self) -> bool:
        return bool(self._open)

    def is_open(self, key: Hashable) -> bool:
        """Says whether a slice begun with ``key`` is still open."""
        return any(k == key for k, _, _, _ in self._open)

    def begin(
        self,
        ts: int,
        key: Hashable,
        name: str,
        cat: str,
        args: Args | None = None,
        flow: Flow | None = None,
    ) -> None:
        """Begins a slice, nested in whatever is open."""
        self._open.append((key, name, cat, args))
        self._sink.begin(self.handle, ts, name, cat, args, flow)

    def switch(
        self,
        ts: int,
        key: Hashable,
        name: str,
        cat: str,
        args: Args | None = None,
        flow: Flow | None = None,
    ) -> None:
        """Ends the innermost open slice begun with ``key``, if any, and
        begins another with the same key."""
        opened = self._open
        if opened and opened[-1][0] == key:  # quicker, in one call to the sink
            _, old_name, old_cat, _ = opened[-1]
            opened[-1] = (key, name, cat, args)
            self._sink.switch(self.handle, ts, old_name, old_cat, name, cat, args, flow)
            return
        self.end(ts, key)
        self.begin(ts, key, name, cat, args, flow)

    def end(self, ts: int, key: Hashable, args: Args | None = None) -> bool:
        """Ends the innermost open slice begun with ``key``; False if none is."""
        opened = self._open
        if opened and opened[-1][0] == key:  # the common case: it is on top
            _, name, cat, _ = opened.pop()
            self._sink.end(self.handle, ts, name, cat, args)
            return True
        for i in range(len(opened) - 1, -1, -1):
            if opened[i][0] == key:
                break
        else:
            return False
        sink = self._sink
        above = opened[i + 1 :]
        for _, name, cat, _ in reversed(above):
            sink.end(self.handle, ts, name, cat, None)
        _, name, cat, _ = opened[i]
        sink.end(self.handle, ts, name, cat, args)
        del opened[i:]
        for k, name, cat, a in above:
            cont = dict(a or ())
            cont["continued"] = True
            opened.append((k, name, cat, cont))
            sink.begin(self.handle, ts, name, cat, cont, None)
        return True

    def end_all(self, ts: int, args: Args | None = None) -> None:
        """Ends every open slice, innermost first."""
        while self._open:
            _, name, cat, _ = self._open.pop()
            self._sink.end(self.handle, ts, name, cat, args)

    def instant(self, ts: int, name: str, cat: str, args: Args) -> None:
        """Draws an instant event on this (thread) track."""
        self._sink.instant(self.handle, ts, name, cat, args)
