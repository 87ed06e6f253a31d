"""analysis.analyze on real traced asyncio programs of known structure."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import analysis_scenario as sc
import pytest

from aiotrace import analysis, reader
from aiotrace.reader import CoroState, EventKind, ResourceKind

MS = 1_000_000

Traced = tuple[Path, dict[str, Any], analysis.Summary]


@pytest.fixture(
    scope="module",
    params=[
        "asyncio",
        pytest.param(
            "eager",
            marks=pytest.mark.skipif(
                sys.version_info < (3, 12), reason="eager tasks need Python 3.12"
            ),
        ),
    ],
)
def traced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Traced:
    path = tmp_path_factory.mktemp("analysis") / "scenario.trace"
    facts = sc.trace(str(path), eager=request.param == "eager")
    return path, facts, analysis.analyze(path)


def group(s: analysis.Summary, name: str) -> analysis.CoroGroup:
    found = [g for g in s.coroutines if g.name == name]
    assert len(found) == 1, [g.name for g in s.coroutines]
    return found[0]


def test_trace_span_and_counts(traced: Traced) -> None:
    """The summary counts every event the reader yields, spans the trace from
    its first event to its last, and reports no loss for a whole trace."""
    path, _, s = traced
    events = reader.read_events(path)
    assert s.events == len(events)
    assert s.start_ns == events[0].time
    assert s.end_ns == max(ev.time for ev in events)
    assert s.duration_ns == s.end_ns - s.start_ns
    assert s.lost_events == 0
    assert s.truncated is None


def test_tasks_by_type(traced: Traced) -> None:
    """Ten tasks of type "job" are counted with latencies of at least their
    1 ms sleep; the task never ended is unfinished."""
    _, _, s = traced
    job = s.tasks["job"]
    assert job.count == sc.JOBS
    assert job.unfinished == 0
    assert job.min_ns >= 1 * MS
    assert job.min_ns <= job.p50 <= job.p90 <= job.p99 <= job.max_ns
    assert sum(n for _, _, n in job.histogram()) == sc.JOBS
    orphan = s.tasks["orphan"]
    assert (orphan.count, orphan.unfinished) == (0, 1)


def test_regions_by_type(traced: Traced) -> None:
    """Each job's "handle" region is measured, no longer than its task."""
    _, _, s = traced
    handle = s.regions["handle"]
    assert handle.count == sc.JOBS
    assert handle.unfinished == 0
    assert handle.min_ns >= 1 * MS
    assert handle.total_ns <= s.tasks["job"].total_ns


def test_block_time_by_reason(traced: Traced) -> None:
    """Block time lands in the right group under the right reason: the
    sleeper's four 50 ms sleeps, the worker's queue waits, the lockers' lock
    waits, the offloaded call's executor wait."""
    _, _, s = traced
    sleeper = group(s, "sleeper")
    assert sleeper.count == 1
    assert sleeper.block_ns["sleep"] >= sc.SLEEPS * sc.SLEEP * 1e9
    assert set(sleeper.block_ns) == {"sleep"}
    worker = group(s, "worker")  # the task's own name is not part of the group
    assert worker.block_ns["queue"] > 0
    assert worker.block_ns["sleep"] >= sc.JOBS * MS
    lockers = group(s, "locker")
    assert lockers.count == sc.LOCKERS
    # The second waits about one hold, the third about two.
    assert lockers.block_ns["lock"] >= 2 * sc.LOCK_HOLD * 1e9
    offload = group(s, "offload")
    assert offload.block_ns["executor"] > 0
    # The thread starts sleeping before the step that hands it the call
    # ends, so the wait is a little shorter than the sleep; the life is not.
    life = offload.exec_ns + offload.sched_wait_ns + offload.blocked_ns
    assert life >= sc.OFFLOAD * 1e9


def test_execution_time(traced: Traced) -> None:
    """A coroutine that computes is charged its execution time; the staller
    its whole stall; groups come most execution first."""
    _, _, s = traced
    assert group(s, "thinker").exec_ns >= sc.THINK * 1e9
    assert group(s, "staller").exec_ns >= sc.STALL * 1e9
    execs = [g.exec_ns for g in s.coroutines]
    assert execs == sorted(execs, reverse=True)
    for g in s.coroutines:
        assert g.mean_exec_ns == pytest.approx(g.exec_ns / g.count)


def test_a_coroutines_time_adds_up_to_its_life(traced: Traced) -> None:
    """For a coroutine alone in its group, execution + scheduler wait + block
    time is exactly its life in the trace, from creation to end."""
    path, _, s = traced
    events = reader.read_events(path)
    cid = next(
        ev.label.resource.id
        for ev in events
        if ev.kind is EventKind.LABEL
        and ev.label.resource.kind is ResourceKind.COROUTINE
        and ev.label.label == "sleeper"
    )
    times = [
        ev.time
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource == (ResourceKind.COROUTINE, cid)
        and ev.state_transition.new in (CoroState.RUNNABLE, CoroState.NOT_EXIST)
        and ev.state_transition.old in (CoroState.NOT_EXIST, CoroState.RUNNING)
    ]
    life = times[-1] - times[0]
    g = group(s, "sleeper")
    assert g.ended == 1 and g.alive == 0
    assert g.exec_ns + g.sched_wait_ns + g.blocked_ns == life


def test_loop_utilisation(traced: Traced) -> None:
    """The program's one loop is on the main thread, busy at least for the
    stall and the computing, idle while everything sleeps; busy and idle
    time add up to its span."""
    _, facts, s = traced
    (u,) = s.loops
    assert u.thread == facts["thread"]
    assert u.busy_ns >= (sc.STALL + sc.THINK) * 1e9
    assert u.idle_ns > 0
    assert u.busy_ns + u.idle_ns == u.span_ns
    assert 0 < u.utilisation < 1
    assert "EventLoop" in u.label


def test_the_planted_stall(traced: Traced) -> None:
    """The time.sleep stall is found on the loop, at least as long as the
    sleep, held by the staller, and its most common sampled stack has
    blocking() innermost and staller() just outside it."""
    _, facts, s = traced
    # One stall is the staller's; a loaded machine may add others.
    (stall,) = [st for st in s.stalls if st.coroutine_name == "staller"]
    (u,) = s.loops
    assert stall.loop == u.loop and stall.thread == facts["thread"]
    assert stall.duration_ns >= sc.STALL * 1e9
    assert stall.ended and stall.began
    assert stall.coroutine_name == "staller"
    assert len(stall.samples) >= 5
    top, n = stall.folded()[0]
    assert [f.func for f in top.frames[:2]] == ["blocking", "staller"]
    assert top.frames[0].file == sc.__file__
    assert n == max(k for _, k in stall.folded())
    assert sum(k for _, k in stall.folded()) == len(stall.samples)


def test_iterable_of_events_gives_the_same_summary(traced: Traced) -> None:
    """analyze() over read_events() and over an open file agree with the
    analysis of the path."""
    path, _, s = traced
    assert analysis.analyze(reader.read_events(path)).to_dict() == s.to_dict()
    with open(path, "rb") as f:
        assert analysis.analyze(f).to_dict() == s.to_dict()


def test_progress_is_reported_in_bytes(traced: Traced) -> None:
    """A progress callable is called with bytes read and the file's size,
    ending with all of it."""
    path, _, _ = traced
    calls: list[tuple[int, int | None]] = []
    analysis.analyze(path, progress=lambda done, total: calls.append((done, total)))
    size = path.stat().st_size
    assert calls
    assert calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_progress_over_events(traced: Traced) -> None:
    """Over an iterable of events, progress counts events, with no total."""
    path, _, s = traced
    calls: list[tuple[int, int | None]] = []
    analysis.analyze(
        reader.read_events(path), progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (s.events, None)


def test_format_summary_names_every_section(traced: Traced) -> None:
    """The text names the task types, regions, groups, loop and stall."""
    _, _, s = traced
    text = analysis.format_summary(s)
    for word in ("job", "orphan", "handle", "sleeper", "locker", "Loops", "Stalls: "):
        assert word in text
    assert analysis.format_duration(s.tasks["job"].p50) in text
    # A histogram for the 10 jobs; none for a type of fewer values, whose
    # quantiles already say everything.
    assert "\n  job:\n" in text and "#" in text.split("\n  job:\n")[1]
    assert "\n  orphan:\n" not in text
    assert "blocking" in analysis.format_stalls(s)
