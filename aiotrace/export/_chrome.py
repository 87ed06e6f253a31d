"""The Chrome trace-event format, as Perfetto reads it, and a streaming writer.

The format is documented in Google's "Trace Event Format" note: a JSON
object whose ``traceEvents`` array holds one object per event, with
timestamps in microseconds.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TextIO, TypedDict

Phase = Literal["B", "E", "b", "e", "i", "C", "s", "f", "M"]


class TraceEvent(TypedDict, total=False):
    """TraceEvent is one entry of ``traceEvents``; keys as the format names them."""

    ph: Phase  # B/E: slice on a thread track; b/e: async slice; i: instant;
    # C: counter; s/f: flow start/end; M: metadata (names, sort order)
    name: str
    cat: str
    ts: float  # microseconds since the trace began
    pid: int
    tid: int
    id2: dict[str, int]  # async slices: {"local": id}, scoped to the process
    id: int  # flows
    bp: Literal["e"]  # flow binding: to the enclosing slice
    s: Literal["t", "p", "g"]  # instant scope
    args: dict[str, Any]


class JsonWriter:
    """JsonWriter streams trace events into one JSON object, one event a line.

    Nothing is held back: each event is encoded and written when it is
    given, so the output of a trace of any length takes constant memory.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._first = True
        self._encode = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, check_circular=False
        ).encode
        self.count = 0
        self._quoted: dict[str, str] = {}
        out.write('{"traceEvents":[\n')

    def write(self, ev: TraceEvent) -> None:
        """Writes one event."""
        text = self._encode(ev)
        if self._first:
            self._first = False
            self._out.write(text)
        else:
            self._out.write(",\n" + text)
        self.count += 1

    def write_slice(
        self,
        ph: str,
        ts: float,
        pid: int,
        tid: int,
        name: str,
        cat: str,
        args: dict[str, Any] | None,
        async_id: int | None,
    ) -> None:
        """Writes a B/E (or async b/e) event: the same JSON as ``write``, faster.

        Slices are most of the output, so they skip building a dict; names
        repeat, so their JSON form is cached.
        """
        quoted = self._quoted.get(name)
        if quoted is None:
            quoted = self._encode(name)
            if len(self._quoted) < 100_000:
                self._quoted[name] = quoted
        text = (
            f'{{"ph":"{ph}","ts":{ts!r},"pid":{pid},"tid":{tid},'
            f'"name":{quoted},"cat":"{cat}"'
        )
        if async_id is not None:
            text += f',"id2":{{"local":{async_id}}}'
        if args:
            text += ',"args":' + self._encode(args)
        if self._first:
            self._first = False
            self._out.write(text + "}")
        else:
            self._out.write(",\n" + text + "}")
        self.count += 1

    def close(self, other_data: dict[str, Any]) -> None:
        """Ends the array and the object; ``other_data`` goes in ``otherData``."""
        self._out.write('\n],"displayTimeUnit":"ns","otherData":')
        self._out.write(json.dumps(other_data, ensure_ascii=False))
        self._out.write("}\n")
