"""Coroutines of real asyncio programs: creation, steps, waits and wakers.

Each test traces a real program to a file with
``with aiotrace.tracing(path): asyncio.run(main())``, checks the trace with
``reader.validate`` (``trace_program`` does, and that every reason is a
documented one), then pins what the program's coroutines did: why each wait
began (the block reason) and what ended it (the waker, and the waking
coroutine). The loop-dependent tests run on plain asyncio and, on 3.12+,
with eager tasks.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from programs import (
    AIOTRACE_DIR,
    ASYNCIO_DIR,
    EAGER_SKIP,
    Trace,
    Wait,
    marker_line,
    read_trace,
    trace_program,
)

import aiotrace
from aiotrace.reader import (
    NO_COROUTINE,
    CoroState,
    EventKind,
    ResourceID,
    ResourceKind,
    StackFrame,
)

NO = NO_COROUTINE


class BrewError(Exception):
    """A user exception, to see its name in "raised" ends."""


class Machine:
    class Jammed(BrewError):
        """A nested exception class: its qualified name is "Machine.Jammed"."""


def test_sleep_blocks_on_sleep_and_a_timer_wakes_it(
    trace_path: Path, flavour: str
) -> None:
    """``await asyncio.sleep(d)`` blocks with reason "sleep" and the timer wakes
    it ("timer", no waking coroutine); ``sleep(0)`` is a yield, RUNNING ->
    RUNNABLE with reason "yield", not a wait."""

    async def napper() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0.002)
        await asyncio.sleep(0.001)
        return "rested"

    async def main() -> str:
        return await asyncio.create_task(napper())

    result, trace = trace_program(trace_path, main, flavour)
    assert result == "rested"
    cid = trace.one(napper.__qualname__)
    assert trace.waits(cid) == [Wait("sleep", "timer", NO)] * 2
    yields = [
        ev
        for ev in trace.coro_transitions(cid)
        if ev.state_transition.old is CoroState.RUNNING
        and ev.state_transition.new is CoroState.RUNNABLE
    ]
    assert [ev.state_transition.reason for ev in yields] == ["yield"]
    assert trace.end(cid) == "returned"
    # The steps alternate as the state machine says, one step at a time.
    states = [
        (ev.state_transition.old, ev.state_transition.new)
        for ev in trace.coro_transitions(cid)
    ]
    assert states[0] == (CoroState.NOT_EXIST, CoroState.RUNNABLE)
    assert states[-1] == (CoroState.RUNNING, CoroState.NOT_EXIST)
    assert len(trace.starts(cid)) == 4


def test_awaiting_a_task_blocks_on_coroutine_and_its_end_wakes_it(
    trace_path: Path, flavour: str
) -> None:
    """A coroutine awaiting another task blocks with reason "coroutine"; the
    awaited task's last step wakes it (waker "coroutine", ev.coroutine = the
    awaited task)."""

    async def worker() -> int:
        await asyncio.sleep(0.002)
        return 7

    async def main() -> int:
        task = asyncio.create_task(worker())
        return await task

    result, trace = trace_program(trace_path, main, flavour)
    assert result == 7
    main_id = trace.one(main.__qualname__)
    worker_id = trace.one(worker.__qualname__)
    assert trace.waits(main_id) == [Wait("coroutine", "coroutine", worker_id)]
    assert trace.end(worker_id) == "returned"
    assert trace.end(main_id) == "returned"


def test_queue_waits_are_queue_and_the_other_side_wakes_them(
    trace_path: Path, flavour: str
) -> None:
    """A consumer blocked in ``Queue.get`` and a producer blocked in
    ``Queue.put`` (full queue) both wait with reason "queue"; each is woken
    by the other: waker "coroutine" with ev.coroutine = the putter (for the
    getter) and the getter (for the putter)."""

    async def consumer(q: asyncio.Queue[int | None], out: list[int]) -> None:
        while (item := await q.get()) is not None:
            out.append(item)

    async def producer(q: asyncio.Queue[int | None], n: int) -> None:
        for i in range(n):
            await q.put(i)
        await q.put(None)

    async def main() -> list[int]:
        q: asyncio.Queue[int | None] = asyncio.Queue(maxsize=1)
        out: list[int] = []
        c = asyncio.create_task(consumer(q, out))
        p = asyncio.create_task(producer(q, 5))
        await asyncio.gather(c, p)
        return out

    result, trace = trace_program(trace_path, main, flavour)
    assert result == [0, 1, 2, 3, 4]
    c = trace.one(consumer.__qualname__)
    p = trace.one(producer.__qualname__)
    c_waits = trace.waits(c)
    p_waits = trace.waits(p)
    assert c_waits and p_waits
    assert all(w == Wait("queue", "coroutine", p) for w in c_waits), c_waits
    assert all(w == Wait("queue", "coroutine", c) for w in p_waits), p_waits
    assert trace.blocks(trace.one(main.__qualname__)) == ["gather"]


def test_lock_semaphore_condition_and_barrier_waits_are_lock(
    trace_path: Path, flavour: str
) -> None:
    """Waiting for a Lock, a Semaphore, a Condition or a Barrier is reason
    "lock"; the coroutine that releases (or notifies, or arrives) wakes the
    waiter, with ev.coroutine = that coroutine."""
    order: list[str] = []

    async def main() -> list[str]:
        lock = asyncio.Lock()
        sem = asyncio.Semaphore(1)
        cond = asyncio.Condition()
        barrier = asyncio.Barrier(2)

        async def lock_holder() -> None:
            async with lock:
                await asyncio.sleep(0.002)
            order.append("lock released")

        async def lock_waiter() -> None:
            async with lock:
                order.append("lock acquired")

        async def sem_holder() -> None:
            async with sem:
                await asyncio.sleep(0.002)

        async def sem_waiter() -> None:
            async with sem:
                order.append("sem acquired")

        async def cond_waiter() -> None:
            async with cond:
                await cond.wait()
                order.append("notified")

        async def cond_notifier() -> None:
            await asyncio.sleep(0.002)
            async with cond:
                cond.notify_all()

        async def first_arrival() -> None:
            await barrier.wait()

        async def last_arrival() -> None:
            await asyncio.sleep(0.002)
            await barrier.wait()

        holders = [
            asyncio.create_task(lock_holder()),
            asyncio.create_task(sem_holder()),
        ]
        await asyncio.sleep(0)  # the holders hold before anyone contends
        others = [
            asyncio.create_task(f())
            for f in (
                lock_waiter,
                sem_waiter,
                cond_waiter,
                cond_notifier,
                first_arrival,
                last_arrival,
            )
        ]
        await asyncio.gather(*holders, *others)
        return order

    result, trace = trace_program(trace_path, main, flavour)
    assert sorted(result) == [
        "lock acquired",
        "lock released",
        "notified",
        "sem acquired",
    ]

    def cid(name: str) -> int:
        return trace.one(f"{main.__qualname__}.<locals>.{name}")

    assert trace.waits(cid("lock_waiter")) == [
        Wait("lock", "coroutine", cid("lock_holder"))
    ]
    assert trace.waits(cid("sem_waiter")) == [
        Wait("lock", "coroutine", cid("sem_holder"))
    ]
    assert trace.waits(cid("cond_waiter")) == [
        Wait("lock", "coroutine", cid("cond_notifier"))
    ]
    assert trace.waits(cid("first_arrival")) == [
        Wait("lock", "coroutine", cid("last_arrival"))
    ]
    assert trace.waits(cid("lock_holder")) == [Wait("sleep", "timer", NO)]


def test_event_wait_is_event_and_the_setter_wakes_it(
    trace_path: Path, flavour: str
) -> None:
    """``Event.wait`` blocks with reason "event"; ``set()`` wakes every waiter,
    with ev.coroutine = the coroutine that called set()."""

    async def main() -> int:
        ev = asyncio.Event()

        async def waiter() -> int:
            await ev.wait()
            return 1

        async def setter() -> None:
            await asyncio.sleep(0.002)
            ev.set()

        waiters = [asyncio.create_task(waiter()) for _ in range(3)]
        await setter()
        return sum(await asyncio.gather(*waiters))

    result, trace = trace_program(trace_path, main, flavour)
    assert result == 3
    main_id = trace.one(main.__qualname__)
    waiters = trace.coros(f"{main.__qualname__}.<locals>.waiter")
    assert len(waiters) == 3
    for w in waiters:
        # setter() is awaited directly: it runs in main's steps.
        assert trace.waits(w) == [Wait("event", "coroutine", main_id)]


def test_gather_and_wait_block_on_gather_and_children_are_the_gatherers(
    trace_path: Path, flavour: str
) -> None:
    """``asyncio.gather`` and ``asyncio.wait`` block with reason "gather"; the
    children gather wraps are created by the gathering coroutine (creation
    ev.coroutine), labelled with their function, and a callback of gather
    wakes the parent ("callback ..."). Each child returns its result."""

    async def leaf(n: int) -> int:
        await asyncio.sleep(0.001 * n)
        return n

    async def main() -> int:
        first = await asyncio.gather(leaf(1), leaf(2), leaf(3))
        tasks = [asyncio.create_task(leaf(n)) for n in (4, 5)]
        done, pending = await asyncio.wait(tasks)
        assert not pending
        return sum(first) + sum(t.result() for t in done)

    result, trace = trace_program(trace_path, main, flavour)
    assert result == 15
    main_id = trace.one(main.__qualname__)
    leaves = trace.coros(leaf.__qualname__)
    assert len(leaves) == 5
    for cid in leaves:
        assert trace.creation(cid).coroutine == main_id
        assert trace.end(cid) == "returned"
    waits = trace.waits(main_id)
    assert [w.reason for w in waits] == ["gather", "gather"]
    assert waits[0].waker.startswith("callback ") and "gather" in waits[0].waker
    assert waits[0].by == NO


def test_task_group_children_and_the_wait_for_them(
    trace_path: Path, flavour: str
) -> None:
    """TaskGroup children are created by the coroutine that owns the group
    and labelled with their function; ``__aexit__`` waits with reason
    "gather" and a TaskGroup callback wakes it."""

    async def leaf(n: int) -> int:
        await asyncio.sleep(0.001)
        return n

    async def main() -> int:
        async with asyncio.TaskGroup() as tg:
            a = tg.create_task(leaf(1))
            b = tg.create_task(leaf(2))
        return a.result() + b.result()

    result, trace = trace_program(trace_path, main, flavour)
    assert result == 3
    main_id = trace.one(main.__qualname__)
    leaves = trace.coros(leaf.__qualname__)
    assert len(leaves) == 2
    for cid in leaves:
        assert trace.creation(cid).coroutine == main_id
        assert trace.waits(cid) == [Wait("sleep", "timer", NO)]
        assert trace.end(cid) == "returned"
    (wait,) = trace.waits(main_id)
    assert wait.reason == "gather"
    assert wait.waker.startswith("callback ") and "TaskGroup" in wait.waker


def test_timeout_expiring_cancels_the_wait(trace_path: Path, flavour: str) -> None:
    """An expiring ``asyncio.timeout`` cancels what its coroutine waits for: the
    awaited child is woken by "cancel" and ends "cancelled"; the coroutine
    under the timeout, woken by its child ending (cancelled: the waker is that
    coroutine), ends "raised TimeoutError", and whoever awaits it is woken by
    it."""

    async def slow() -> None:
        await asyncio.sleep(10)

    async def bounded() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.create_task(slow())

    async def main() -> str:
        try:
            await asyncio.create_task(bounded())
        except TimeoutError:
            return "timed out"
        return "finished"

    result, trace = trace_program(trace_path, main, flavour)
    assert result == "timed out"
    slow_id = trace.one(slow.__qualname__)
    bounded_id = trace.one(bounded.__qualname__)
    main_id = trace.one(main.__qualname__)
    assert trace.waits(slow_id) == [Wait("sleep", "cancel", NO)]
    assert trace.end(slow_id) == "cancelled"
    assert trace.waits(bounded_id) == [Wait("coroutine", "coroutine", slow_id)]
    assert trace.end(bounded_id) == "raised TimeoutError"
    assert trace.waits(main_id) == [Wait("coroutine", "coroutine", bounded_id)]
    assert trace.end(main_id) == "returned"


def test_wait_for_timing_out_cancels_the_awaited_task(
    trace_path: Path, flavour: str
) -> None:
    """``asyncio.wait_for`` on a task that outlives the timeout: the task is
    woken by "cancel" and ends "cancelled", and the caller goes on."""

    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> str:
        try:
            await asyncio.wait_for(asyncio.create_task(slow()), 0.01)
        except TimeoutError:
            return "timed out"
        return "finished"

    result, trace = trace_program(trace_path, main, flavour)
    assert result == "timed out"
    slow_id = trace.one(slow.__qualname__)
    assert [w.reason for w in trace.waits(slow_id)] == ["sleep"]
    assert trace.waits(slow_id)[0].waker == "cancel"
    assert trace.end(slow_id) == "cancelled"
    assert trace.end(trace.one(main.__qualname__)) == "returned"


def test_cancel_wakes_the_victim_and_names_the_canceller(
    trace_path: Path, flavour: str
) -> None:
    """``task.cancel()`` wakes the cancelled task with reason "cancel" and
    ev.coroutine = the cancelling coroutine; a task that lets
    CancelledError out ends "cancelled", one that catches it and returns
    ends "returned"."""

    async def victim() -> None:
        await asyncio.sleep(10)

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "cleaned up"
        return "slept"

    async def main() -> list[Any]:
        v = asyncio.create_task(victim())
        s = asyncio.create_task(stubborn())
        await asyncio.sleep(0)  # both are now asleep
        v.cancel()
        s.cancel()
        return await asyncio.gather(v, s, return_exceptions=True)

    result, trace = trace_program(trace_path, main, flavour)
    assert isinstance(result[0], asyncio.CancelledError)
    assert result[1] == "cleaned up"
    main_id = trace.one(main.__qualname__)
    v = trace.one(victim.__qualname__)
    s = trace.one(stubborn.__qualname__)
    assert trace.waits(v) == [Wait("sleep", "cancel", main_id)]
    assert trace.waits(s) == [Wait("sleep", "cancel", main_id)]
    assert trace.end(v) == "cancelled"
    assert trace.end(s) == "returned"


def test_exceptions_end_coroutines_with_raised_and_the_type_name(
    trace_path: Path, flavour: str
) -> None:
    """A coroutine that raises ends "raised <qualified type name>", whether it
    raises after waiting or in its very first step; the program that
    gathers them with return_exceptions goes on."""

    async def brew() -> None:
        await asyncio.sleep(0)
        raise ValueError("no beans")

    async def jam() -> None:
        raise Machine.Jammed("stuck")

    async def main() -> list[str]:
        results = await asyncio.gather(brew(), jam(), return_exceptions=True)
        return [type(r).__name__ for r in results]

    result, trace = trace_program(trace_path, main, flavour)
    assert result == ["ValueError", "Jammed"]
    assert trace.end(trace.one(brew.__qualname__)) == "raised ValueError"
    assert trace.end(trace.one(jam.__qualname__)) == "raised Machine.Jammed"
    assert trace.end(trace.one(main.__qualname__)) == "returned"


def test_a_main_that_raises_ends_raised_and_the_trace_is_whole(
    trace_path: Path, flavour: str
) -> None:
    """When ``asyncio.run``'s main coroutine raises, the exception reaches the
    caller unchanged and the trace (closed by ``with tracing``) still
    validates, with main ending "raised KeyError"."""

    async def main() -> None:
        await asyncio.sleep(0.001)
        raise KeyError("order 42")

    with pytest.raises(KeyError, match="order 42"):
        trace_program(trace_path, main, flavour)
    trace = read_trace(trace_path)
    trace.check()
    assert trace.end(trace.one(main.__qualname__)) == "raised KeyError"


executor_threads: list[int] = []


def blocking_work(n: int) -> int:
    """Runs in an executor thread: sleeps a little, doubles n."""
    executor_threads.append(threading.get_native_id())
    time.sleep(0.002)
    return n * 2


def test_executor_work_is_an_executor_wait_and_a_range_on_the_worker(
    trace_path: Path, flavour: str
) -> None:
    """``asyncio.to_thread`` and ``loop.run_in_executor`` (default and own
    executor, plain function or functools.partial) block with reason
    "executor"; the executor thread's completion wakes the coroutine
    ("thread"). On the worker thread, each call is an "executor" range
    scoped to that thread, its begin's stack naming the function."""
    executor_threads.clear()

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        a = await asyncio.to_thread(blocking_work, 1)
        with ThreadPoolExecutor(1, thread_name_prefix="brewer") as pool:
            b = await loop.run_in_executor(pool, blocking_work, 2)
        c = await loop.run_in_executor(None, functools.partial(blocking_work, 3))
        return [a, b, c]

    result, trace = trace_program(trace_path, main, flavour)
    assert result == [2, 4, 6]
    main_id = trace.one(main.__qualname__)
    assert trace.waits(main_id) == [Wait("executor", "thread", NO)] * 3
    loop_thread = threading.get_native_id()
    ranges = trace.ranges("executor")
    assert len(ranges) == 3
    assert [begin.thread for begin, _ in ranges] == executor_threads
    where = StackFrame(
        blocking_work.__qualname__, __file__, blocking_work.__code__.co_firstlineno
    )
    for begin, end in ranges:
        assert begin.thread != loop_thread
        assert begin.range.scope == ResourceID(ResourceKind.THREAD, begin.thread)
        assert end.thread == begin.thread and end.time >= begin.time
        assert begin.stack.frames[0] == where
    assert any(
        name.startswith("brewer") for name in trace.thread_names()[executor_threads[1]]
    )


def test_streams_over_tcp_wait_for_io_and_io_wakes_them(
    trace_path: Path, flavour: str
) -> None:
    """An asyncio server and client on 127.0.0.1 exchanging lines: the reads
    block with reason "io" and the socket's readiness wakes them ("io"),
    on both the client and the server's connection handler."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> bytes:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.005)  # the handler now waits for its line
            writer.write(b"ristretto\n")
            await writer.drain()
            reply = await reader.readline()
            writer.close()
            await writer.wait_closed()
        return reply

    result, trace = trace_program(trace_path, main, flavour)
    assert result == b"RISTRETTO\n"
    client = trace.one(main.__qualname__)
    server = trace.one(handle.__qualname__)
    assert Wait("io", "io", NO) in trace.waits(client)
    assert Wait("io", "io", NO) in trace.waits(server)


def test_low_level_socket_calls_wait_for_io(trace_path: Path, flavour: str) -> None:
    """``loop.sock_accept``, ``sock_connect``, ``sock_recv`` and
    ``sock_sendall`` on real sockets on 127.0.0.1 wait with reason "io",
    and the loop's I/O readiness wakes them ("io")."""

    async def serve(listener: socket.socket) -> bytes:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(listener)
        with conn:
            data = await loop.sock_recv(conn, 100)
            await loop.sock_sendall(conn, data[::-1])
        return data

    async def main() -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        with socket.socket() as listener, socket.socket() as client:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            client.setblocking(False)
            server = asyncio.create_task(serve(listener))
            await asyncio.sleep(0.005)  # serve() now waits in sock_accept
            await loop.sock_connect(client, listener.getsockname())
            await asyncio.sleep(0.005)  # serve() now waits in sock_recv
            await loop.sock_sendall(client, b"lungo")
            reply = await loop.sock_recv(client, 100)
            return await server, reply

    result, trace = trace_program(trace_path, main, flavour)
    assert result == (b"lungo", b"ognul")
    server = trace.one(serve.__qualname__)
    client = trace.one(main.__qualname__)
    server_waits = trace.waits(server)
    assert server_waits.count(Wait("io", "io", NO)) >= 2  # accept, recv
    assert Wait("io", "io", NO) in trace.waits(client)  # recv


def test_a_subprocess_waits_for_io(trace_path: Path, flavour: str) -> None:
    """``asyncio.create_subprocess_exec`` of a real Python child, fed through
    stdin and read through stdout: the program gets the child's output,
    and the coroutine waits for it (communicate, wait) with reason "io"."""
    code = "import sys; print(sys.stdin.read().upper(), end='')"

    async def main() -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(b"doppio")
        return out, await proc.wait()

    result, trace = trace_program(trace_path, main, flavour)
    assert result == (b"DOPPIO", 0)
    main_id = trace.one(main.__qualname__)
    assert "io" in trace.blocks(main_id)


# Creation: stacks and labels.


@pytest.mark.parametrize(
    "flavour",
    [
        "plain",
        pytest.param(
            "eager",
            marks=[
                EAGER_SKIP,
            ],
        ),
    ],
)
def test_creation_stacks_start_at_the_users_line(
    trace_path: Path, flavour: str
) -> None:
    """The creation stack of a task (ev.stack of NOT_EXIST->RUNNABLE) starts,
    innermost, at the user's line that called create_task, gather or
    TaskGroup.create_task: asyncio's own frames (and aiotrace's) are
    skipped. Tasks created in a coroutine are created by it (ev.coroutine);
    asyncio.run's main is created outside any (NO_COROUTINE)."""

    async def worker(n: int) -> int:
        await asyncio.sleep(0)
        return n

    async def main() -> int:
        a = asyncio.create_task(worker(1))  # mark: alpha
        total = sum(await asyncio.gather(worker(2)))  # mark: gather
        async with asyncio.TaskGroup() as tg:
            c = tg.create_task(worker(3))  # mark: group
        return await a + total + c.result()

    result, trace = trace_program(trace_path, main, flavour)
    assert result == 6
    main_id = trace.one(main.__qualname__)
    created = trace.creation(main_id)
    assert created.coroutine == NO_COROUTINE
    assert created.stack.frames
    assert not created.stack.frames[0].file.startswith((ASYNCIO_DIR, AIOTRACE_DIR))

    workers = trace.coros(worker.__qualname__)
    assert len(workers) == 3
    lines = [marker_line(main, m) for m in ("alpha", "gather", "group")]
    for cid, line in zip(workers, lines, strict=True):
        ev = trace.creation(cid)
        assert ev.coroutine == main_id
        assert ev.stack.frames[0] == StackFrame(main.__qualname__, __file__, line)


def test_labels_are_the_qualname_then_the_task_name(trace_path: Path) -> None:
    """Each coroutine gets one LABEL: its coroutine function's __qualname__
    (methods and nested functions included), followed by " <name>" when a
    name was passed to ``loop.create_task``; asyncio's default "Task-N"
    names are not part of it."""

    async def espresso() -> None:
        await asyncio.sleep(0)

    class Barista:
        async def pull(self) -> None:
            await asyncio.sleep(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            loop.create_task(espresso(), name="shot 1"),
            loop.create_task(Barista().pull()),
            loop.create_task(espresso()),
        )

    _, trace = trace_program(trace_path, main)
    assert len(trace.coros(f"{espresso.__qualname__} shot 1")) == 1
    assert len(trace.coros(Barista.pull.__qualname__)) == 1
    assert len(trace.coros(espresso.__qualname__)) == 1
    assert trace.one(main.__qualname__)
    # One label per coroutine: every coroutine that has transitions has one.
    cids = {ev.state_transition.resource.id for ev in trace.coro_transitions()}
    assert cids == set(trace.labels)
    assert len(trace.of_kind(EventKind.LABEL)) >= len(cids)


def test_names_given_to_asyncio_create_task_and_task_groups_are_in_labels(
    trace_path: Path, flavour: str
) -> None:
    """A name passed to ``asyncio.create_task`` or ``TaskGroup.create_task``
    is in the coroutine's label: "<qualname> <name>"."""

    async def espresso() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        t = asyncio.create_task(espresso(), name="shot 1")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(espresso(), name="shot 2")
        await t

    _, trace = trace_program(trace_path, main, flavour)
    assert trace.one(f"{espresso.__qualname__} shot 1")
    assert trace.one(f"{espresso.__qualname__} shot 2")


# Eager tasks (3.12+).


@EAGER_SKIP
def test_an_eager_childs_first_step_runs_inside_its_creators_step(
    trace_path: Path,
) -> None:
    """With eager tasks, a child's first step runs inside create_task, inside
    its creator's step: its RUNNABLE->RUNNING and the end of that step fall
    between the creator's start and the creator's next transition; events
    in the eager step (a log) have ev.coroutine = the child, and the
    creator's own events after it have ev.coroutine = the creator again.
    A child that finishes eagerly ends there. The trace validates."""

    async def quick(tag: str) -> str:
        aiotrace.log("quick", tag)
        return tag

    async def slow(tag: str) -> str:
        aiotrace.log("slow", tag)
        await asyncio.sleep(0.001)
        aiotrace.log("slow again", tag)
        return tag

    async def main() -> tuple[str, str]:
        q = asyncio.create_task(quick("q"))
        assert q.done()  # it ran eagerly, to the end
        s = asyncio.create_task(slow("s"))
        aiotrace.log("main", "after creating")
        return q.result(), await s

    result, trace = trace_program(trace_path, main, "eager")
    assert result == ("q", "s")
    main_id = trace.one(main.__qualname__)
    q = trace.one(quick.__qualname__)
    s = trace.one(slow.__qualname__)

    main_start = trace.starts(main_id)[0]
    main_leave = trace.step_end_after(main_id, main_start)
    assert main_leave.state_transition.reason == "coroutine"
    for cid in (q, s):
        first = trace.starts(cid)[0]
        leave = trace.step_end_after(cid, first)
        assert main_start.time <= trace.creation(cid).time <= first.time
        assert first.time <= leave.time <= main_leave.time
        assert first.coroutine == main_id  # it interrupts main
        assert trace.creation(cid).coroutine == main_id
    assert trace.end(q) == "returned"
    assert [ev.coroutine for ev in trace.logs("quick")] == [q]
    assert [ev.coroutine for ev in trace.logs("slow")] == [s]
    assert [ev.coroutine for ev in trace.logs("slow again")] == [s]
    assert [ev.coroutine for ev in trace.logs("main")] == [main_id]
    assert trace.waits(s) == [Wait("sleep", "timer", NO)]


@EAGER_SKIP
def test_eager_steps_nest_three_deep(trace_path: Path) -> None:
    """An eager child that creates an eager grandchild: the grandchild's step
    runs inside the child's, inside main's. Logs in each have their own
    coroutine, the context unwinds in order, and the trace validates."""

    async def grandchild() -> int:
        aiotrace.log("where", "grandchild")
        await asyncio.sleep(0.001)
        return 1

    async def child() -> int:
        aiotrace.log("where", "child before")
        g = asyncio.create_task(grandchild())
        aiotrace.log("where", "child after")
        return await g + 1

    async def main() -> int:
        c = asyncio.create_task(child())
        aiotrace.log("where", "main after")
        return await c

    result, trace = trace_program(trace_path, main, "eager")
    assert result == 2
    ids = {
        "grandchild": trace.one(grandchild.__qualname__),
        "child before": trace.one(child.__qualname__),
        "main after": trace.one(main.__qualname__),
    }
    ids["child after"] = ids["child before"]
    got = [(ev.log.message, ev.coroutine) for ev in trace.logs("where")]
    assert got == [
        ("child before", ids["child before"]),
        ("grandchild", ids["grandchild"]),
        ("child after", ids["child before"]),
        ("main after", ids["main after"]),
    ]
    g = ids["grandchild"]
    assert trace.creation(g).coroutine == ids["child before"]
    assert trace.waits(ids["child before"]) == [Wait("coroutine", "coroutine", g)]


def _all_waits(trace: Trace) -> list[Wait]:
    return [w for cid in trace.labels for w in trace.waits(cid)]


def test_a_busy_program_validates_on_every_flavour(
    trace_path: Path, flavour: str
) -> None:
    """Many coroutines at once, each doing a bit of everything (sleep, queue,
    lock, event, gather, executor): the trace validates, every coroutine
    created in it ends, and every wait it began is woken."""

    async def main() -> int:
        q: asyncio.Queue[int] = asyncio.Queue()
        lock = asyncio.Lock()
        go = asyncio.Event()

        async def worker(n: int) -> int:
            await go.wait()
            async with lock:
                await asyncio.sleep(0)
            await q.put(n)
            return await asyncio.to_thread(lambda: n) if n % 5 == 0 else n

        async def collector(count: int) -> int:
            return sum([await q.get() for _ in range(count)])

        workers = [asyncio.create_task(worker(n)) for n in range(20)]
        total = asyncio.create_task(collector(20))
        await asyncio.sleep(0.001)
        go.set()
        results = await asyncio.gather(*workers)
        return sum(results) + await total

    result, trace = trace_program(trace_path, main, flavour)
    assert result == 2 * sum(range(20))
    created = [
        ev.state_transition.resource.id
        for ev in trace.coro_transitions()
        if ev.state_transition.old is CoroState.NOT_EXIST
    ]
    assert len(created) >= 22
    for cid in created:
        trace.end(cid)  # exactly one end each
    for cid in trace.labels:
        assert len(trace.blocks(cid)) == len(trace.waits(cid)), cid
    reasons = {w.reason for w in _all_waits(trace)}
    assert {"event", "queue", "executor", "gather"} <= reasons
