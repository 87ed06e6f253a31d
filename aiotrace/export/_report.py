"""The HTML report: one self-contained page, written in one pass over a trace."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import IO, Any, TextIO

from ..reader import Event, Reader
from ._source import Source
from ._timeline import DEFAULT_MAX_BYTES, TimelineBuilder

MAX_STALLS = 500
MAX_COROUTINE_GROUPS = 1000
MAX_STACKS_PER_STALL = 10
HISTOGRAM_BUCKETS = 12
_PLACEHOLDER = '"__AIOTRACE_DATA__"'


@dataclass
class ReportResult:
    """ReportResult says what a report holds.

    Attributes:
        events: trace events read.
        truncated: the reader's error text for a trace cut short, or None.
        timeline_resolution_ns: the timeline's detail where it is coarsest:
            every row shows real spans down to this resolution (spans
            shorter than it, closer than it, are merged into blocks); at
            most 512 µs unless the budget cannot hold every row even there.
        loops_resolution_ns: the same, over the rows of loops, threads
            and user tasks (not coroutines).
        coroutines_left_out: coroutines without a row of their own (each
            is still in the search index, unless ``search_left_out``).
        search_left_out: coroutines and tasks left out of the search index
            to fit the budget (the shortest-lived).
        page_bytes: the size of the page written.
        search_resolution_ns: the search index's time resolution (1 µs
            unless a coarser one was needed to hold every entry).
    """

    events: int
    truncated: str | None
    timeline_resolution_ns: int
    loops_resolution_ns: int
    coroutines_left_out: int
    search_left_out: int
    page_bytes: int
    search_resolution_ns: int = 1000


def _events(source: Source) -> tuple[Iterable[Event], IO[bytes] | None]:
    if isinstance(source, str | os.PathLike):
        f = open(source, "rb")  # noqa: SIM115
        return Reader(f), f
    if callable(getattr(source, "read", None)):
        return Reader(source), None  # type: ignore[arg-type]
    return source, None  # type: ignore[return-value]


def build_report_data(
    source: Source,
    *,
    title: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_coroutines: int = 200,
) -> dict[str, Any]:
    """Reads a trace once and returns the report's data, JSON-able.

    Raises:
        reader.TraceError: the trace is malformed (a truncated trace is
            reported, not raised).
        OSError: the trace cannot be read.
    """
    from ..analysis import analyze

    timeline = TimelineBuilder(max_bytes=max_bytes, max_coroutines=max_coroutines)
    rewind = _rewind(source)
    events, f = _events(source)

    def feed() -> Iterator[Event]:
        for ev in events:
            timeline(ev)
            yield ev

    try:
        s = analyze(feed())
    finally:
        if f is not None:
            f.close()
    origin = timeline.origin if timeline.origin is not None else s.start_ns
    findings = _findings(source, rewind)

    def dist(name: str, d: Any) -> dict[str, Any]:
        return {
            "name": name,
            "count": d.count,
            "unfinished": d.unfinished,
            "min_ns": d.min_ns,
            "max_ns": d.max_ns,
            "mean_ns": round(d.mean_ns),
            "p50_ns": d.p50,
            "p90_ns": d.p90,
            "p99_ns": d.p99,
            "total_ns": d.total_ns,
            "histogram": [list(b) for b in d.histogram(buckets=HISTOGRAM_BUCKETS)]
            if d.count
            else [],
        }

    stalls = []
    for st in s.stalls[:MAX_STALLS]:
        folded = st.folded()
        stalls.append(
            {
                "loop": st.loop,
                "thread": st.thread,
                "start_ns": st.start_ns - origin,
                "duration_ns": st.duration_ns,
                "coroutine": st.coroutine,
                "coroutine_name": st.coroutine_name,
                "ended": st.ended,
                "began": st.began,
                "samples": len(st.samples),
                "stacks": [
                    {"count": n, "frames": [list(fr) for fr in stack.frames]}
                    for stack, n in folded[:MAX_STACKS_PER_STALL]
                ],
                "stacks_left_out": max(0, len(folded) - MAX_STACKS_PER_STALL),
            }
        )
    return {
        "title": title,
        "duration_ns": s.duration_ns,
        "events": s.events,
        "lost_events": s.lost_events,
        "truncated": s.truncated,
        "timeline": timeline.finish(),
        "tasks": [dist(k, d) for k, d in sorted(s.tasks.items())],
        "regions": [dist(k, d) for k, d in sorted(s.regions.items())],
        "coroutines": [g.to_dict() for g in s.coroutines[:MAX_COROUTINE_GROUPS]],
        "coroutine_groups_left_out": max(0, len(s.coroutines) - MAX_COROUTINE_GROUPS),
        "loops": [u.to_dict() for u in s.loops],
        "stalls": stalls,
        "stalls_left_out": max(0, len(s.stalls) - MAX_STALLS),
        "findings": findings,
    }


def _rewind(source: Source) -> int | None:
    """Where a seekable file source starts, to read it again for findings."""
    if isinstance(source, str | os.PathLike) or not callable(
        getattr(source, "read", None)
    ):
        return None
    try:
        return int(source.tell())  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return None


def _findings(source: Source, rewind: int | None) -> list[dict[str, Any]] | None:
    """The trace's findings (``analysis.diagnose``), from a second read of a
    path or a seekable file; None for a source that cannot be read again."""
    from ..analysis import diagnose

    if isinstance(source, str | os.PathLike):
        return [f.to_dict() for f in diagnose(source).findings]
    if rewind is None:
        return None
    source.seek(rewind)  # type: ignore[union-attr]
    return [f.to_dict() for f in diagnose(source).findings]  # type: ignore[arg-type]


def render_report(data: dict[str, Any]) -> str:
    """Returns the report page for ``build_report_data``'s result."""
    template = resources.files(__package__).joinpath("_report.html").read_text("utf-8")
    # Inside <script>, "</" could end the element: escape every "<".
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace(
        "<", "\\u003c"
    )
    page = template.replace(_PLACEHOLDER, payload, 1)
    return page.replace("__AIOTRACE_TITLE__", html.escape(data["title"] or "trace"))


def write_report(
    source: Source,
    out: str | os.PathLike[str] | TextIO,
    *,
    title: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_coroutines: int = 200,
) -> ReportResult:
    """Writes a self-contained HTML report of a trace, reading it once.

    The page holds a zoomable timeline of loops, threads, user tasks and
    coroutines, latency histograms per task type, the coroutine analysis
    table, loop utilisation and the stalls with their stack samples. It
    loads nothing from the network. The timeline holds every row at
    several levels of detail (deflated), every row down to 512 µs first,
    then finer, down to 1 µs, where the budget allows; rows for the
    ``max_coroutines`` coroutines that held stalls, waited, lost time or
    ran the slowest tasks; and a search index of every coroutine and user
    task (deflated columns, its times coarser if need be). Its data stays
    within ``max_bytes``, and the page says how fine it is and what, if
    anything, it left out.

    Args:
        source: a trace path, a binary file object, or an iterable of events.
        out: the path to write, or a text file object.
        title: the page's title (the trace's name).
        max_bytes: the budget for the timeline's data in the page.
        max_coroutines: the most coroutines given a timeline row.

    Raises:
        reader.TraceError: the trace is malformed (a truncated trace is
            reported in the page and the result, not raised).
        OSError: the source or the output cannot be opened.
    """
    data = build_report_data(
        source, title=title, max_bytes=max_bytes, max_coroutines=max_coroutines
    )
    page = render_report(data)
    if isinstance(out, str | os.PathLike):
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    else:
        out.write(page)
    tl = data["timeline"]
    return ReportResult(
        data["events"],
        data["truncated"],
        tl["resolution_ns"],
        tl["loops_resolution_ns"],
        tl["coroutines_left_out"],
        tl["index_left_out"],
        len(page.encode("utf-8")),
        tl["index_resolution_ns"],
    )
