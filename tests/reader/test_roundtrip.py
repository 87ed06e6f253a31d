"""Round trips: events written by the writer read back identically."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tracegen import encode_trace

from aiotrace._encode import MAX_STRING
from aiotrace._format import spec
from aiotrace.reader import EventKind, Reader, Stack, StackFrame
from aiotrace.reader._reader import _Pipeline

_ENUM_ARGS = {
    "resource_kind": len(spec.ResourceKind),
    "scope_kind": len(spec.ResourceKind),
}

texts = st.text(max_size=40)
frames = st.tuples(texts, texts, st.integers(0, 100_000))
stacks = st.one_of(st.none(), st.lists(frames, min_size=1, max_size=5).map(tuple))
numbers = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=True)
)


def _arg(s: spec.EventSpec, name: str, kind: spec.Arg) -> st.SearchStrategy[Any]:
    if kind is spec.Arg.STRING:
        return texts
    if kind is spec.Arg.STACK:
        return stacks
    if kind is spec.Arg.NUMBER:
        return numbers
    if name in _ENUM_ARGS:
        return st.integers(0, _ENUM_ARGS[name] - 1)
    if name == "duration":
        return st.integers(0, 10**9)
    if name == "state":
        enum = spec.CoroState if s.name == "CoroStatus" else spec.LoopState
        return st.integers(0, len(enum) - 1)
    return st.integers(-1, 2**62)


@st.composite
def events(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A list of well-formed in-memory events with non-decreasing times."""
    n = draw(st.integers(0, 30))
    out = []
    t = draw(st.integers(0, 2**62))
    for _ in range(n):
        s = draw(st.sampled_from([s for s in spec.SPECS if s.code != spec.SYNC]))
        t += draw(st.integers(0, 10**9))
        args = [draw(_arg(s, name, kind)) for name, kind in s.args]
        out.append((s.code, t, *args))
    return out


def _expected(s: spec.EventSpec, args: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for (_, kind), a in zip(s.args, args, strict=True):
        if kind is spec.Arg.STACK:
            out.append(Stack(tuple(StackFrame(*f) for f in a)) if a else Stack())
        else:
            out.append(a)
    return tuple(out)


_RESTATING = ("CoroStatus", "CoroWaiting", "LoopStatus", "RangeActive", "Label")


@settings(max_examples=150, deadline=None)
@given(
    gens=st.lists(
        st.lists(st.tuples(st.integers(1, 5), events()), max_size=4), max_size=3
    )
)
def test_random_events_round_trip(gens: list[list[tuple[int, list[Any]]]]) -> None:
    """Random sequences of every event type, in several threads and
    generations, decode with the same types, times, threads and arguments,
    in file order (and Reader.raw() agrees on all but the unresolved ids);
    typed reading yields one event per raw event (two per step record) plus
    the thread labels and syncs, in time order within a generation."""
    generations = [
        [(tid, f"thread-{tid}", evs) for tid, evs in batches] for batches in gens
    ]
    data = encode_trace(generations)
    pipeline = _Pipeline()
    raw = [ev for gen in pipeline.feed(data) for ev in gen.events]
    pipeline.eof()
    got = [
        (r.thread, r.time, r.spec.code, r.args)
        for r in raw
        if not (r.spec.name == "Label" and r.args[2].startswith("thread-"))
    ]
    want = [
        (tid, ev[1], ev[0], _expected(spec.BY_CODE[ev[0]], ev[2:]))
        for batches in generations
        for tid, _, evs in batches
        for ev in evs
    ]
    assert len(got) == len(want)
    assert got == want
    unresolved = list(Reader(io.BytesIO(data)).raw())
    assert [(r.thread, r.time, r.spec) for r in unresolved] == [
        (r.thread, r.time, r.spec) for r in raw
    ]

    typed = list(Reader(io.BytesIO(data)))
    steps = sum(r.spec.name in spec.STEPS for r in raw)
    # A status, label or active range that restates what the reader already
    # knows is not yielded (docs/format.md, "Status at each generation").
    restating = sum(r.spec.name in _RESTATING for r in raw)
    hidden = len(raw) + steps + len(generations) - len(typed)
    assert 0 <= hidden <= restating
    syncs = [ev for ev in typed if ev.kind is EventKind.SYNC]
    assert [ev.sync.generation for ev in syncs] == list(range(len(generations)))
    gen_times: list[list[int]] = [[]]
    for ev in typed[1:]:
        if ev.kind is EventKind.SYNC:
            gen_times.append([])
        else:
            gen_times[-1].append(ev.time)
    assert all(ts == sorted(ts) for ts in gen_times)


def test_typed_details_match_what_was_written() -> None:
    """Per-kind details carry the written values, and asking for another
    kind's details raises TypeError."""
    c = spec.C
    t0 = 5_000
    evs = [
        (c["TaskBegin"], t0 + 1, 7, 3, "order", (("f", "a.py", 1),)),
        (c["RegionBegin"], t0 + 2, 7, "steam", None),
        (c["Log"], t0 + 3, 7, "orderID", "42", None),
        (c["Metric"], t0 + 4, "/heap:bytes", 1 << 40),
        (c["TaskEnd"], t0 + 5, 7, None),
    ]
    data = encode_trace([[(9, "main", evs)]])
    out = [ev for ev in Reader(io.BytesIO(data)) if ev.kind is not EventKind.LABEL]
    kinds = [ev.kind for ev in out]
    assert kinds == [
        EventKind.SYNC,
        EventKind.TASK_BEGIN,
        EventKind.REGION_BEGIN,
        EventKind.LOG,
        EventKind.METRIC,
        EventKind.TASK_END,
    ]
    sync, begin, region, log, metric, end = out
    assert (begin.task.id, begin.task.parent, begin.task.type) == (7, 3, "order")
    assert begin.stack.frames == (StackFrame("f", "a.py", 1),)
    assert (region.region.task, region.region.type) == (7, "steam")
    assert (log.log.task, log.log.category, log.log.message) == (7, "orderID", "42")
    assert (metric.metric.name, metric.metric.value) == ("/heap:bytes", 1 << 40)
    assert (end.task.id, end.task.parent, end.task.type) == (7, 3, "order")
    assert all(ev.thread == 9 for ev in out[1:])
    assert sync.sync.generation == 0
    for wrong in ("state_transition", "region", "log", "metric", "label", "range"):
        with pytest.raises(TypeError, match="TASK_BEGIN"):
            getattr(begin, wrong)
    with pytest.raises(TypeError, match="LOG"):
        _ = log.task


def test_task_end_without_its_begin_has_no_type() -> None:
    """A task that began before the trace ends with an empty type, as in Go."""
    data = encode_trace([[(1, "main", [(spec.C["TaskEnd"], 10, 4, None)])]])
    (end,) = [ev for ev in Reader(io.BytesIO(data)) if ev.kind is EventKind.TASK_END]
    assert (end.task.id, end.task.type) == (4, "")


def test_long_strings_are_clipped_with_a_marker() -> None:
    """A string longer than the limit is cut and says how much was cut."""
    long = "x" * (MAX_STRING + 10)
    data = encode_trace([[(1, "main", [(spec.C["Log"], 1, 0, "c", long, None)])]])
    (log,) = [ev for ev in Reader(io.BytesIO(data)) if ev.kind is EventKind.LOG]
    assert log.log.message.startswith("x" * MAX_STRING)
    assert log.log.message.endswith("[10 more chars]")


def test_strings_that_are_not_str_are_converted() -> None:
    """Non-str values in string arguments are recorded as str(), and a
    __str__ that raises does not break the trace."""

    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    evs = [
        (spec.C["Log"], 1, 0, 42, Bad(), None),
    ]
    data = encode_trace([[(1, "main", evs)]])
    (log,) = [ev for ev in Reader(io.BytesIO(data)) if ev.kind is EventKind.LOG]
    assert log.log.category == "42"
    assert log.log.message == "<unprintable Bad: RuntimeError>"
