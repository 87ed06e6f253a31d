"""The tracer's lifecycle: start, stop, tracing, options, log and logf."""

from __future__ import annotations

import asyncio
import io
import math
import threading
from pathlib import Path

import anyio
import pytest
from helpers import MIN_BUFFER, wait_until

import aiotrace
from aiotrace import reader
from aiotrace.reader import EventKind, ResourceKind
from aiotrace.sinks import MemorySink


def logs(events: list[reader.Event], category: str) -> list[reader.Event]:
    """The LOG events of ``category``, in trace order."""
    return [
        ev for ev in events if ev.kind is EventKind.LOG and ev.log.category == category
    ]


class AsyncCollector:
    """An async byte stream with ``async def send``: keeps what it is sent."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def send(self, data: bytes) -> None:
        await anyio.sleep(0)
        self.data += data

    def events(self) -> list[reader.Event]:
        return list(reader.Reader(io.BytesIO(bytes(self.data))))


# --- start / stop / tracing ---------------------------------------------------


def test_start_stop_writes_a_readable_trace(tmp_path: Path) -> None:
    """start() then stop() writes a complete trace: the logged events come back
    with their category, message and thread, in the order they were logged,
    after the generation's SYNC."""
    path = tmp_path / "t.trace"
    tracer = aiotrace.start(path)
    assert isinstance(tracer, aiotrace.Tracer)
    messages = [f"message {i}" for i in range(20)]
    for m in messages:
        aiotrace.log("lifecycle", m)
    aiotrace.stop()

    events = reader.read_events(path)
    assert events[0].kind is EventKind.SYNC
    got = logs(events, "lifecycle")
    assert [ev.log.message for ev in got] == messages
    assert {ev.thread for ev in got} == {threading.get_native_id()}
    assert {ev.log.task for ev in got} == {aiotrace.BACKGROUND_TASK}
    times = [ev.time for ev in got]
    assert times == sorted(times)


def test_with_tracing_traces_the_block(tmp_path: Path) -> None:
    """`with aiotrace.tracing(path)` turns tracing on for the block, returns the
    Tracer, and on exit stops tracing and leaves a complete trace."""
    path = tmp_path / "with.trace"
    assert not aiotrace.is_enabled()
    with aiotrace.tracing(str(path)) as tracer:
        assert isinstance(tracer, aiotrace.Tracer)
        assert aiotrace.is_enabled()
        aiotrace.log("block", "inside")
    assert not aiotrace.is_enabled()
    aiotrace.log("block", "after")  # tracing is off: recorded nowhere

    got = logs(reader.read_events(path), "block")
    assert [ev.log.message for ev in got] == ["inside"]
    assert got[0].thread == threading.get_native_id()


@pytest.mark.anyio
async def test_async_with_tracing_traces_the_block(tmp_path: Path) -> None:
    """`async with aiotrace.tracing(path)` works on asyncio and trio: events
    logged by concurrent tasks of the loop come back, each task's in order, on
    the loop's thread."""
    path = tmp_path / "async.trace"

    async def worker(name: str) -> None:
        for i in range(50):
            aiotrace.log(name, str(i))
            await anyio.sleep(0)

    async with aiotrace.tracing(path) as tracer:
        assert aiotrace.is_enabled()
        assert not tracer.is_async
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, "a")
            tg.start_soon(worker, "b")
    assert not aiotrace.is_enabled()

    events = reader.read_events(path)
    for name in ("a", "b"):
        got = logs(events, name)
        assert [ev.log.message for ev in got] == [str(i) for i in range(50)]
        assert {ev.thread for ev in got} == {threading.get_native_id()}


def test_tracing_covers_asyncio_run(tmp_path: Path) -> None:
    """`with aiotrace.tracing(path): asyncio.run(main())` records what main
    logs, including from a loop created after tracing started."""
    path = tmp_path / "run.trace"

    async def main() -> None:
        aiotrace.log("main", "before sleep")
        await asyncio.sleep(0)
        aiotrace.log("main", "after sleep")

    with aiotrace.tracing(path):
        asyncio.run(main())

    got = logs(reader.read_events(path), "main")
    assert [ev.log.message for ev in got] == ["before sleep", "after sleep"]


def test_starting_twice_raises_and_keeps_the_first_trace(tmp_path: Path) -> None:
    """start() while tracing raises TracingError; the second sink is not even
    opened, and the first trace goes on unharmed."""
    first = MemorySink()
    second = tmp_path / "second.trace"
    aiotrace.start(first)
    try:
        aiotrace.log("twice", "one")
        with pytest.raises(aiotrace.TracingError, match="already"):
            aiotrace.start(second)
        with pytest.raises(aiotrace.TracingError, match="already"):  # noqa: SIM117
            with aiotrace.tracing(MemorySink()):
                pass
        assert aiotrace.is_enabled()
        aiotrace.log("twice", "two")
    finally:
        aiotrace.stop()
    assert not second.exists()
    got = logs(first.events(), "twice")
    assert [ev.log.message for ev in got] == ["one", "two"]


def test_stop_when_not_tracing_is_a_no_op(tmp_path: Path) -> None:
    """stop() with tracing off does nothing and raises nothing, before any
    trace and after one (twice in a row); the finished trace is untouched."""
    assert aiotrace.stop() is None
    path = tmp_path / "t.trace"
    with aiotrace.tracing(path):
        aiotrace.log("x", "y")
    size = path.stat().st_size
    assert aiotrace.stop() is None
    assert aiotrace.stop() is None
    assert not aiotrace.is_enabled()
    assert path.stat().st_size == size
    assert [ev.log.message for ev in logs(reader.read_events(path), "x")] == ["y"]


@pytest.mark.anyio
async def test_astop_when_not_tracing_is_a_no_op() -> None:
    """astop() with tracing off returns without error, and tracing stays off."""
    assert await aiotrace.astop() is None
    assert not aiotrace.is_enabled()
    sink = MemorySink()
    aiotrace.start(sink)
    await aiotrace.astop()
    assert await aiotrace.astop() is None
    assert sink.events()[0].kind is EventKind.SYNC


def test_is_enabled_flips_with_start_and_stop() -> None:
    """is_enabled() is False before start, True while tracing, False after
    stop, and True again for a second trace."""
    for _ in range(2):
        assert aiotrace.is_enabled() is False
        aiotrace.start(MemorySink())
        assert aiotrace.is_enabled() is True
        aiotrace.stop()
        assert aiotrace.is_enabled() is False


def test_events_logged_after_stop_are_not_recorded() -> None:
    """log() after stop() is a silent no-op: the trace holds only what was
    logged while tracing, and its bytes do not change."""
    sink = MemorySink()
    aiotrace.start(sink)
    aiotrace.log("c", "while on")
    aiotrace.stop()
    size = len(sink)
    aiotrace.log("c", "after stop")
    aiotrace.logf("c", "%s", "after stop")
    assert len(sink) == size
    assert [ev.log.message for ev in logs(sink.events(), "c")] == ["while on"]


def test_stop_returns_after_every_event_is_written(tmp_path: Path) -> None:
    """stop() returns only once every event is in the sink: 50,000 events
    logged right before stop() are all in the file as soon as it returns, in
    order, and the tracer's counters agree with the file."""
    n = 50_000
    path = tmp_path / "many.trace"
    tracer = aiotrace.start(path, runtime_events=False)
    for i in range(n):
        aiotrace.log("n", str(i))
    aiotrace.stop()

    got = logs(reader.read_events(path), "n")
    assert [ev.log.message for ev in got] == [str(i) for i in range(n)]
    assert tracer.events == n
    assert tracer.lost_events == 0
    assert tracer.bytes_written == path.stat().st_size
    assert tracer.error is None


def test_stop_from_a_worker_thread_while_the_loop_runs() -> None:
    """An async sink's trace can be stopped with sync stop() from another
    thread while its loop keeps running: stop() returns once the loop's writer
    has sent everything."""
    sink = AsyncCollector()

    async def main() -> None:
        tracer = aiotrace.start(sink)
        assert tracer.is_async
        for i in range(100):
            aiotrace.log("w", str(i))
        await asyncio.to_thread(aiotrace.stop)
        assert not aiotrace.is_enabled()

    asyncio.run(main())
    got = logs(sink.events(), "w")
    assert [ev.log.message for ev in got] == [str(i) for i in range(100)]


@pytest.mark.anyio
async def test_sync_stop_of_an_async_sink_on_its_loop_says_use_astop() -> None:
    """stop() on the loop that writes an async sink would deadlock, so it
    raises TracingError pointing to astop(); tracing stays on and astop()
    then finishes the trace with everything logged."""
    sink = AsyncCollector()
    aiotrace.start(sink)
    aiotrace.log("s", "before")
    with pytest.raises(aiotrace.TracingError, match=r"astop\(\)"):
        aiotrace.stop()
    assert aiotrace.is_enabled()
    aiotrace.log("s", "after")
    await aiotrace.astop()
    assert not aiotrace.is_enabled()
    assert [ev.log.message for ev in logs(sink.events(), "s")] == ["before", "after"]


def test_async_sink_without_a_running_loop_raises() -> None:
    """Starting an async sink outside any event loop raises TracingError that
    says to start inside a running loop; nothing is left running, so a new
    trace can start."""
    with pytest.raises(aiotrace.TracingError, match="running event loop") as exc:
        aiotrace.start(AsyncCollector())
    assert "AsyncCollector" in str(exc.value)
    assert not aiotrace.is_enabled()
    sink = MemorySink()
    aiotrace.start(sink)
    aiotrace.log("again", "ok")
    aiotrace.stop()
    assert [ev.log.message for ev in logs(sink.events(), "again")] == ["ok"]


# --- options ------------------------------------------------------------------


BAD_OPTIONS = [
    ("stall_threshold", "0.1", TypeError, "stall_threshold must be a number"),
    ("stall_threshold", True, TypeError, "stall_threshold must be a number"),
    ("stall_threshold", 0, ValueError, "stall_threshold must be a positive"),
    ("stall_threshold", -0.5, ValueError, "stall_threshold must be a positive"),
    ("stall_threshold", math.nan, ValueError, "stall_threshold must be a positive"),
    ("stall_threshold", math.inf, ValueError, "stall_threshold must be a positive"),
    ("metrics_interval", [1], TypeError, "metrics_interval must be a number"),
    ("metrics_interval", 0.0, ValueError, "metrics_interval must be a positive"),
    ("metrics_interval", -1, ValueError, "metrics_interval must be a positive"),
    ("max_buffer_bytes", 1.5e6, TypeError, "max_buffer_bytes must be an int"),
    ("max_buffer_bytes", "1000000", TypeError, "max_buffer_bytes must be an int"),
    ("max_buffer_bytes", True, TypeError, "max_buffer_bytes must be an int"),
    ("max_buffer_bytes", MIN_BUFFER - 1, ValueError, f"at least {MIN_BUFFER}"),
    ("max_buffer_bytes", -1, ValueError, f"at least {MIN_BUFFER}"),
]


@pytest.mark.parametrize(("option", "value", "error", "message"), BAD_OPTIONS)
@pytest.mark.parametrize("how", ["start", "tracing"])
def test_bad_options_raise_and_tracing_stays_off(
    tmp_path: Path,
    option: str,
    value: object,
    error: type[Exception],
    message: str,
    how: str,
) -> None:
    """A bad option raises TypeError or ValueError naming the option and what
    is wrong; tracing stays off, the path sink is not created, and a later
    start() works."""
    path = tmp_path / "never.trace"
    with pytest.raises(error, match=message) as exc:
        if how == "start":
            aiotrace.start(path, **{option: value})
        else:
            with aiotrace.tracing(path, **{option: value}):
                pytest.fail("the block ran despite a bad option")
    assert option in str(exc.value)
    assert not aiotrace.is_enabled()
    assert not path.exists()
    aiotrace.start(MemorySink())
    aiotrace.stop()


def test_unknown_option_raises_type_error(tmp_path: Path) -> None:
    """A misspelt option is a TypeError, and tracing stays off."""
    with pytest.raises(TypeError, match="stall_treshold"):
        aiotrace.start(tmp_path / "t.trace", stall_treshold=0.1)
    with pytest.raises(TypeError, match="stall_treshold"):  # noqa: SIM117
        with aiotrace.tracing(tmp_path / "t.trace", stall_treshold=0.1):
            pass
    assert not aiotrace.is_enabled()


def test_good_options_are_accepted_and_kept() -> None:
    """Valid options are taken as given (seconds as floats, None turns stall
    detection and metrics off, 64 KiB is the smallest buffer) and tracing
    works with them."""
    sink = MemorySink()
    tracer = aiotrace.start(
        sink, stall_threshold=2, metrics_interval=0.5, max_buffer_bytes=MIN_BUFFER
    )
    try:
        assert tracer.stall_threshold == 2.0
        assert isinstance(tracer.stall_threshold, float)
        assert tracer.metrics_interval == 0.5
        assert tracer.max_buffer_bytes == MIN_BUFFER
        aiotrace.log("opt", "a")
    finally:
        aiotrace.stop()
    with aiotrace.tracing(
        MemorySink(), stall_threshold=None, metrics_interval=None
    ) as tracer:
        assert tracer.stall_threshold is None
        assert tracer.metrics_interval is None
    assert [ev.log.message for ev in logs(sink.events(), "opt")] == ["a"]


# --- logf ---------------------------------------------------------------------


class CountingStr:
    """An argument whose __str__ counts how often it is formatted."""

    def __init__(self) -> None:
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        return f"formatted #{self.calls}"


def test_logf_formats_only_when_enabled() -> None:
    """logf() with tracing off does not format its arguments at all; with
    tracing on it formats once, and the trace holds the formatted message."""
    arg = CountingStr()
    aiotrace.logf("lazy", "value=%s", arg)
    assert arg.calls == 0

    sink = MemorySink()
    with aiotrace.tracing(sink):
        aiotrace.logf("lazy", "value=%s", arg)
        aiotrace.logf("lazy", "%d-%s-%r", 7, "x", "y")
    assert arg.calls == 1

    aiotrace.logf("lazy", "value=%s", arg)
    assert arg.calls == 1
    got = logs(sink.events(), "lazy")
    assert [ev.log.message for ev in got] == ["value=formatted #1", "7-x-'y'"]


def test_logf_with_a_bad_format_does_not_raise() -> None:
    """A format that does not match its arguments never raises into the traced
    program; the event is still recorded, and its message shows the format."""
    sink = MemorySink()
    with aiotrace.tracing(sink):
        aiotrace.logf("bad", "%d items", "not a number")
        aiotrace.logf("bad", "%s and %s", "only one")
        aiotrace.logf("bad", "100%")
        aiotrace.log("bad", "still running")
    got = logs(sink.events(), "bad")
    assert len(got) == 4
    assert "%d items" in got[0].log.message
    assert "%s and %s" in got[1].log.message
    assert "100%" in got[2].log.message
    assert got[3].log.message == "still running"


# --- generations --------------------------------------------------------------


def test_a_long_trace_spans_self_contained_generations(tmp_path: Path) -> None:
    """A trace longer than a generation (about 1 MiB) is cut into several:
    SYNC events come with generation numbers 0, 1, 2, ...; a message repeated
    in every generation reads back the same from each (each generation has
    its own string table), and each generation labels the thread again."""
    path = tmp_path / "long.trace"
    repeated = "the same message in every generation"
    filler = "y" * 4000
    phases, per_phase = 4, 300  # about 1.2 MB of strings per phase
    with aiotrace.tracing(path) as tracer:
        logged = 0
        for phase in range(phases):
            aiotrace.log("repeat", repeated)
            for i in range(per_phase):
                aiotrace.log("bulk", f"{phase}:{i}:{filler}")
            logged += 1 + per_phase
            expected = logged
            wait_until(lambda n=expected: tracer.events >= n, "the phase's encoding")

    events = reader.read_events(path)
    generations = [ev.sync.generation for ev in events if ev.kind is EventKind.SYNC]
    assert generations == list(range(len(generations)))
    assert len(generations) >= phases

    gen = -1
    repeat_gens = []
    labelled: set[int] = set()
    logged_in: set[int] = set()
    me = threading.get_native_id()
    for ev in events:
        if ev.kind is EventKind.SYNC:
            gen = ev.sync.generation
        elif ev.kind is EventKind.LABEL:
            res = ev.label.resource
            if res.kind is ResourceKind.THREAD and res.id == me:
                assert ev.label.label == threading.current_thread().name
                labelled.add(gen)
        elif ev.kind is EventKind.LOG:
            logged_in.add(gen)
            if ev.log.category == "repeat":
                assert ev.log.message == repeated
                repeat_gens.append(gen)
    assert len(repeat_gens) == phases
    assert repeat_gens == sorted(set(repeat_gens))  # one per generation, in order
    assert logged_in <= labelled
    bulk = [ev.log.message for ev in logs(events, "bulk")]
    assert bulk == [
        f"{p}:{i}:{filler}" for p in range(phases) for i in range(per_phase)
    ]
