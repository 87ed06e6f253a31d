"""The Chrome trace-event format, as Perfetto reads it, and a streaming writer.

The format is documented in Google's "Trace Event Format" note: a JSON
object whose ``traceEvents`` array holds one object per event, with
timestamps in microseconds.
"""

from __future__ import annotations

import json
from typing import IO, Any, Literal, TypedDict

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


class JsonTrack:
    """JsonTrack is a JsonWriter's handle of a track: its ids, pre-formatted."""

    __slots__ = ("begin_ph", "end_ph", "pid", "tid", "where")

    def __init__(self, pid: int, tid: int, async_id: int | None) -> None:
        self.pid = pid
        self.tid = tid
        self.where = f'"pid":{pid},"tid":{tid}'
        if async_id is None:
            self.begin_ph, self.end_ph = "B", "E"
        else:
            self.begin_ph, self.end_ph = "b", "e"
            self.where += f',"id2":{{"local":{async_id}}}'


class JsonWriter:
    """JsonWriter streams trace events into one JSON object, one event a line.

    It is the exporter's Sink for JSON. Nothing is held back: each event is
    encoded and written when it is given, so the output of a trace of any
    length takes constant memory. Times given in nanoseconds are written
    in microseconds, as the format wants.
    """

    def __init__(self, out: IO[str]) -> None:
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

    def _meta(self, name: str, pid: int, tid: int, args: dict[str, Any]) -> None:
        self.write({"ph": "M", "name": name, "pid": pid, "tid": tid, "args": args})

    def process(self, pid: int, name: str, sort_index: int) -> None:
        """Names a process and gives its place."""
        self._meta("process_name", pid, pid, {"name": name})
        self._meta("process_sort_index", pid, pid, {"sort_index": sort_index})

    def thread_track(self, pid: int, tid: int, sort_index: int | None) -> JsonTrack:
        """A thread track's handle; gives its place if ``sort_index`` is set."""
        if sort_index is not None:
            self._meta("thread_sort_index", pid, tid, {"sort_index": sort_index})
        return JsonTrack(pid, tid, None)

    def async_track(self, pid: int, async_id: int, name: str) -> JsonTrack:
        """An async track's handle (b/e events with ``id2.local``)."""
        return JsonTrack(pid, pid, async_id)

    def name_thread(self, track: JsonTrack, name: str) -> None:
        """Names a thread track."""
        self._meta("thread_name", track.pid, track.tid, {"name": name})

    def begin(
        self,
        track: JsonTrack,
        ts: int,
        name: str,
        cat: str,
        args: dict[str, Any] | None,
        flow: Any,
    ) -> None:
        """Writes a B (or b) event, then the arrow ``flow`` to it, if any."""
        self._slice(track.begin_ph, track, ts, name, cat, args)
        if flow is not None:
            fid, fname, src = flow
            common: TraceEvent = {
                "name": fname,
                "cat": "flow",
                "id": fid,
                "ts": ts / 1000,
            }
            self.write({**common, "ph": "s", "pid": src.pid, "tid": src.tid})
            self.write(
                {**common, "ph": "f", "bp": "e", "pid": track.pid, "tid": track.tid}
            )

    def end(
        self,
        track: JsonTrack,
        ts: int,
        name: str,
        cat: str,
        args: dict[str, Any] | None,
    ) -> None:
        """Writes an E (or e) event."""
        self._slice(track.end_ph, track, ts, name, cat, args)

    def switch(
        self,
        track: JsonTrack,
        ts: int,
        old_name: str,
        old_cat: str,
        name: str,
        cat: str,
        args: dict[str, Any] | None,
        flow: Any,
    ) -> None:
        """Writes an E (or e) event, then a B (or b) one."""
        self._slice(track.end_ph, track, ts, old_name, old_cat, None)
        self.begin(track, ts, name, cat, args, flow)

    def instant(
        self, track: JsonTrack, ts: int, name: str, cat: str, args: dict[str, Any]
    ) -> None:
        """Writes an instant event, scoped to its thread."""
        self.write(
            {
                "ph": "i",
                "s": "t",
                "ts": ts / 1000,
                "pid": track.pid,
                "tid": track.tid,
                "name": name,
                "cat": cat,
                "args": args,
            }
        )

    def counter(self, ts: int, name: str, value: float) -> None:
        """Writes a counter event of process 1."""
        self.write(
            {
                "ph": "C",
                "name": name,
                "ts": ts / 1000,
                "pid": 1,
                "tid": 1,
                "args": {"value": value},
            }
        )

    def _slice(
        self,
        ph: str,
        track: JsonTrack,
        ts: int,
        name: str,
        cat: str,
        args: dict[str, Any] | None,
    ) -> None:
        # The same JSON as ``write`` would give, faster: slices are most of
        # the output, so they skip building a dict; names repeat, so their
        # JSON form is cached.
        quoted = self._quoted.get(name)
        if quoted is None:
            quoted = self._encode(name)
            if len(self._quoted) < 100_000:
                self._quoted[name] = quoted
        text = (
            f'{{"ph":"{ph}","ts":{ts / 1000!r},{track.where},'
            f'"name":{quoted},"cat":"{cat}"'
        )
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
