"""The text of ``aiotrace stats`` and ``aiotrace stalls``."""

from __future__ import annotations

from ._dist import Distribution
from ._stalls import Stall, short_frame
from ._summary import Summary

_BAR = 30


def format_duration(ns: float) -> str:
    """Formats nanoseconds for people: ``850 ns``, ``12.3 us``, ``1.05 s``."""
    ns = float(ns)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            v = ns / scale
            return f"{v:.3g} {unit}" if abs(v) < 100 else f"{v:.0f} {unit}"
    return f"{ns:.0f} ns"


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return (indent + "  ".join(out)).rstrip()

    return [line(headers)] + [line(r) for r in rows]


_MIN_FOR_HISTOGRAM = 10
"""Fewer values than this say nothing in a histogram that p50-max do not."""


def _histogram(d: Distribution, indent: str = "    ") -> list[str]:
    if d.count < _MIN_FOR_HISTOGRAM:
        return []
    bins = d.histogram()
    if len(bins) < 2:
        return []
    peak = max(n for _, _, n in bins) or 1
    labels = [f"{format_duration(lo)} - {format_duration(hi)}" for lo, hi, _ in bins]
    width = max(len(x) for x in labels)
    return [
        f"{indent}{label.rjust(width)}  {'#' * round(_BAR * n / peak):<{_BAR}}  {n}"
        for label, (_, _, n) in zip(labels, bins, strict=True)
    ]


def _distributions(title: str, dists: dict[str, Distribution]) -> list[str]:
    if not dists:
        return []
    rows = [
        [
            name,
            str(d.count),
            str(d.unfinished),
            format_duration(d.p50) if d.count else "-",
            format_duration(d.p90) if d.count else "-",
            format_duration(d.p99) if d.count else "-",
            format_duration(d.max_ns) if d.count else "-",
        ]
        for name, d in dists.items()
    ]
    out = ["", title]
    out += _table(["type", "count", "unfinished", "p50", "p90", "p99", "max"], rows)
    for name, d in dists.items():
        hist = _histogram(d)
        if hist:
            out += [f"  {name}:", *hist]
    return out


def _blocks(block: dict[str, int], n: int = 3) -> str:
    top = sorted(block.items(), key=lambda kv: -kv[1])
    parts = [f"{reason} {format_duration(ns)}" for reason, ns in top[:n] if ns]
    if len(top) > n:
        parts.append(f"+{len(top) - n} more")
    return ", ".join(parts) or "-"


def _top_frame(stall: Stall) -> str:
    if stall.by_gc:
        return f"garbage collection ({_gc_names(stall)})"
    folded = stall.folded()
    if not folded or not folded[0][0].frames:
        if stall.descheduled:
            return "(no samples: the OS did not run the loop thread)"
        return "(no samples)"
    return short_frame(folded[0][0].frames[0])


def _gc_names(stall: Stall) -> str:
    return ", ".join(sorted(n.removeprefix("GC ") for n in stall.gc))


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "-"


def _cpu_line(stall: Stall) -> str | None:
    """What the loop thread did over the measured part of the stall."""
    if stall.cpu_ns is None or not stall.measured_ns:
        return None
    m = stall.measured_ns
    line = (
        f"  the loop thread was on a CPU {_share(stall.cpu_ns, m)} and waiting "
        f"for one {_share(stall.runqueue_ns or 0, m)} of the "
        f"{format_duration(m)} measured"
    )
    if stall.descheduled:
        line += ": the OS did not run it (a loaded machine), not the program"
    elif 2 * stall.cpu_ns < m:
        line += " (the rest blocked off-CPU: a blocking call, or waiting for the GIL)"
    return line


def _holder(stall: Stall) -> str:
    if stall.coroutine < 0:
        return "(a callback)"
    return f"{stall.coroutine} {stall.coroutine_name}".rstrip()


def _at(s: Summary, t: int) -> str:
    return f"+{(t - s.start_ns) / 1e9:.3f} s"


def format_summary(s: Summary, *, top: int = 10) -> str:
    """Returns the text of ``aiotrace stats``: every section of the summary.

    Args:
        s: the summary.
        top: how many coroutine groups and stalls to list.
    """
    out = [
        f"Trace: {format_duration(s.duration_ns)}, {s.events} events, "
        f"{s.lost_events} lost"
    ]
    if s.lost_events:
        out.append(
            f"  warning: the writer dropped {s.lost_events} events; "
            "the figures below undercount"
        )
    if s.truncated:
        out.append(f"  warning: truncated ({s.truncated}); this is what was read")
    if s.loops:
        out += ["", "Loops"]
        out += _table(
            [
                "loop",
                "thread",
                "busy",
                "idle",
                "span",
                "utilisation",
                "on CPU",
                "label",
            ],
            [
                [
                    str(u.loop),
                    str(u.thread),
                    format_duration(u.busy_ns),
                    format_duration(u.idle_ns),
                    format_duration(u.span_ns),
                    f"{100 * u.utilisation:.1f}%",
                    "-" if (c := u.cpu_utilisation) is None else f"{100 * c:.1f}%",
                    u.label,
                ]
                for u in s.loops
            ],
        )
        out.append(
            "  utilisation: wall time busy running callbacks (a loop the OS "
            "does not run counts as busy); on CPU: the CPU time of the loop's "
            "thread over the time measured"
        )
    out += _distributions("User tasks (latency: begin to end)", s.tasks)
    out += _distributions("Regions (duration)", s.regions)
    if s.coroutines:
        shown = s.coroutines[:top]
        out += [
            "",
            f"Coroutines by function ({len(shown)} of {len(s.coroutines)}, "
            "most execution first)",
        ]
        out += _table(
            [
                "function",
                "count",
                "exec",
                "mean exec",
                "sched wait",
                "mean wait",
                "blocked",
                "block by reason",
            ],
            [
                [
                    g.name,
                    str(g.count),
                    format_duration(g.exec_ns),
                    format_duration(g.mean_exec_ns),
                    format_duration(g.sched_wait_ns),
                    format_duration(g.mean_sched_wait_ns),
                    format_duration(g.blocked_ns),
                    _blocks(g.block_ns),
                ]
                for g in shown
            ],
        )
    out += ["", _stall_headline(s, " (details: aiotrace stalls FILE)")]
    if s.stalls:
        longest = sorted(s.stalls, key=lambda x: -x.duration_ns)[:top]
        longest.sort(key=lambda x: x.start_ns)
        out += _table(
            ["at", "duration", "loop", "coroutine", "where (most sampled)"],
            [
                [
                    _at(s, x.start_ns),
                    format_duration(x.duration_ns) + ("" if x.ended else "+"),
                    str(x.loop),
                    _holder(x),
                    _top_frame(x),
                ]
                for x in longest
            ],
        )
    return "\n".join(out) + "\n"


def _stall_headline(s: Summary, more: str = "") -> str:
    if not s.stalls:
        return "Stalls: none"
    total = sum(x.duration_ns for x in s.stalls)
    longest = max(x.duration_ns for x in s.stalls)
    return (
        f"Stalls: {len(s.stalls)}, {format_duration(total)} in all, longest "
        f"{format_duration(longest)}{more}"
    )


def format_stalls(s: Summary, *, stacks: int = 3, frames: int = 12) -> str:
    """Returns the text of ``aiotrace stalls``: each stall and its common stacks.

    Args:
        s: the summary.
        stacks: how many of the most common stacks to show per stall.
        frames: how many frames of each stack to show, innermost first.
    """
    out = [_stall_headline(s)]
    if s.lost_events:
        out.append(f"  warning: the writer dropped {s.lost_events} events")
    if s.truncated:
        out.append(f"  warning: truncated ({s.truncated}); this is what was read")
    for i, x in enumerate(s.stalls, 1):
        status = "" if x.ended else " (still going at the end of the trace)"
        began = "" if x.began else " (already going when the trace began)"
        out += [
            "",
            f"stall {i}: {format_duration(x.duration_ns)} at {_at(s, x.start_ns)}"
            f"{began}{status} on loop {x.loop} (thread {x.thread}), "
            f"held by {'coroutine ' if x.coroutine >= 0 else ''}{_holder(x)}",
        ]
        if x.gc_ns:
            out.append(
                f"  garbage collection ran {format_duration(x.gc_ns)} of it "
                f"({_share(x.gc_ns, x.duration_ns)}; {_gc_names(x)})"
                + (": the stall is GC's" if x.by_gc else "")
            )
        cpu = _cpu_line(x)
        if cpu is not None:
            out.append(cpu)
        folded = x.folded()
        if not folded:
            if x.descheduled:
                out.append(
                    "  no stack samples: the OS did not run the loop thread "
                    "(nor the watchdog) for most of it"
                )
            elif x.by_gc:
                out.append("  no stack samples (the collection held the GIL)")
            else:
                out.append(
                    "  no stack samples: the loop thread held the GIL throughout "
                    "(a C call that does not release it), or the OS did not run "
                    "the watchdog"
                )
            continue
        out.append(
            f"  {len(x.samples)} samples, {len(folded)} distinct stacks"
            + (f"; the {stacks} most common:" if len(folded) > stacks else ":")
        )
        for stack, n in folded[:stacks]:
            out.append(f"  {n} samples ({100 * n / len(x.samples):.0f}%):")
            out += [f"    {short_frame(f)}" for f in stack.frames[:frames]]
            if len(stack.frames) > frames:
                out.append(f"    ... {len(stack.frames) - frames} more frames")
    return "\n".join(out) + "\n"
