"""The flight recorder: recent generations kept in memory, snapshots written
on demand while it runs, alone or alongside a trace, and after stalls."""

from __future__ import annotations

import asyncio
import gc
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import wait_until

import aiotrace
from aiotrace.reader import (
    CoroState,
    Event,
    EventKind,
    Reader,
    ResourceKind,
    validate,
)
from aiotrace.sinks import MemorySink

KIB = 1 << 10


def read(data: bytes) -> list[Event]:
    return list(Reader(io.BytesIO(data)))


def check(events: list[Event]) -> None:
    problems = validate(events)
    assert not problems, problems[:5]


def syncs(events: list[Event]) -> list[int]:
    return [ev.sync.generation for ev in events if ev.kind is EventKind.SYNC]


def logs(events: list[Event], category: str) -> list[str]:
    return [
        ev.log.message
        for ev in events
        if ev.kind is EventKind.LOG and ev.log.category == category
    ]


async def ping_pong(stop: threading.Event) -> None:
    """Busy scheduling until ``stop``: two coroutines wake each other."""
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def ponger() -> None:
        while True:
            await queue.get()

    task = asyncio.create_task(ponger(), name="ponger")
    n = 0
    while not stop.is_set():
        queue.put_nowait(n)
        n += 1
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class Busy:
    """A thread running an asyncio loop busy with ping_pong until closed."""

    def __init__(self, main: Callable[[threading.Event], object] = ping_pong) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._main = main
        self.thread = threading.Thread(target=self._run, name="busy")

    def _run(self) -> None:
        try:
            asyncio.run(self._main(self.stop))  # type: ignore[arg-type]
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Busy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        assert self.error is None, self.error


@pytest.fixture
def rec() -> Iterator[aiotrace.FlightRecorder]:
    recorder = aiotrace.FlightRecorder(max_bytes=512 * KIB, min_age=3600)
    try:
        yield recorder
    finally:
        recorder.stop()


def wait_generations(rec: aiotrace.FlightRecorder, n: int) -> None:
    """Waits until the recorder has closed at least ``n`` generations."""

    def enough() -> bool:
        snap = MemorySink()
        rec.write_to(snap)
        return len(syncs(read(snap.getvalue()))) >= n

    wait_until(enough, f"{n} generations")


def test_snapshot_while_running_is_a_whole_valid_trace_from_a_later_generation(
    tmp_path: Path,
) -> None:
    """With a small ring and a busy loop, a snapshot taken while both run is
    a whole trace (TRACE_END, no truncation) that begins at a generation
    after 0, passes validation, and knows the coroutines that existed before
    it began: they first appear with a status (UNDETERMINED -> state) and
    their label, and the waiting ones with the reason they wait for."""
    rec = aiotrace.FlightRecorder(max_bytes=64 * KIB, min_age=0)
    rec.start()
    try:
        with Busy():
            wait_until(lambda: rec.memory_bytes > 64 * KIB, "a full ring")
            first: list[int] = []

            def later_than_zero() -> bool:
                rec.write_to(tmp_path / "snap.trace")
                events = read((tmp_path / "snap.trace").read_bytes())
                first[:] = syncs(events)[:1]
                return first[0] > 0

            wait_until(later_than_zero, "the ring to drop generation 0")
    finally:
        rec.stop()
    events = read((tmp_path / "snap.trace").read_bytes())
    check(events)
    seen: dict[int, Event] = {}
    for ev in events:
        if ev.kind is EventKind.STATE_TRANSITION:
            st = ev.state_transition
            if st.resource.kind is ResourceKind.COROUTINE:
                seen.setdefault(st.resource.id, ev)
    restated = {
        cid: ev.state_transition
        for cid, ev in seen.items()
        if ev.state_transition.old is CoroState.UNDETERMINED
    }
    # ponger and the main coroutine lived through the whole run.
    labels = {
        ev.label.resource.id: ev.label.label
        for ev in events
        if ev.kind is EventKind.LABEL
        and ev.label.resource.kind is ResourceKind.COROUTINE
    }
    ponger = [cid for cid in restated if labels.get(cid, "").endswith(" ponger")]
    assert len(ponger) == 1, (restated, labels)
    st = restated[ponger[0]]
    if st.new is CoroState.WAITING:
        assert st.reason == "queue"
    assert any("ping_pong" in labels.get(cid, "") for cid in restated)


def test_the_snapshot_ends_with_what_was_recorded_just_before_it() -> None:
    """write_to closes the generation being recorded: a log made just before
    the call is in the snapshot, although no generation would close for a
    second by itself; the recorder goes on, and the next snapshot has the
    next log too."""
    rec = aiotrace.FlightRecorder()
    rec.start()
    try:
        aiotrace.log("mark", "one")
        first = MemorySink()
        n = rec.write_to(first)
        assert n == len(first.getvalue())
        aiotrace.log("mark", "two")
        second = MemorySink()
        rec.write_to(second)
    finally:
        rec.stop()
    a, b = read(first.getvalue()), read(second.getvalue())
    assert logs(a, "mark") == ["one"]
    assert logs(b, "mark") == ["one", "two"]
    assert syncs(b) == [*syncs(a), syncs(a)[-1] + 1]
    check(a)
    check(b)


def test_kept_generations_follow_min_age_unless_max_bytes_wins() -> None:
    """min_age=0 keeps only the newest generation; a large min_age with a
    large max_bytes keeps every generation from 0; a large min_age with the
    smallest max_bytes keeps less than all (max_bytes wins)."""
    keep_all = aiotrace.FlightRecorder(max_bytes=64 << 20, min_age=3600)
    keep_all.start()
    try:
        with Busy():
            wait_generations(keep_all, 4)
        snap = MemorySink()
        keep_all.write_to(snap)
    finally:
        keep_all.stop()
    gens = syncs(read(snap.getvalue()))
    assert gens == list(range(len(gens)))
    assert len(gens) >= 4

    newest = aiotrace.FlightRecorder(max_bytes=64 << 20, min_age=0)
    newest.start()
    try:
        with Busy():
            wait_until(lambda: newest.memory_bytes > 0, "some trace")
            for _ in range(3):  # each snapshot cuts a generation
                newest.write_to(MemorySink())
            aiotrace.log("mark", "x")
        snap = MemorySink()
        newest.write_to(snap)
    finally:
        newest.stop()
    assert len(syncs(read(snap.getvalue()))) == 1

    small = aiotrace.FlightRecorder(max_bytes=64 * KIB, min_age=3600)
    small.start()
    try:
        with Busy():
            # Each snapshot cuts a generation, so the ring passes max_bytes
            # however slowly the busy loop records.

            def dropped() -> bool:
                snap = MemorySink()
                small.write_to(snap)
                return syncs(read(snap.getvalue()))[0] > 0

            wait_until(dropped, "max_bytes to drop old generations")
    finally:
        small.stop()


async def steady(stop: threading.Event) -> None:
    """Steady scheduling until ``stop``: 20 coroutines sleeping 0.5 ms."""

    async def ticker() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.0005)

    await asyncio.gather(*(ticker() for _ in range(20)))


def test_memory_stays_within_max_bytes_plus_one_generation() -> None:
    """Under a steady load, the memory the recorder holds, sampled again and
    again, never passes max_bytes plus the largest generation of the
    snapshot taken right after the sample (which closes the generation
    being recorded at the sample, and holds what the ring kept)."""
    max_bytes = 128 * KIB
    rec = aiotrace.FlightRecorder(max_bytes=max_bytes, min_age=3600)
    rec.start()
    checked: list[tuple[int, int]] = []
    try:
        with Busy(steady):
            wait_until(lambda: rec.memory_bytes > max_bytes, "a full ring")
            for _ in range(30):
                before = rec.memory_bytes
                wait_until(lambda: rec.memory_bytes != before, "more trace")  # noqa: B023
                held = rec.memory_bytes
                snap = MemorySink()
                rec.write_to(snap)
                checked.append((held, _largest_generation(snap.getvalue())))
    finally:
        rec.stop()
    assert max(held for held, _ in checked) > max_bytes // 2
    # The generation that took the ring over max_bytes may be dropped by the
    # time the next snapshot is taken: bound by the largest one seen at all.
    largest = max(largest for _, largest in checked)
    for held, in_snapshot in checked:
        assert in_snapshot > 0 and held <= max_bytes + largest, (held, largest)


def _largest_generation(data: bytes) -> int:
    """The size of the largest generation in a trace, from its frames."""
    import struct

    from aiotrace._format.framing import HEADER_SIZE, FrameKind

    pos, start, largest = HEADER_SIZE, 0, 0
    while pos < len(data):
        kind, length = data[pos], struct.unpack_from("<I", data, pos + 1)[0]
        if kind == FrameKind.GENERATION:
            start = pos
        end = pos + 9 + length
        if kind == FrameKind.GENERATION_END:
            largest = max(largest, end - start)
        pos = end
    return largest


def test_a_second_snapshot_at_once_gets_a_clear_error(tmp_path: Path) -> None:
    """While one snapshot is being written (its sink blocks), another
    write_to raises TracingError saying a snapshot is being written; once
    the first is done, snapshots work again."""

    class SlowFile:
        def __init__(self) -> None:
            self.entered = threading.Event()
            self.release = threading.Event()
            self.data = bytearray()

        def write(self, data: bytes) -> int:
            self.entered.set()
            self.release.wait(30)
            self.data += data
            return len(data)

    rec = aiotrace.FlightRecorder()
    rec.start()
    try:
        slow = SlowFile()
        writer = threading.Thread(target=rec.write_to, args=(slow,))
        writer.start()
        try:
            assert slow.entered.wait(30)
            with pytest.raises(aiotrace.TracingError, match="already being written"):
                rec.write_to(tmp_path / "second.trace")
            assert not (tmp_path / "second.trace").exists()
        finally:
            slow.release.set()
            writer.join()
        rec.write_to(tmp_path / "third.trace")
    finally:
        rec.stop()
    check(read(bytes(slow.data)))
    check(read((tmp_path / "third.trace").read_bytes()))


def test_snapshot_to_async_sinks_from_a_coroutine(tmp_path: Path) -> None:
    """awrite_to writes to an asyncio StreamWriter (a real socket) and to a
    path from a coroutine; both are whole traces holding a log made just
    before. write_to refuses an async sink, naming awrite_to."""
    received = bytearray()

    async def main() -> tuple[int, int]:
        done = asyncio.Event()

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            received.extend(await r.read())
            w.close()
            done.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        aiotrace.log("mark", "async")
        with pytest.raises(TypeError, match="awrite_to"):
            rec.write_to(writer)
        n_stream = await rec.awrite_to(writer)
        writer.close()
        await writer.wait_closed()
        await done.wait()
        server.close()
        await server.wait_closed()
        n_path = await rec.awrite_to(tmp_path / "a.trace")
        return n_stream, n_path

    rec = aiotrace.FlightRecorder()
    rec.start()
    try:
        n_stream, n_path = asyncio.run(main())
    finally:
        rec.stop()
    assert n_stream == len(received)
    assert n_path == (tmp_path / "a.trace").stat().st_size
    for data in (bytes(received), (tmp_path / "a.trace").read_bytes()):
        events = read(data)
        assert logs(events, "mark") == ["async"]
        check(events)


def test_snapshot_to_a_socket_and_after_stop() -> None:
    """write_to takes a connected socket; after stop, what was kept can
    still be written, and holds events up to the stop."""
    rec = aiotrace.FlightRecorder()
    rec.start()
    a, b = socket.socketpair()
    try:
        aiotrace.log("mark", "before stop")
        rec.stop()
        assert not rec.enabled
        assert not aiotrace.is_enabled()
        n = rec.write_to(a)
        a.close()
        data = bytearray()
        while chunk := b.recv(65536):
            data += chunk
    finally:
        a.close()
        b.close()
    assert n == len(data)
    assert logs(read(bytes(data)), "mark") == ["before stop"]


def test_a_trace_started_while_the_recorder_runs_shares_the_recording(
    tmp_path: Path,
) -> None:
    """aiotrace.start while a flight recorder runs: the trace starts at a
    later generation and is whole and valid; stopping it leaves the recorder
    running (is_enabled stays True), and the recorder's snapshot holds the
    events from before, during and after the trace."""
    rec = aiotrace.FlightRecorder()
    rec.start()
    try:
        aiotrace.log("mark", "before")
        snap = MemorySink()
        rec.write_to(snap)  # closes generation 0
        assert aiotrace.is_enabled()
        with aiotrace.tracing(tmp_path / "t.trace"):
            aiotrace.log("mark", "during")
        assert aiotrace.is_enabled()
        assert rec.enabled
        aiotrace.log("mark", "after")
        rec.write_to(snap := MemorySink())
    finally:
        rec.stop()
    assert not aiotrace.is_enabled()
    trace = read((tmp_path / "t.trace").read_bytes())
    assert syncs(trace)[0] > 0
    assert logs(trace, "mark") == ["during"]
    check(trace)
    flight = read(snap.getvalue())
    assert logs(flight, "mark") == ["before", "during", "after"]
    check(flight)


def test_a_recorder_started_and_stopped_during_a_trace_leaves_it_whole(
    tmp_path: Path,
) -> None:
    """FlightRecorder.start while a trace runs joins it; its snapshot begins
    at a later generation; stopping it leaves the trace running, and the
    trace, stopped last, is whole, valid, and has every log."""
    tracer = aiotrace.start(tmp_path / "t.trace")
    try:
        with Busy():
            aiotrace.log("mark", "1")
            rec = aiotrace.FlightRecorder()
            rec.start()
            aiotrace.log("mark", "2")
            snap = MemorySink()
            rec.write_to(snap)
            rec.stop()
            assert aiotrace.is_enabled()
            aiotrace.log("mark", "3")
    finally:
        tracer.stop()
    trace = read((tmp_path / "t.trace").read_bytes())
    assert syncs(trace)[0] == 0
    assert logs(trace, "mark") == ["1", "2", "3"]
    check(trace)
    flight = read(snap.getvalue())
    assert syncs(flight)[0] > 0
    assert logs(flight, "mark") == ["2"]
    check(flight)


def test_joining_with_other_options_is_refused() -> None:
    """A trace whose options differ from the running recorder's is refused
    with a TracingError naming the option; the recorder runs on."""
    rec = aiotrace.FlightRecorder(stall_threshold=0.5)
    rec.start()
    try:
        with pytest.raises(aiotrace.TracingError, match=r"stall_threshold=0\.1"):
            aiotrace.start(MemorySink())
        assert rec.enabled and aiotrace.is_enabled()
        other = aiotrace.FlightRecorder()
        with pytest.raises(aiotrace.TracingError, match="another flight recorder"):
            other.start()
        with pytest.raises(aiotrace.TracingError, match="already running"):
            rec.start()
    finally:
        rec.stop()


def test_bad_arguments_are_refused_clearly(tmp_path: Path) -> None:
    """Each bad argument gets an error naming it; write_to before start says
    the recorder never started."""
    with pytest.raises(ValueError, match="max_bytes must be at least"):
        aiotrace.FlightRecorder(max_bytes=100)
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        aiotrace.FlightRecorder(max_bytes=1.5e6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_age"):
        aiotrace.FlightRecorder(min_age=-1)
    with pytest.raises(ValueError, match="on_stall pattern"):
        aiotrace.FlightRecorder(on_stall=str(tmp_path / "{nope}.trace"))
    with pytest.raises(ValueError, match="stall detection"):
        aiotrace.FlightRecorder(on_stall=tmp_path / "s.trace", stall_threshold=None)
    with pytest.raises(ValueError, match="on_stall_interval"):
        aiotrace.FlightRecorder(on_stall_interval=0)
    with pytest.raises(aiotrace.TracingError, match="never started"):
        aiotrace.FlightRecorder().write_to(MemorySink())
    with pytest.raises(TypeError, match="must be a path"):
        aiotrace.FlightRecorder().write_to(42)


def test_a_never_started_recorder_writes_no_file(tmp_path: Path) -> None:
    """write_to / awrite_to a path on a recorder that was never started raise
    TracingError before opening it: no file is created, and no handle is left
    open (an unclosed file would be a ResourceWarning, an error here)."""
    rec = aiotrace.FlightRecorder()
    with pytest.raises(aiotrace.TracingError, match="never started"):
        rec.write_to(tmp_path / "x.trace")
    with pytest.raises(aiotrace.TracingError, match="never started"):
        rec.write_to(str(tmp_path / "y.trace"))
    with pytest.raises(aiotrace.TracingError, match="never started"):
        asyncio.run(rec.awrite_to(tmp_path / "z.trace"))
    gc.collect()  # an unclosed handle would warn (an error) by now
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _samples_of_stalls() -> dict[int, int]:
    """The running recording's watchdog counts of samples per stalling
    thread (white-box)."""
    from aiotrace import _session

    session = _session.current()
    assert session is not None and session.runtime is not None
    watchdog = session.runtime._watchdog
    assert watchdog is not None
    counts: dict[int, int] = watchdog._samples
    return counts


async def stalling(stop: threading.Event) -> None:
    """Two stalls, with a pause between, then waits for ``stop``. Each
    blocks 0.3 s, and again while the watchdog has taken fewer than 5
    samples of it (a loaded machine), in one line of C calls that every
    sample names."""
    counts, me = _samples_of_stalls(), threading.get_ident()
    for _ in range(2):
        await asyncio.sleep(0.01)
        while time.sleep(0.3) or counts.get(me, 0) <= 5:  # mark: stall
            pass
    while not stop.is_set():
        await asyncio.sleep(0.01)


def test_a_stall_writes_a_snapshot_with_the_stall_and_its_samples(
    tmp_path: Path,
) -> None:
    """on_stall: after a stall ends, the recorder writes a snapshot to the
    pattern's path, from a background thread. The dump holds the whole
    "loop stall" range and stack samples naming the blocking line. A second
    stall within on_stall_interval writes no second dump."""
    rec = aiotrace.FlightRecorder(
        on_stall=tmp_path / "stall-{n}-{pid}.trace",
        on_stall_interval=3600,
        stall_threshold=0.1,
    )
    rec.start()
    try:
        with Busy(stalling):
            wait_until(lambda: len(rec.stall_dumps) == 1, "a stall snapshot")

            def two_stalls() -> bool:
                snap = MemorySink()
                rec.write_to(snap)
                events = read(snap.getvalue())
                ends = [
                    ev
                    for ev in events
                    if ev.kind is EventKind.RANGE_END and ev.range.name == "loop stall"
                ]
                return len(ends) == 2

            # Once a snapshot shows the second stall's end, the drainer has
            # seen it and decided whether to dump.
            wait_until(two_stalls, "the second stall")
    finally:
        rec.stop()
    assert rec.dump_error is None
    assert len(rec.stall_dumps) == 1
    (path,) = rec.stall_dumps
    assert Path(path).parent == tmp_path
    assert Path(path).name.startswith("stall-1-")
    events = read(Path(path).read_bytes())
    check(events)
    stall = [
        ev
        for ev in events
        if ev.kind
        in (EventKind.RANGE_BEGIN, EventKind.RANGE_ACTIVE, EventKind.RANGE_END)
        and ev.range.name == "loop stall"
    ]
    kinds = [ev.kind for ev in stall]
    assert EventKind.RANGE_END in kinds
    assert kinds[0] in (EventKind.RANGE_BEGIN, EventKind.RANGE_ACTIVE)
    begin, end = stall[0], stall[kinds.index(EventKind.RANGE_END)]
    assert end.time - begin.time >= 250_000_000
    samples = [
        ev
        for ev in events
        if ev.kind is EventKind.STACK_SAMPLE and begin.time <= ev.time <= end.time
    ]
    line = _marker_line("stall")
    # The blocking line is sampled first (5 times at least: it blocks until
    # then); a sample taken after it, as the step goes on to its await, may
    # name another line, never the blocking one again.
    at_line = [
        (s.stack.frames[0].func, s.stack.frames[0].file, s.stack.frames[0].line)
        == ("stalling", __file__, line)
        for s in sorted(samples, key=lambda s: s.time)
    ]
    held = at_line.index(False) if False in at_line else len(at_line)
    assert held >= 5, [s.stack.frames[0] for s in samples]
    assert not any(at_line[held:]), [s.stack.frames[0] for s in samples]


def _marker_line(marker: str) -> int:
    text = Path(__file__).read_text().splitlines()
    (line,) = [i + 1 for i, t in enumerate(text) if t.endswith(f"# mark: {marker}")]
    return line


def test_a_whole_trace_of_many_generations_reads_as_if_not_restated(
    tmp_path: Path,
) -> None:
    """Every generation restates what is alive (the raw records show
    CoroWaiting/CoroStatus), but reading the whole trace, a coroutine
    created in it never gets an UNDETERMINED transition: the reader yields
    a restated status only when it is news. The trace validates."""
    rec = aiotrace.FlightRecorder(max_bytes=64 * KIB, min_age=0)
    rec.start()
    try:
        with aiotrace.tracing(tmp_path / "t.trace"), Busy():

            def many() -> bool:
                snap = MemorySink()
                rec.write_to(snap)
                return syncs(read(snap.getvalue()))[0] > 3

            wait_until(many, "several generations")
    finally:
        rec.stop()
    data = (tmp_path / "t.trace").read_bytes()
    raw = list(Reader(io.BytesIO(data)).raw())
    restated = [r for r in raw if r.spec.name in ("CoroWaiting", "CoroStatus")]
    assert restated
    events = read(data)
    assert len(syncs(events)) > 3
    check(events)
    created = {
        ev.state_transition.resource.id
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.old is CoroState.NOT_EXIST
    }
    assert created
    for ev in events:
        if ev.kind is EventKind.STATE_TRANSITION:
            st = ev.state_transition
            if st.resource.kind is ResourceKind.COROUTINE and st.resource.id in created:
                assert st.old is not CoroState.UNDETERMINED, ev
