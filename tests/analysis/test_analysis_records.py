"""A trace file's fast path (its records) and typed Events give the same results.

``analyze`` and ``profile`` read a file's decoded records directly, with
the typed reader's rules for context and restated statuses inline; given an
iterable of Events they take the ordinary path. Any story, on several
threads, over several generations, whole or cut short, must give the same
summary and profiles both ways.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_analysis_fuzz import STACK, event, ids

from aiotrace import analysis, reader
from aiotrace._encode import Encoder
from aiotrace._format.framing import HEADER
from aiotrace._format.spec import C, CoroState, LoopState, ResourceKind
from aiotrace.analysis._records import usable

reasons = st.sampled_from(["sleep", "io", ""])
stacks = st.sampled_from([None, STACK])
more = st.one_of(
    event,
    st.tuples(st.just(C["CoroRunYield"]), ids, st.integers(0, 3000)),
    st.tuples(st.just(C["CoroRunBlock"]), ids, st.integers(0, 3000), reasons, stacks),
    st.tuples(st.just(C["CoroRunEnd"]), ids, st.integers(0, 3000), reasons),
    st.tuples(st.just(C["CoroWaiting"]), ids, reasons, stacks),
    st.tuples(st.just(C["CoroBlock"]), ids, reasons, stacks),
    st.tuples(st.just(C["CoroYield"]), ids, stacks),
    st.tuples(st.just(C["CoroCreate"]), ids, stacks),
    st.tuples(st.just(C["Log"]), ids, st.just("cat"), st.just("m"), stacks),
    st.tuples(st.just(C["Metric"]), st.just("/x:n"), st.integers(0, 9)),
    st.tuples(st.just(C["EventsLost"]), st.integers(0, 5)),
    st.tuples(st.just(C["CoroStatus"]), ids, st.sampled_from(list(CoroState))),
    st.tuples(st.just(C["LoopStatus"]), ids, st.sampled_from(list(LoopState))),
)
# A batch: its thread (1 or 2) and its events.
batch = st.tuples(st.integers(1, 2), st.lists(more, max_size=25))


def encode(generations: list[list[tuple[int, list[tuple[Any, ...]]]]]) -> bytes:
    """Encodes generations of batches; times rise by 1 µs an event, and each
    batch starts a little before the last one ended, so threads interleave."""
    enc = Encoder()
    parts = [HEADER]
    t = 1_000_000
    for batches in generations:
        parts.append(enc.begin_generation(0, now=t, wall=t))
        for thread, events in batches:
            t -= 5000
            timed = []
            for ev in events:
                t += 1000
                timed.append((ev[0], t, *ev[1:]))
            parts.append(enc.encode_batch(thread, f"T{thread}", timed))
        t += 10_000
        parts.append(enc.end_generation())
    parts.append(enc.end_trace(0))
    return b"".join(parts)


def both(data: bytes, run: Any) -> tuple[Any, Any]:
    """Runs ``run`` over the file (the records) and over its typed Events;
    returns each result's dict, or the error it raised."""

    def attempt(source: Any) -> Any:
        try:
            return run(source).to_dict()
        except reader.TraceError as exc:
            return ("error", str(exc))

    def events() -> Any:
        yield from reader.Reader(io.BytesIO(data))

    return attempt(io.BytesIO(data)), attempt(events())


PASSES = [analysis.analyze] + [
    functools.partial(analysis.profile, kind=k) for k in analysis.Profile.KINDS
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(batch, max_size=3), min_size=1, max_size=3))
def test_records_and_events_agree(
    generations: list[list[tuple[int, list[tuple[Any, ...]]]]],
) -> None:
    """For any story on two threads over several generations, analyze() and
    every profile give the same result from the file as from its Events."""
    data = encode(generations)
    for run in PASSES:
        fast, typed = both(data, run)
        assert fast == typed


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(batch, min_size=1, max_size=3), min_size=1, max_size=3),
    st.floats(0.05, 0.99),
)
def test_records_and_events_agree_when_cut(
    generations: list[list[tuple[int, list[tuple[Any, ...]]]]], where: float
) -> None:
    """A trace cut anywhere gives the same result (or the same error) both ways."""
    data = encode(generations)
    cut = data[: max(len(HEADER) + 1, int(len(data) * where))]
    for run in PASSES:
        fast, typed = both(cut, run)
        assert fast == typed


def test_records_path_is_taken_and_counts_lost_events() -> None:
    """A Reader of a file is one the records path reads; restated statuses
    are not counted as events, and events lost (in the generation header
    and in EventsLost) are counted as the typed path counts them."""
    enc = Encoder()
    gen1 = [(C["CoroCreate"], 1, STACK), (C["CoroStart"], 1), (C["EventsLost"], 3)]
    gen2 = [(C["CoroStatus"], 1, CoroState.RUNNING), (C["CoroEnd"], 1, "returned")]
    parts = [HEADER]
    for i, events in enumerate((gen1, gen2)):
        t = 1_000_000 * (i + 1)
        parts.append(enc.begin_generation(2, now=t, wall=t))
        timed = [(ev[0], t + 10 * k, *ev[1:]) for k, ev in enumerate(events)]
        parts.append(enc.encode_batch(1, "T", timed))
        parts.append(enc.end_generation())
    parts.append(enc.end_trace(0))
    data = b"".join(parts)
    assert usable(reader.Reader(io.BytesIO(data))) is not None
    typed = list(reader.Reader(io.BytesIO(data)))
    s = analysis.analyze(io.BytesIO(data))
    assert s.to_dict() == analysis.analyze(typed).to_dict()
    # Per generation a sync and the thread's label; then create, start, the
    # lost-events metric and the end. The restated RUNNING status says
    # nothing new, so neither path counts it.
    assert s.events == len(typed) == 8
    assert s.lost_events == 2 + 3
    (g,) = s.coroutines
    assert (g.count, g.ended) == (1, 1)
    assert (g.exec_ns, g.sched_wait_ns) == (2_000_010 - 1_000_010, 10)


@pytest.mark.parametrize("kind", analysis.Profile.KINDS)
def test_profile_of_a_file_and_of_its_events(kind: str, tmp_path: Any) -> None:
    """A recorded-like trace with steps, regions and logs on two threads
    profiles the same from its path as from ``read_events``."""
    enc = Encoder()
    parts = [HEADER]
    parts.append(enc.begin_generation(0, now=1000, wall=1000))
    t1 = [
        (C["LoopStatus"], 2000, 7, LoopState.RUNNING),
        (C["CoroCreate"], 2100, 1, STACK),
        (C["CoroRunBlock"], 2200, 1, 500, "sleep", STACK),
        (C["RegionBegin"], 2300, 1, "r", None),
        (C["CoroUnblock"], 3000, 1, "timer"),
        (C["CoroRunYield"], 3100, 1, 200),
        (C["Log"], 3150, 1, "c", "m", None),
        (C["CoroRunEnd"], 3400, 1, 300, "returned"),
    ]
    t2 = [
        (C["CoroCreate"], 2150, 2, None),
        (C["CoroStart"], 2250, 2),
        (C["CoroBlock"], 2600, 2, "io", STACK),
        (C["Label"], 2700, ResourceKind.COROUTINE, 2, "worker"),
    ]
    parts.append(enc.encode_batch(1, "T1", t1))
    parts.append(enc.encode_batch(2, "T2", t2))
    parts.append(enc.end_generation())
    parts.append(enc.end_trace(0))
    path = tmp_path / "t.trace"
    path.write_bytes(b"".join(parts))
    fast = analysis.profile(path, kind)
    assert fast.to_dict() == analysis.profile(reader.read_events(path), kind).to_dict()
    if kind != "stall":
        assert fast.stacks
