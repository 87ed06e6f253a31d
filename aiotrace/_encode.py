"""Encoding of in-memory events into format v1 frames, off the hot path.

One ``Encoder`` owns the current generation: its string and stack tables and
its counters. Tables start empty in every generation, so each generation can
be read on its own. Given a ``StateTracker`` (``follow``), it also follows
what is alive in the same pass, for the status records (``_restate``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import CodeType
from typing import Any

import msgpack

from ._format.framing import FrameKind, frame
from ._format.spec import SPECS, C, ResourceKind
from ._recorder import Event, clock
from ._restate import FOLLOW, StateTracker

MAX_STRING = 1 << 16
"""Longer strings are cut to this many characters, with a marker."""

_LABEL = C["Label"]


def _clip(value: object) -> str:
    s = value if type(value) is str else _to_str(value)
    if len(s) > MAX_STRING:
        s = s[:MAX_STRING] + f"...[{len(s) - MAX_STRING} more chars]"
    return s


def line_of(code: CodeType, lasti: object) -> int:
    """Returns the source line of the instruction at byte offset ``lasti``
    (a frame's ``f_lasti``), or 0 when it has none."""
    if type(lasti) is not int or lasti < 0:
        return 0
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line or 0
    return code.co_firstlineno


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_MACHINERY = (
    _PACKAGE + "_loop" + os.sep,
    _PACKAGE + "_cli" + os.sep,
    _PACKAGE + "_run.py",
    _PACKAGE + "__main__.py",
)
_RUNNER = (_PACKAGE + "_cli" + os.sep, _PACKAGE + "_run.py", _PACKAGE + "__main__.py")


def _is_runpy(filename: str) -> bool:
    return filename == "<frozen runpy>" or filename.endswith(os.sep + "runpy.py")


BY_OBJECT_MAX = 1 << 16
"""Most stack objects ``Encoder.stack_id`` knows by identity per generation
(stacks made afresh for each event fill it, and are then keyed by frames)."""


def _user_frames(stack: Any) -> list[Any]:
    """The frames of ``stack`` without aiotrace's own machinery: the hooks
    wrapped around the event loop's methods, and the frames of ``aiotrace
    run`` and ``python -m aiotrace`` (with the runpy frames they ran the
    program through), so a stack reads as it would without the tracer. A
    stack of nothing but machinery is kept whole."""
    frames = list(stack)
    files = [fr[0].co_filename if isinstance(fr[0], CodeType) else "" for fr in frames]
    hidden = [f.startswith(_MACHINERY) for f in files]
    if not any(hidden):
        return frames
    if any(f.startswith(_RUNNER) for f in files):
        hidden = [h or _is_runpy(f) for h, f in zip(hidden, files, strict=True)]
    if all(hidden):
        return frames
    return [fr for fr, h in zip(frames, hidden, strict=True) if not h]


def _to_str(value: object) -> str:
    try:
        return str(value)
    except Exception as exc:  # a user's __str__ must not break the trace
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


class Encoder:
    """Encoder turns drained events into frames, one generation at a time."""

    def __init__(self, follow: StateTracker | None = None) -> None:
        self._packer = msgpack.Packer(autoreset=True, use_bin_type=True)
        self.generation = -1
        self.batches = 0
        self.events = 0
        self.bytes = 0
        self.started_ns = 0
        self._strings: dict[str, int] = {}
        self._stacks: dict[Any, int] = {}
        self._stack_refs: list[Any] = []
        self._by_object: dict[int, tuple[Any, int]] = {}  # id(stack) -> kid
        self._new_strings: list[str] = []
        self._new_stacks: list[list[Any]] = []
        self._threads_seen: set[int] = set()
        self._convert: dict[int, Callable[[Event, int], tuple[Any, ...]]] = {}
        self._nargs: dict[int, int] = {}
        self.follow = follow
        """The tracker that ``encode_batch(..., follow=True)`` feeds."""
        self._follow_convert = self._convert
        for spec in SPECS:
            self._nargs[spec.code] = len(spec.args)
            self._convert[spec.code] = self._converter(
                spec.code, spec.string_args, spec.stack_args
            )
        if follow is not None:
            self._follow_convert = {
                spec.code: self._converter(
                    spec.code,
                    spec.string_args,
                    spec.stack_args,
                    FOLLOW.get(spec.code),
                    follow.scope,
                )
                for spec in SPECS
            }

    def _converter(
        self,
        code: int,
        strings: tuple[int, ...],
        stacks: tuple[int, ...],
        follow: str | None = None,
        scope: dict[str, Any] | None = None,
    ) -> Callable[[Event, int], tuple[Any, ...]]:
        # Generated per event type: the encoder's inner loop calls it once per
        # event. Straight-line code is much faster than a loop over argument
        # positions, and the unpacking checks the event's arity for free.
        # ``follow`` is a statement of the tracker's, run first, with the
        # tracker's ``scope`` as the function's globals.
        names = [f"a{i}" for i in range(self._nargs[code])]
        lines = [
            "def convert(ev, dt):",
            f"    _, _, {''.join(n + ', ' for n in names)}= ev",
        ]
        if follow is not None:
            lines += ["    " + line for line in follow.splitlines()]
        out = [str(code), "dt"]
        for i, name in enumerate(names):
            if i in strings:
                lines.append(
                    f"    s{i} = str_get({name}) if type({name}) is str else None"
                )
                lines.append(f"    if s{i} is None:")
                lines.append(f"        s{i} = string_id({name})")
                out.append(f"s{i}")
            elif i in stacks:
                lines.append(f"    k{i} = 0 if {name} is None else stack_id({name})")
                out.append(f"k{i}")
            else:
                out.append(name)
        lines.append(f"    return ({', '.join(out)})")
        namespace: dict[str, Any] = {} if scope is None else scope
        namespace["str_get"] = self._strings.get
        namespace["string_id"] = self.string_id
        namespace["stack_id"] = self.stack_id
        exec("\n".join(lines), namespace)
        convert: Callable[[Event, int], tuple[Any, ...]] = namespace["convert"]
        return convert

    def string_id(self, value: object) -> int:
        """Returns the id of a string in this generation, defining it if new."""
        sid = self._strings.get(value) if type(value) is str else None
        if sid is None:
            s = _clip(value)
            sid = self._strings.get(s)
            if sid is None:
                sid = len(self._strings)
                self._strings[s] = sid
                self._new_strings.append(s)
        return sid

    def stack_id(self, stack: Any) -> int:
        """Returns the id of a stack in this generation (0 for none), defining it."""
        if not stack:
            return 0
        # The same stack object again (a wait's site, cached by the hooks):
        # its id, without keying its frames. The entry holds the stack, so
        # its id stays its own for the generation.
        hit = self._by_object.get(id(stack))
        if hit is not None:
            return hit[1]
        kid = self._stack_key_id(stack)
        if len(self._by_object) < BY_OBJECT_MAX:
            self._by_object[id(stack)] = (stack, kid)
        return kid

    def _stack_key_id(self, stack: Any) -> int:
        """``stack_id`` by the stack's frames."""
        # Keyed by the identity of each frame's code object: hashing a code
        # object hashes its bytecode, 5-40 us per frame on 3.12+. The ids stay
        # valid because _stack_refs keeps the stacks alive for the generation.
        key = tuple([(id(fr[0]), *fr[1:]) for fr in stack])
        kid = self._stacks.get(key)
        if kid is None:
            flat: list[Any] = []
            for fr in _user_frames(stack):
                if isinstance(fr[0], CodeType):
                    co: CodeType = fr[0]
                    flat += (
                        self.string_id(co.co_qualname),
                        self.string_id(co.co_filename),
                        line_of(co, fr[1]),
                    )
                else:
                    func, file, line = fr
                    flat += (
                        self.string_id(func),
                        self.string_id(file),
                        line if type(line) is int else 0,
                    )
            kid = len(self._stacks) + 1
            self._stacks[key] = kid
            self._stack_refs.append(stack)
            self._new_stacks.append(flat)
        return kid

    def begin_generation(
        self, lost_events: int, *, now: int | None = None, wall: int | None = None
    ) -> bytes:
        """Starts a new generation and returns its GENERATION frame.

        ``now`` and ``wall`` default to the trace clock and the wall clock.
        """
        self.generation += 1
        self.batches = self.events = self.bytes = 0
        self._strings.clear()
        self._stacks.clear()
        self._stack_refs.clear()
        self._by_object.clear()
        self._new_strings.clear()
        self._new_stacks.clear()
        self._threads_seen.clear()
        self.started_ns = now = clock() if now is None else now
        wall = time.time_ns() if wall is None else wall
        payload = self._packer.pack([self.generation, now, wall, lost_events])
        return self._count(frame(FrameKind.GENERATION, payload))

    def end_generation(self) -> bytes:
        """Closes the generation and returns its GENERATION_END frame."""
        payload = self._packer.pack([self.generation, self.batches, self.events])
        return self._count(frame(FrameKind.GENERATION_END, payload))

    def end_trace(self, lost_events: int) -> bytes:
        """Returns the TRACE_END frame."""
        return frame(FrameKind.TRACE_END, self._packer.pack([lost_events]))

    def encode_batch(
        self,
        thread_id: int,
        thread_name: str,
        events: list[Event],
        *,
        follow: bool = False,
    ) -> bytes:
        """Returns the frames for one thread's events: new table entries, then
        the BATCH frame. The first batch of a thread in a generation also
        labels the thread with its name. With ``follow`` (and a tracker),
        the tracker follows the events in the same pass.

        Raises:
            ValueError: an event does not match the spec table (a bug in the
                code that recorded it).
        """
        convert = self._convert
        try:
            base = events[0][1] if events else clock()
        except (IndexError, TypeError, KeyError) as exc:
            raise ValueError(f"event {events[0]!r} has no time: {exc!r}") from None
        out: list[Any] = [thread_id, base]
        append = out.append
        new_thread = thread_id not in self._threads_seen
        if new_thread:
            label = (_LABEL, base, ResourceKind.THREAD, thread_id, thread_name)
            append(convert[_LABEL](label, 0))
        tracker = self.follow if follow and events else None
        if tracker is not None:
            convert = self._follow_convert
            tracker.begin_batch(thread_id, thread_name)
        last = earliest = base
        try:
            for ev in events:
                t = ev[1]
                dt = t - last
                if dt < 0 and t < earliest:  # the earliest follows a step back
                    earliest = t
                append(convert[ev[0]](ev, dt))
                last = t
            if tracker is not None:
                tracker.end_batch(thread_id, earliest)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            if tracker is not None:
                tracker.abort_batch()
            raise ValueError(
                f"event {ev[:2]!r} does not match the spec table: {exc!r}"
            ) from None
        if new_thread:
            self._threads_seen.add(thread_id)
        parts: list[bytes] = []
        if self._new_strings:
            parts.append(self._table(FrameKind.STRINGS, self._new_strings, 0))
        if self._new_stacks:
            parts.append(self._table(FrameKind.STACKS, self._new_stacks, 1))
        parts.append(frame(FrameKind.BATCH, self._packer.pack(out)))
        self.batches += 1
        self.events += len(out) - 2
        return self._count(b"".join(parts))

    def _table(self, kind: FrameKind, entries: list[Any], first_id: int) -> bytes:
        table = self._strings if kind is FrameKind.STRINGS else self._stacks
        start = len(table) - len(entries) + first_id
        data = frame(kind, self._packer.pack([start, *entries]))
        entries.clear()
        return data

    def _count(self, data: bytes) -> bytes:
        self.bytes += len(data)
        return data
