"""Structural checks of Chrome trace-event JSON, as Perfetto needs it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def track_of(ev: dict[str, Any]) -> tuple[Any, ...]:
    """The track an event is drawn on: (pid, tid), or (pid, async id)."""
    if ev["ph"] in ("b", "e"):
        return ("async", ev["pid"], ev["id2"]["local"])
    return ("thread", ev["pid"], ev["tid"])


def check(doc: dict[str, Any]) -> list[str]:
    """Lists every structural problem of a trace-event document; [] if none.

    - every B has its E on its track (and names match), every async b its e
      with the same id, and nothing ends that did not begin;
    - timestamps never go backwards on a track, in file order;
    - every flow id has one start and one end, each at a moment when a
      slice is open on its track;
    - metadata events name something.
    """
    problems: list[str] = []
    events = doc["traceEvents"]
    stacks: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    last_ts: dict[tuple[Any, ...], float] = {}
    flows: dict[int, list[str]] = defaultdict(list)
    for i, ev in enumerate(events):
        ph = ev["ph"]
        if ph == "M":
            if not ev.get("args") or "pid" not in ev:
                problems.append(f"event {i}: metadata without args: {ev}")
            continue
        ts = ev["ts"]
        if not isinstance(ts, int | float) or ts < 0:
            problems.append(f"event {i}: bad ts {ts!r}")
            continue
        track = track_of(ev)
        if ts < last_ts.get(track, 0.0):
            problems.append(
                f"event {i}: ts {ts} before {last_ts[track]} on track {track}"
            )
        last_ts[track] = ts
        stack = stacks[track]
        if ph in ("B", "b"):
            stack.append(ev["name"])
        elif ph in ("E", "e"):
            if not stack:
                problems.append(f"event {i}: {ph} {ev['name']!r} with nothing open")
            elif stack[-1] != ev["name"]:
                problems.append(
                    f"event {i}: {ph} {ev['name']!r} ends {stack[-1]!r} on {track}"
                )
                stack.pop()
            else:
                stack.pop()
        elif ph in ("s", "f"):
            flows[ev["id"]].append(ph)
            if not stack:
                problems.append(f"event {i}: flow {ph} {ev['id']} with no open slice")
            if ph == "f" and ev.get("bp") != "e":
                problems.append(f"event {i}: flow end not bound to its slice")
        elif ph == "C":
            if not ev.get("args"):
                problems.append(f"event {i}: counter without a value")
        elif ph == "i":
            if ev.get("s") != "t":
                problems.append(f"event {i}: instant not on a thread track")
        else:
            problems.append(f"event {i}: unexpected phase {ph!r}")
    for track, stack in stacks.items():
        if stack:
            problems.append(f"track {track}: {stack} never ended")
    for fid, phases in flows.items():
        if sorted(phases) != ["f", "s"]:
            problems.append(f"flow {fid}: phases {phases}, want one s and one f")
    return problems
