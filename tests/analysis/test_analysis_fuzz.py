"""The analysis takes any well-framed trace, however odd its story.

The reader checks framing, not whether transitions make sense (that is the
Validator's job), so the analysis must cope with whatever order events come
in: ends without begins, blocks of unknown coroutines, labels of nothing.
"""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiotrace import analysis
from aiotrace._encode import Encoder
from aiotrace._format.framing import HEADER
from aiotrace._format.spec import C, CoroState, LoopState, ResourceKind

STACK = (("f", "a.py", 1), ("g", "a.py", 2))
ids = st.integers(min_value=1, max_value=3)
loops = st.integers(min_value=1, max_value=2)

event = st.one_of(
    st.tuples(st.just(C["CoroCreate"]), ids, st.just(None)),
    st.tuples(st.just(C["CoroStart"]), ids),
    st.tuples(
        st.just(C["CoroBlock"]),
        ids,
        st.sampled_from(["sleep", "io", ""]),
        st.just(None),
    ),
    st.tuples(st.just(C["CoroYield"]), ids, st.just(None)),
    st.tuples(st.just(C["CoroUnblock"]), ids, st.just("timer")),
    st.tuples(st.just(C["CoroEnd"]), ids, st.just("returned")),
    st.tuples(st.just(C["CoroStatus"]), ids, st.sampled_from(list(CoroState))),
    st.tuples(st.just(C["LoopStatus"]), loops, st.sampled_from(list(LoopState))),
    st.tuples(st.just(C["LoopRun"]), loops),
    st.tuples(st.just(C["LoopIdle"]), loops),
    st.tuples(st.just(C["LoopDestroy"]), loops),
    st.tuples(
        st.just(C["TaskBegin"]),
        ids,
        st.just(0),
        st.sampled_from(["a", "b"]),
        st.just(None),
    ),
    st.tuples(st.just(C["TaskEnd"]), ids, st.just(None)),
    st.tuples(
        st.just(C["RegionBegin"]), ids, st.sampled_from(["r", "s"]), st.just(None)
    ),
    st.tuples(st.just(C["RegionEnd"]), ids, st.sampled_from(["r", "s"]), st.just(None)),
    st.tuples(
        st.sampled_from([C["RangeBegin"], C["RangeEnd"]]),
        st.just("loop stall"),
        st.just(ResourceKind.LOOP),
        loops,
        st.just(None),
    ),
    st.tuples(
        st.just(C["RangeActive"]),
        st.just("loop stall"),
        st.just(ResourceKind.LOOP),
        loops,
    ),
    st.tuples(st.just(C["StackSample"]), st.just(100), loops, ids, st.just(STACK)),
    st.tuples(
        st.just(C["Label"]),
        st.sampled_from([ResourceKind.COROUTINE, ResourceKind.LOOP]),
        ids,
        st.sampled_from(["w", "w name", "<x y>", ""]),
    ),
)


def encode(generations: list[list[tuple[Any, ...]]]) -> bytes:
    enc = Encoder()
    parts = [HEADER]
    t = 1_000_000
    for events in generations:
        parts.append(enc.begin_generation(0, now=t, wall=t))
        timed = []
        for ev in events:
            t += 1000
            timed.append((ev[0], t, *ev[1:]))
        parts.append(enc.encode_batch(100, "MainThread", timed))
        parts.append(enc.end_generation())
    parts.append(enc.end_trace(0))
    return b"".join(parts)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(event, max_size=40), min_size=1, max_size=3))
def test_any_story_gives_a_sane_summary(
    generations: list[list[tuple[Any, ...]]],
) -> None:
    """Whatever the order of events, analyze() returns a summary whose
    figures are non-negative and fit in the trace, which formats and
    serialises."""
    s = analysis.analyze(io.BytesIO(encode(generations)))
    span = s.duration_ns
    for g in s.coroutines:
        assert g.count >= 1 and 0 <= g.ended <= g.count
        for ns in (g.exec_ns, g.sched_wait_ns, *g.block_ns.values()):
            assert 0 <= ns <= span * g.count
    for d in (*s.tasks.values(), *s.regions.values()):
        assert d.count >= 0 and d.unfinished >= 0
        assert 0 <= d.min_ns <= d.max_ns <= span
    for u in s.loops:
        assert u.busy_ns + u.idle_ns <= u.span_ns <= span
        assert 0 <= u.utilisation <= 1
    for x in s.stalls:
        assert 0 <= x.duration_ns <= span
        assert sum(n for _, n in x.folded()) == len(x.samples)
    json.dumps(s.to_dict())
    assert analysis.format_summary(s)
    assert analysis.format_stalls(s)
