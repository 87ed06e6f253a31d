"""User annotations: tasks, regions and logs, as they read back from a trace."""

from __future__ import annotations

import asyncio
import inspect
import threading
import warnings
from collections.abc import Iterator

import pytest

import aiotrace
from aiotrace.reader import Event, EventKind
from aiotrace.sinks import MemorySink

MISUSE = "aiotrace/misuse"


def _kinds(events: list[Event], *kinds: EventKind) -> list[Event]:
    return [ev for ev in events if ev.kind in kinds]


def _region_events(events: list[Event]) -> list[tuple[str, str, int]]:
    out = []
    for ev in _kinds(events, EventKind.REGION_BEGIN, EventKind.REGION_END):
        edge = "begin" if ev.kind is EventKind.REGION_BEGIN else "end"
        out.append((edge, ev.region.type, ev.region.task))
    return out


@pytest.fixture
def sink() -> Iterator[MemorySink]:
    """A MemorySink traced into for the test's body."""
    s = MemorySink()
    with aiotrace.tracing(s):
        yield s


def test_tasks_have_ids_types_and_parents() -> None:
    """new_task makes a child of the current task, current in this context;
    `with` ends it and restores the parent; ids are unique."""
    sink = MemorySink()
    with aiotrace.tracing(sink):
        assert aiotrace.current_task() is None
        with aiotrace.new_task("order") as order:
            assert aiotrace.current_task() is order
            assert order.parent_id == aiotrace.BACKGROUND_TASK
            with aiotrace.new_task("payment") as payment:
                assert aiotrace.current_task() is payment
                assert payment.parent_id == order.id
            assert aiotrace.current_task() is order
            assert payment.ended and not order.ended
        assert aiotrace.current_task() is None
    assert order.id != payment.id
    begins = _kinds(sink.events(), EventKind.TASK_BEGIN)
    ends = _kinds(sink.events(), EventKind.TASK_END)
    assert [(e.task.id, e.task.parent, e.task.type) for e in begins] == [
        (order.id, 0, "order"),
        (payment.id, order.id, "payment"),
    ]
    assert [(e.task.id, e.task.type) for e in ends] == [
        (payment.id, "payment"),
        (order.id, "order"),
    ]


@pytest.mark.asyncio
async def test_async_with_task_and_end_from_another_thread() -> None:
    """`async with new_task` works; end() may come from any thread, and a
    second end() records nothing more."""
    sink = MemorySink()
    async with aiotrace.tracing(sink):
        async with aiotrace.new_task("request") as t:
            pass
        other = aiotrace.new_task("detached")
        th = threading.Thread(target=other.end)
        th.start()
        th.join()
        other.end()
    ends = _kinds(sink.events(), EventKind.TASK_END)
    assert sorted(e.task.id for e in ends) == sorted([t.id, other.id])
    (detached,) = [e for e in ends if e.task.id == other.id]
    assert detached.thread == th.native_id


def test_task_spanning_the_start_and_the_stop_of_tracing() -> None:
    """A task begun before tracing and ended during it has a TASK_END with no
    type (its TASK_BEGIN is not in the trace), as in Go; one begun during
    tracing and ended after it has only its TASK_BEGIN."""
    early = aiotrace.new_task("early")
    sink = MemorySink()
    with aiotrace.tracing(sink):
        aiotrace.log("in", "early")
        early.end()
        late = aiotrace.new_task("late")
    late.end()
    events = sink.events()
    (log,) = _kinds(events, EventKind.LOG)
    assert log.log.task == early.id
    (end,) = _kinds(events, EventKind.TASK_END)
    assert (end.task.id, end.task.type) == (early.id, "")
    (begin,) = _kinds(events, EventKind.TASK_BEGIN)
    assert (begin.task.id, begin.task.parent) == (late.id, early.id)
    late_logs = [
        e for e in events if e.kind is EventKind.TASK_END and e.task.id == late.id
    ]
    assert late_logs == []


def test_regions_nest_and_belong_to_the_current_task(sink: MemorySink) -> None:
    """Every form of region records a balanced, LIFO begin/end pair under the
    current task, or the background task outside any."""

    @aiotrace.region("decorated")
    def decorated(x: int) -> int:
        return x * 2

    with aiotrace.region("outside"):
        pass
    with aiotrace.new_task("t") as t:
        with aiotrace.region("outer") as outer:
            assert isinstance(outer, aiotrace.Region)
            r = aiotrace.start_region("manual")
            assert decorated(21) == 42
            r.end()
        assert aiotrace.with_region("with", lambda a, b: a + b, 1, b=2) == 3
    aiotrace.stop()
    assert _region_events(sink.events()) == [
        ("begin", "outside", 0),
        ("end", "outside", 0),
        ("begin", "outer", t.id),
        ("begin", "manual", t.id),
        ("begin", "decorated", t.id),
        ("end", "decorated", t.id),
        ("end", "manual", t.id),
        ("end", "outer", t.id),
        ("begin", "with", t.id),
        ("end", "with", t.id),
    ]


@pytest.mark.asyncio
async def test_async_regions() -> None:
    """`async with region`, a decorated `async def` and with_region on a
    coroutine function each make one region around the awaited work."""

    @aiotrace.region("adecorated")
    async def work(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    async def plain(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    assert inspect.iscoroutinefunction(work)
    sink = MemorySink()
    async with aiotrace.tracing(sink), aiotrace.new_task("t") as t:
        async with aiotrace.region("block"):
            assert await work(1) == 2
        assert await aiotrace.with_region("awith", plain, 2) == 6
    assert _region_events(sink.events()) == [
        ("begin", "block", t.id),
        ("begin", "adecorated", t.id),
        ("end", "adecorated", t.id),
        ("end", "block", t.id),
        ("begin", "awith", t.id),
        ("end", "awith", t.id),
    ]


def test_region_refuses_to_decorate_a_generator() -> None:
    """Decorating a generator function is a clear TypeError at decoration
    time, since a region must begin and end in one call."""
    with pytest.raises(TypeError, match="generator function"):

        @aiotrace.region("gen")
        def gen() -> Iterator[int]:
            yield 1


def test_disabled_region_allocates_no_new_object() -> None:
    """With tracing off, region(t) returns the same no-op object for a type
    each time, and start_region returns a no-op whose end() does nothing."""
    assert not aiotrace.is_enabled()
    assert aiotrace.region("x") is aiotrace.region("x")
    r = aiotrace.start_region("y")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.end()
        r.end()


def _misuse_messages(events: list[Event]) -> list[str]:
    return [
        ev.log.message
        for ev in _kinds(events, EventKind.LOG)
        if ev.log.category == MISUSE
    ]


def test_region_ended_twice_is_warned_and_recorded_once(sink: MemorySink) -> None:
    """Ending a region twice warns, records a misuse log, and records only one
    REGION_END."""
    r = aiotrace.start_region("twice")
    r.end()
    with pytest.warns(aiotrace.TracingWarning, match="'twice' ended twice"):
        r.end()
    aiotrace.stop()
    events = sink.events()
    assert _region_events(events) == [("begin", "twice", 0), ("end", "twice", 0)]
    assert _misuse_messages(events) == ["region 'twice' ended twice"]


def test_regions_ended_out_of_order(sink: MemorySink) -> None:
    """Ending an outer region while an inner one is open warns and records
    the misuse; both ends are still recorded."""
    outer = aiotrace.start_region("outer")
    inner = aiotrace.start_region("inner")
    with pytest.warns(aiotrace.TracingWarning, match="out of order"):
        outer.end()
    inner.end()
    aiotrace.stop()
    events = sink.events()
    assert [e[:2] for e in _region_events(events)] == [
        ("begin", "outer"),
        ("begin", "inner"),
        ("end", "outer"),
        ("end", "inner"),
    ]
    (msg,) = _misuse_messages(events)
    assert "'outer' ended out of order" in msg and "'inner'" in msg


@pytest.mark.asyncio
async def test_region_ended_in_another_coroutine() -> None:
    """A region ended by a different coroutine than the one that began it is
    warned about and recorded as misuse, with the ending coroutine's stack."""
    sink = MemorySink()
    async with aiotrace.tracing(sink):
        r = aiotrace.start_region("handoff")

        async def other() -> None:
            r.end()

        with pytest.warns(aiotrace.TracingWarning, match="another coroutine or thread"):
            await asyncio.create_task(other())
    events = sink.events()
    (msg,) = _misuse_messages(events)
    assert "'handoff' ended in another coroutine or thread" in msg
    (log,) = [e for e in _kinds(events, EventKind.LOG) if e.log.category == MISUSE]
    assert any(f.func.endswith("other") for f in log.stack.frames)


def test_misuse_never_raises_even_with_warnings_as_errors(sink: MemorySink) -> None:
    """With warnings turned into errors, misuse still does not raise into the
    traced program; the trace still records it."""
    r = aiotrace.start_region("strict")
    r.end()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.end()
    aiotrace.stop()
    assert _misuse_messages(sink.events()) == ["region 'strict' ended twice"]


def test_logs_belong_to_the_current_task(sink: MemorySink) -> None:
    """log and logf record under the current task, or the background task."""
    aiotrace.log("c", "background")
    with aiotrace.new_task("t") as t:
        aiotrace.logf("c", "%s=%d", "orderID", 42)
    aiotrace.stop()
    logs = [(e.log.task, e.log.message) for e in _kinds(sink.events(), EventKind.LOG)]
    assert logs == [(0, "background"), (t.id, "orderID=42")]


def _annotate_here() -> int:
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    aiotrace.log("where", "here")
    aiotrace.logf("where", "%s", "here too")
    return line


def test_annotation_stacks_name_the_caller() -> None:
    """With annotation_stacks=True, a log's stack names the calling function,
    file and line, innermost first; by default annotations carry no stack."""
    with_stacks, without = MemorySink(), MemorySink()
    with aiotrace.tracing(with_stacks, annotation_stacks=True):
        line = _annotate_here()
        with aiotrace.region("r"):
            pass
    with aiotrace.tracing(without):
        _annotate_here()
    log, logf = _kinds(with_stacks.events(), EventKind.LOG)
    top = log.stack.frames[0]
    assert (top.func, top.file, top.line) == ("_annotate_here", __file__, line)
    assert log.stack.frames[1].func == "test_annotation_stacks_name_the_caller"
    top = logf.stack.frames[0]
    assert (top.func, top.file, top.line) == ("_annotate_here", __file__, line + 1)
    for ev in _kinds(
        with_stacks.events(), EventKind.REGION_BEGIN, EventKind.REGION_END
    ):
        assert ev.stack.frames[0].func == "test_annotation_stacks_name_the_caller"
    plain = _kinds(without.events(), EventKind.LOG)
    assert len(plain) == 2
    assert not any(ev.stack for ev in plain)


def test_annotation_stacks_option_is_checked() -> None:
    """A non-bool annotation_stacks is a TypeError and tracing stays off."""
    with pytest.raises(TypeError, match="annotation_stacks"):
        aiotrace.start(MemorySink(), annotation_stacks="yes")  # type: ignore[arg-type]
    assert not aiotrace.is_enabled()
