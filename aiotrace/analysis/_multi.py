"""Several traces, one per process, analysed on one timeline.

``analyze_processes(paths)`` analyses each trace (``analyze``) and lines
them up by their clock syncs: each generation of a trace starts with a
SYNC event that pairs the trace clock (the process's monotonic clock) with
the wall clock. The offset ``wall_time_ns - time`` of a trace's first sync
maps its times onto the wall clock, which every process on a machine
shares; the processes' monotonic clocks differ only by that offset.

What this can and cannot correct:

- Processes on one machine: their monotonic clocks tick together and
  differ by a constant, which the first sync removes exactly (to the
  microsecond or so it takes to read two clocks one after the other).
- A wall clock stepped (by NTP, or by hand) while the traces ran: each
  trace's later syncs see the step as a change of offset. The first
  sync's offset is kept, so the step does not move the trace's events;
  the change is reported as ``drift_ns``. A trace that *starts* after the
  step is placed by the stepped clock, wrong by the step.
- Processes on different machines: only as good as their wall clocks'
  agreement (NTP: typically a millisecond or better on a LAN, worse across
  the internet); aiotrace cannot measure that skew.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..reader import Reader
from ._coro import CoroGroup
from ._dist import Distribution
from ._summary import Summary, _Pass

_PID = re.compile(r"\.(\d+)(?:\.[^.]*)?\Z")


@dataclass
class ProcessTrace:
    """ProcessTrace is one process's trace, analysed, and where it lies on
    the common timeline.

    ``offset_ns`` is the wall clock minus the trace clock at the trace's
    first sync (None for a trace without one); ``drift_ns`` the largest
    change of that offset across the trace's later syncs (a wall clock
    stepped or slewed meanwhile). ``pid`` comes from the file's name
    (``app.<pid>.trace``), or is None.
    """

    file: str
    summary: Summary
    pid: int | None = None
    offset_ns: int | None = None
    drift_ns: int = 0
    syncs: int = 0

    @property
    def name(self) -> str:
        """How output names the process: ``pid N`` or the file's name."""
        return (
            f"pid {self.pid}" if self.pid is not None else os.path.basename(self.file)
        )

    @property
    def wall_start_ns(self) -> int | None:
        """The trace's first event on the wall clock (ns since the epoch)."""
        if self.offset_ns is None:
            return None
        return self.summary.start_ns + self.offset_ns

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict: where the trace lies, and its summary."""
        return {
            "file": self.file,
            "pid": self.pid,
            "offset_ns": self.offset_ns,
            "drift_ns": self.drift_ns,
            "syncs": self.syncs,
            "wall_start_ns": self.wall_start_ns,
            "summary": self.summary.to_dict(),
        }


@dataclass
class ProcessesSummary:
    """ProcessesSummary is several processes' traces analysed together.

    ``total`` sums them: task, region and coroutine figures of every
    process together; loops and stalls of each, with times on the wall
    clock (ns since the epoch) and loop labels naming their process.
    ``unaligned`` lists the files that had no sync to place them by.
    """

    processes: list[ProcessTrace]
    total: Summary
    unaligned: list[str] = field(default_factory=list)

    @property
    def truncated(self) -> str | None:
        """The first truncation, naming its file, or None if all are whole."""
        for p in self.processes:
            if p.summary.truncated:
                return f"{p.file}: {p.summary.truncated}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict (``aiotrace stats --json`` of several traces)."""
        return {
            "processes": [p.to_dict() for p in self.processes],
            "total": self.total.to_dict(),
            "unaligned": list(self.unaligned),
        }


def pid_of(path: str) -> int | None:
    """The process id in a child trace's name (``app.<pid>.trace``), if any."""
    m = _PID.search(os.path.basename(path))
    return int(m.group(1)) if m else None


def analyze_one(path: str | os.PathLike[str]) -> ProcessTrace:
    """Analyses one process's trace and finds its clock offset.

    Raises:
        reader.TraceError: the trace is malformed (not merely cut short).
        OSError: the file cannot be read.
    """
    file = os.fspath(path)
    offsets: list[int] = []
    with open(file, "rb") as f:
        reader = Reader(f)
        one = _Pass(reader, None, None)
        one.on_sync = lambda t, wall: offsets.append(wall - t)
        summary = one.run()
        summary.lost_events = max(summary.lost_events, reader.lost_events)
    first = offsets[0] if offsets else None
    drift = max((abs(o - offsets[0]) for o in offsets), default=0)
    return ProcessTrace(file, summary, pid_of(file), first, drift, len(offsets))


def analyze_processes(paths: Sequence[str | os.PathLike[str]]) -> ProcessesSummary:
    """Analyses several traces, one per process, on one timeline.

    Raises:
        reader.TraceError: a trace is malformed; the message names it.
        OSError: a file cannot be read.
    """
    return combine([analyze_one(p) for p in paths])


def combine(processes: list[ProcessTrace]) -> ProcessesSummary:
    """Puts analysed traces on one timeline and sums them (``total``)."""
    processes = sorted(
        processes,
        key=lambda p: (p.wall_start_ns is None, p.wall_start_ns or 0, p.file),
    )
    total = Summary()
    unaligned = [p.file for p in processes if p.offset_ns is None]
    starts, ends = [], []
    groups: dict[str, CoroGroup] = {}
    for p in processes:
        s = p.summary
        shift = p.offset_ns or 0
        if s.events:
            starts.append(s.start_ns + shift)
            ends.append(s.end_ns + shift)
        total.events += s.events
        total.lost_events += s.lost_events
        if s.truncated and total.truncated is None:
            total.truncated = f"{p.file}: {s.truncated}"
        _merge_dists(total.tasks, s.tasks)
        _merge_dists(total.regions, s.regions)
        for g in s.coroutines:
            into = groups.get(g.name)
            if into is None:
                into = groups[g.name] = CoroGroup(g.name)
            into.count += g.count
            into.ended += g.ended
            into.exec_ns += g.exec_ns
            into.sched_wait_ns += g.sched_wait_ns
            for reason, ns in g.block_ns.items():
                into.block_ns[reason] = into.block_ns.get(reason, 0) + ns
        for u in s.loops:
            label = f"{p.name}: {u.label}" if u.label else p.name
            total.loops.append(replace(u, label=label))
        for st in s.stalls:
            total.stalls.append(
                replace(
                    st,
                    start_ns=st.start_ns + shift,
                    coroutine_name=f"[{p.name}] {st.coroutine_name}".rstrip(),
                )
            )
    if starts:
        total.start_ns, total.end_ns = min(starts), max(ends)
    total.coroutines = sorted(groups.values(), key=lambda g: (-g.exec_ns, g.name))
    total.stalls.sort(key=lambda st: st.start_ns)
    return ProcessesSummary(processes, total, unaligned)


def _merge_dists(into: dict[str, Distribution], more: dict[str, Distribution]) -> None:
    for name, d in more.items():
        target = into.get(name)
        if target is None:
            target = into[name] = Distribution()
        target.merge(d)


def format_processes(many: ProcessesSummary, *, top: int = 10) -> str:
    """Returns the text of ``aiotrace stats`` for several traces: the
    processes on the common timeline, each one's summary, then the total."""
    from ._format import format_duration, format_summary

    origin = min(
        (p.wall_start_ns for p in many.processes if p.wall_start_ns is not None),
        default=0,
    )
    rows = []
    for p in many.processes:
        s = p.summary
        start = p.wall_start_ns
        rows.append(
            [
                p.name,
                "?" if start is None else "+" + format_duration(start - origin),
                format_duration(s.duration_ns),
                str(s.events),
                str(s.lost_events),
                str(len(s.loops)),
                str(sum(g.count for g in s.coroutines)),
                str(len(s.stalls)),
                os.path.basename(p.file),
            ]
        )
    head = ["process", "start", "span", "events", "lost", "loops", "coroutines"]
    head += ["stalls", "file"]
    n = len(many.processes)
    out = [f"{n} process{'es' if n != 1 else ''}, on one timeline (by wall clock)", ""]
    out += _table(head, rows)
    for p in many.processes:
        if p.offset_ns is None:
            out.append(f"  {p.file}: no clock sync; placed at the start, unaligned")
        elif p.drift_ns > 1_000_000:
            out.append(
                f"  {p.name}: its wall clock moved {format_duration(p.drift_ns)} "
                "against its monotonic clock while it ran (NTP?); placed by its "
                "first sync"
            )
    for p in many.processes:
        out += ["", f"=== {p.name} ({p.file}) ===", ""]
        out.append(format_summary(p.summary, top=top).rstrip("\n"))
    out += ["", f"=== all {len(many.processes)} processes ===", ""]
    out.append(format_summary(many.total, top=top).rstrip("\n"))
    return "\n".join(out) + "\n"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    ]
