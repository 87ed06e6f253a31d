"""Events from many OS threads at once."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import aiotrace
from aiotrace import reader
from aiotrace.reader import EventKind, ResourceKind
from aiotrace.sinks import MemorySink


def thread_labels(events: list[reader.Event]) -> dict[int, set[str]]:
    """The labels given to each thread id by LABEL events."""
    out: dict[int, set[str]] = {}
    for ev in events:
        if ev.kind is EventKind.LABEL and ev.label.resource.kind is ResourceKind.THREAD:
            out.setdefault(ev.label.resource.id, set()).add(ev.label.label)
    return out


def test_many_threads_logging_at_once(tmp_path: Path) -> None:
    """8 threads logging 5,000 numbered messages each, all at the same time:
    every message comes back exactly once, each thread's in order and with
    its own native thread id, each thread is labelled with its name, nothing
    is lost, and within each generation the events are ordered by time."""
    n_threads, per_thread = 8, 5000
    path = tmp_path / "threads.trace"
    start = threading.Barrier(n_threads)
    end = threading.Barrier(n_threads)  # all alive at once: native ids unique
    native: dict[str, int] = {}

    def work(name: str) -> None:
        native[name] = threading.get_native_id()
        start.wait(20)
        for i in range(per_thread):
            aiotrace.log(name, f"{name} {i}")
        end.wait(20)

    names = [f"worker-{k}" for k in range(n_threads)]
    threads = [threading.Thread(target=work, args=(n,), name=n) for n in names]
    with aiotrace.tracing(path) as tracer:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(set(native.values())) == n_threads

    with path.open("rb") as f:
        r = reader.Reader(f)
        events = list(r)
    assert tracer.lost_events == 0
    assert r.lost_events == 0

    by_category: dict[str, list[reader.Event]] = {}
    for ev in events:
        if ev.kind is EventKind.LOG:
            by_category.setdefault(ev.log.category, []).append(ev)
    assert sorted(by_category) == sorted(names)
    labels = thread_labels(events)
    for name in names:
        got = by_category[name]
        assert [ev.log.message for ev in got] == [
            f"{name} {i}" for i in range(per_thread)
        ]
        assert {ev.thread for ev in got} == {native[name]}
        assert name in labels[native[name]]

    last = None
    for ev in events:
        if ev.kind is EventKind.SYNC:
            last = None
            continue
        assert last is None or ev.time >= last, f"{ev} is out of order"
        last = ev.time


def test_events_of_a_thread_that_exited_are_kept() -> None:
    """A thread that logs and exits while tracing goes on (its last events
    possibly not yet drained) still has all its events, under its own id and
    name, in the trace."""
    sink = MemorySink()
    seen: dict[str, int] = {}

    def short_lived() -> None:
        seen["id"] = threading.get_native_id()
        for i in range(1000):
            aiotrace.log("short", str(i))

    t = threading.Thread(target=short_lived, name="short-lived")
    with aiotrace.tracing(sink):
        t.start()
        t.join(20)
    events = sink.events()
    got = [ev for ev in events if ev.kind is EventKind.LOG]
    assert [ev.log.message for ev in got] == [str(i) for i in range(1000)]
    assert {ev.thread for ev in got} == {seen["id"]}
    assert "short-lived" in thread_labels(events)[seen["id"]]


def test_event_loops_in_several_threads() -> None:
    """Coroutines run by event loops in different threads log under their own
    thread's id, and tracing covers loops started after tracing began."""
    sink = MemorySink()
    ids: dict[str, int] = {}

    async def main(name: str) -> None:
        ids[name] = threading.get_native_id()
        for i in range(100):
            aiotrace.log(name, str(i))
            await asyncio.sleep(0)

    def run(name: str) -> None:
        asyncio.run(main(name))

    names = ["loop-a", "loop-b", "loop-c"]
    with aiotrace.tracing(sink):
        threads = [threading.Thread(target=run, args=(n,), name=n) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    events = sink.events()
    for name in names:
        got = [
            ev for ev in events if ev.kind is EventKind.LOG and ev.log.category == name
        ]
        assert [ev.log.message for ev in got] == [str(i) for i in range(100)]
        assert {ev.thread for ev in got} == {ids[name]}


def test_threads_keep_their_names_when_gc_runs_as_they_start() -> None:
    """A collection can run in a new thread before the threading module has
    registered it; the GC range recorded then must not rename the thread (or
    make threading invent a dummy Thread): every thread's events carry its
    own name."""
    sink = MemorySink()
    names: dict[int, str] = {}
    lock = threading.Lock()

    def worker() -> None:
        with lock:
            names[threading.get_native_id()] = threading.current_thread().name
        aiotrace.log("w", "hello")

    old = gc.get_threshold()
    with aiotrace.tracing(sink, metrics_interval=None):
        gc.set_threshold(1)  # a collection at nearly every allocation
        try:
            threads = [
                threading.Thread(target=worker, name=f"worker-{i}") for i in range(40)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
        finally:
            gc.set_threshold(*old)
    labels = thread_labels(sink.events())
    assert len(names) == 40
    for tid, name in names.items():
        assert labels[tid] == {name}
