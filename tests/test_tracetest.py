"""tracetest: streams, expect, pausing, deadlocks, leftovers and verify."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from aiotrace import probe, tracetest
from aiotrace.tracetest import Fired

TIMEOUT = 0.5
"""A short deadlock timeout for runs that are meant to deadlock."""
BOB_LATE = 0.05
"""When the second client of the lost-update tests comes: after the first
is done in a run without delays, with a wide margin for a slow machine."""


@probe.tracepoint
async def trace_step(who: str, n: int) -> None:
    """A coroutine took step n."""


@probe.tracepoint
def trace_tick(who: str, n: int) -> None:
    """A thread took step n (a sync tracepoint)."""


def by_who(event: Any) -> str:
    """Routes an event to the stream named after its first argument."""
    return str(event.args[0])


async def stepper(who: str, steps: int, progress: list[str] | None = None) -> None:
    """Fires trace_step(who, n) for each step, noting progress after each."""
    for n in range(steps):
        await trace_step(who, n)
        if progress is not None:
            progress.append(f"{who}{n}")


def ticker(who: str, steps: int, progress: list[str] | None = None) -> None:
    """Fires trace_tick(who, n) for each step from a thread."""
    for n in range(steps):
        trace_tick(who, n)
        if progress is not None:
            progress.append(f"{who}{n}")


def test_fired_compares_and_prints_like_a_call() -> None:
    """Fired equals a Fired with the same name and arguments, hashes alike,
    and reads like the call that made it."""
    assert Fired("trace_step", "a", 1) == Fired("trace_step", "a", 1)
    assert Fired("trace_step", "a", 1) != Fired("trace_step", "a", 2)
    assert Fired("x", k=1) != Fired("y", k=1)
    assert Fired("x") != ("x",)
    assert hash(Fired("x", 1, k=2)) == hash(Fired("x", 1, k=2))
    assert repr(Fired("trace_step", "a", 1, k=2)) == "trace_step('a', 1, k=2)"


@pytest.mark.asyncio
async def test_expect_takes_each_stream_in_order() -> None:
    """Events of two coroutines, routed to a stream each, are expected in
    an order the test chooses across streams and in firing order within
    each; the run passes and detaches its probes."""

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream=by_who)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stepper("a", 2))
            tg.create_task(stepper("b", 2))
            await t.expect("b", Fired("trace_step", "b", 0))
            await t.expect("a", Fired("trace_step", "a", 0))
            await t.expect("a", Fired("trace_step", "a", 1))
            await t.expect("b", Fired("trace_step", "b", 1))

    await tracetest.run(body)
    assert trace_step.probes() == ()


@pytest.mark.asyncio
async def test_the_producer_is_paused_until_the_test_accepts() -> None:
    """After receive, the producer stays at its tracepoint however long the
    test looks; ack() lets it go on to its next event."""
    progress: list[str] = []

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream="a")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stepper("a", 2, progress))
            msg = await t.receive("a")
            assert (msg.stream, msg.event, msg.index) == (
                "a",
                Fired("trace_step", "a", 0),
                0,
            )
            assert msg.producer.startswith("task ")
            await asyncio.sleep(0.05)
            assert progress == []
            msg.ack()
            msg.ack()  # a second ack does nothing
            await t.expect("a", Fired("trace_step", "a", 1))
            await asyncio.sleep(0)
            assert progress[0] == "a0"

    await tracetest.run(body)
    assert progress == ["a0", "a1"]


@pytest.mark.asyncio
async def test_a_different_event_fails_with_both() -> None:
    """expect fails at once when the event differs, showing the expected
    and the actual event and who fired it."""

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream="a")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stepper("a", 1), name="worker")
            await t.expect("a", Fired("trace_step", "a", 7))

    with pytest.raises(tracetest.Failure) as failure:
        await tracetest.run(body)
    text = str(failure.value)
    assert "stream 'a': expected\n" in text
    assert "trace_step('a', 7)" in text
    assert "but got\n" in text
    assert "trace_step('a', 0)" in text
    assert "from task 'worker'" in text
    assert len(failure.value.problems) == 1


@pytest.mark.asyncio
async def test_a_deadlock_fails_after_the_timeout_and_says_why() -> None:
    """When nothing is sent or received for `timeout` seconds, the run fails
    as a deadlock naming the stream the test waits on, the events accepted
    so far and the paused producers."""

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream=by_who)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stepper("a", 2), name="A")
            await t.expect("a", Fired("trace_step", "a", 0))
            await t.expect("nobody", Fired("trace_step", "nobody", 0))

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(tracetest.Failure) as failure:
        await tracetest.run(body, timeout=TIMEOUT)
    assert loop.time() - t0 >= TIMEOUT
    text = str(failure.value)
    assert "deadlock: no event was sent or received for 0.5 s" in text
    assert "the test waited for an event on stream 'nobody'" in text
    assert "Accepted so far (1):\n      a: trace_step('a', 0), from task 'A'" in text
    assert "Paused producers (1):" in text
    assert "a: trace_step('a', 1), from task 'A' [sent, not received]" in text


@pytest.mark.asyncio
async def test_a_deadlock_while_the_test_is_not_receiving() -> None:
    """A body that waits for its producers while one is paused at an event
    it never expects deadlocks too; the producer is cancelled and the body
    unwinds."""
    cancelled: list[bool] = []

    async def guarded() -> None:
        try:
            await stepper("a", 1)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream="a")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(guarded())

    with pytest.raises(tracetest.Failure, match="the test was not receiving"):
        await tracetest.run(body, timeout=TIMEOUT)
    assert cancelled == [True]


@pytest.mark.asyncio
async def test_a_deadlock_with_nothing_paused_says_so() -> None:
    """A deadlock with no producer paused says the code is blocked elsewhere."""

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream="a")
        await t.expect("a", Fired("trace_step", "a", 0))

    with pytest.raises(tracetest.Failure, match="No producer is paused"):
        await tracetest.run(body, timeout=TIMEOUT)


@pytest.mark.asyncio
async def test_unconsumed_events_fail_the_test_and_are_listed() -> None:
    """Events left in their streams when the body returns fail the run and
    are listed; their producers are cancelled where they paused."""
    tasks: list[asyncio.Task[None]] = []

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream=by_who)
        tasks.append(asyncio.create_task(stepper("a", 3), name="A"))
        tasks.append(asyncio.create_task(stepper("b", 1), name="B"))
        await t.expect("a", Fired("trace_step", "a", 0))
        msg = await t.receive("a")
        assert msg.event == Fired("trace_step", "a", 1)  # received, not accepted
        await asyncio.sleep(0.01)

    with pytest.raises(tracetest.Failure) as failure:
        await tracetest.run(body)
    text = str(failure.value)
    assert "2 event(s) left unconsumed at the end of the test:" in text
    assert "a: trace_step('a', 1), from task 'A' [received, not accepted]" in text
    assert "b: trace_step('b', 0), from task 'B' [sent, not received]" in text
    await asyncio.wait(tasks)
    assert all(task.cancelled() for task in tasks)


@pytest.mark.asyncio
async def test_threads_pause_at_sync_tracepoints() -> None:
    """A thread that fires a sync tracepoint blocks there until the test
    accepts its event; two threads interleave as the test expects."""
    progress: list[str] = []

    async def body(t: tracetest.T) -> None:
        t.attach(trace_tick, stream=by_who)
        threads = [
            threading.Thread(target=ticker, args=(who, 2, progress), name=f"T{who}")
            for who in "ab"
        ]
        for th in threads:
            th.start()
        msg = await t.receive("b")
        assert msg.producer == "thread 'Tb'"
        await asyncio.sleep(0.05)
        assert "b0" not in progress
        msg.ack()
        await t.expect("a", Fired("trace_tick", "a", 0))
        await t.expect("b", Fired("trace_tick", "b", 1))
        await t.expect("a", Fired("trace_tick", "a", 1))
        for th in threads:
            await asyncio.to_thread(th.join)

    await tracetest.run(body)
    assert sorted(progress) == ["a0", "a1", "b0", "b1"]


@pytest.mark.asyncio
async def test_a_thread_left_paused_is_released_at_the_end() -> None:
    """A thread paused at an event the test never takes is let go when the
    run ends, and goes on unpaused."""
    progress: list[str] = []
    th = threading.Thread(target=ticker, args=("a", 3, progress))

    async def body(t: tracetest.T) -> None:
        t.attach(trace_tick, stream="a")
        th.start()
        await t.expect("a", Fired("trace_tick", "a", 0))
        while not [m for m in t.pending() if m.state == "sent"]:
            await asyncio.sleep(0.001)  # until the thread waits at its next event

    with pytest.raises(tracetest.Failure, match="left unconsumed"):
        await tracetest.run(body)
    await asyncio.to_thread(th.join, 10)
    assert not th.is_alive()
    assert progress == ["a0", "a1", "a2"]


@pytest.mark.asyncio
async def test_a_sync_tracepoint_on_the_test_loop_fails_clearly() -> None:
    """A coroutine on the test's loop cannot pause at a sync tracepoint: the
    run fails at once, saying to declare it async or use a thread."""

    async def body(t: tracetest.T) -> None:
        t.attach(trace_tick, stream="a")
        trace_tick("a", 0)
        await t.expect("a", Fired("trace_tick", "a", 0))

    # "At once": with a deadlock timeout longer than pytest's own (120 s), a
    # run that waited for the deadlock instead would time the test out.
    with pytest.raises(tracetest.Failure) as failure:
        await tracetest.run(body, timeout=600)
    text = str(failure.value)
    assert "deadlock" not in text
    assert "trace_tick is a sync tracepoint, fired on the test's event loop" in text
    assert "`async def`" in text


@pytest.mark.asyncio
async def test_a_coroutine_on_another_loop_pauses_too() -> None:
    """A coroutine running on another thread's event loop pauses at an
    async tracepoint until the test accepts."""
    progress: list[str] = []

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream="a")
        th = threading.Thread(target=asyncio.run, args=(stepper("a", 2, progress),))
        th.start()
        await t.expect("a", Fired("trace_step", "a", 0))
        await t.expect("a", Fired("trace_step", "a", 1))
        await asyncio.to_thread(th.join)

    await tracetest.run(body)
    assert progress == ["a0", "a1"]


@pytest.mark.asyncio
async def test_event_and_stream_functions_shape_the_events() -> None:
    """`event` makes the event in the producer, when it fires; a failing
    event or stream function fails the run with the tracepoint's name."""
    state = {"balance": 10}

    async def spend() -> None:
        state["balance"] -= 3
        await trace_step("spend", 3)

    async def body(t: tracetest.T) -> None:
        t.attach(
            trace_step,
            stream="ledger",
            event=lambda who, n: (who, n, state["balance"]),
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(spend())
            await t.expect("ledger", ("spend", 3, 7))

    await tracetest.run(body)

    async def bad_route(t: tracetest.T) -> None:
        t.attach(trace_step, stream=lambda ev: 42)  # type: ignore[arg-type,return-value]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(spend())
            await t.expect("ledger", ("spend", 3, 7))

    with pytest.raises(tracetest.Failure) as failure:
        await tracetest.run(bad_route)
    assert "trace_step fired by task" in str(failure.value)
    assert "the stream must be a str" in str(failure.value)


@pytest.mark.asyncio
async def test_what_the_body_raises_is_the_cause() -> None:
    """An exception in the body (an assert, say) fails the run; it is the
    Failure's cause and its text is in the message."""

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream="a")
        raise ValueError("bad fixture")

    with pytest.raises(tracetest.Failure) as failure:
        await tracetest.run(body)
    assert isinstance(failure.value.__cause__, ValueError)
    assert "the test body raised ValueError: bad fixture" in str(failure.value)
    assert trace_step.probes() == ()


@pytest.mark.asyncio
async def test_run_and_verify_check_their_arguments() -> None:
    """The timeout must be positive and the delay shorter than it."""

    async def body(t: tracetest.T) -> None:
        pass

    with pytest.raises(ValueError, match="timeout"):
        await tracetest.run(body, timeout=0)
    with pytest.raises(ValueError, match="delay"):
        await tracetest.verify(body, timeout=1, delay=1)
    with pytest.raises(ValueError, match="delay"):
        await tracetest.verify(body, delay=-1)


@pytest.mark.asyncio
async def test_verify_runs_once_more_per_event_delaying_each() -> None:
    """verify makes N+1 runs for N events: run k delays event k, in firing
    order, and names it; a correct system passes every run."""
    runs: list[tuple[int | None, int | None]] = []
    seen: list[tracetest.T] = []

    async def body(t: tracetest.T) -> None:
        seen.append(t)
        t.attach(trace_step, stream=by_who)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stepper("a", 2))
            tg.create_task(stepper("b", 1))
            await t.expect("a", Fired("trace_step", "a", 0))
            await t.expect("b", Fired("trace_step", "b", 0))
            await t.expect("a", Fired("trace_step", "a", 1))
        runs.append((t.delay_at, None if t.delayed is None else t.delayed.index))

    await tracetest.verify(body, delay=0.01)
    assert runs == [(None, None), (0, 0), (1, 1), (2, 2)]
    assert [len(t.messages) for t in seen] == [3, 3, 3, 3]


@pytest.mark.asyncio
async def test_verify_delays_thread_producers() -> None:
    """Delays apply to events fired by threads as well."""
    runs: list[int | None] = []

    async def body(t: tracetest.T) -> None:
        t.attach(trace_tick, stream="a")
        th = threading.Thread(target=ticker, args=("a", 2))
        th.start()
        await t.expect("a", Fired("trace_tick", "a", 0))
        await t.expect("a", Fired("trace_tick", "a", 1))
        await asyncio.to_thread(th.join)
        runs.append(None if t.delayed is None else t.delayed.index)

    await tracetest.verify(body, delay=0.01)
    assert runs == [None, 0, 1]


class Account:
    """An account whose withdraw checks, then awaits, then writes: racy."""

    def __init__(self, balance: int) -> None:
        self.balance = balance

    async def withdraw(self, who: str, amount: int) -> bool:
        """Withdraws amount if the balance covers it; returns whether it did."""
        balance = self.balance
        if balance < amount:
            await trace_step(who, -1)
            return False
        await trace_step(who, amount)  # an await between the read and the write
        self.balance = balance - amount
        return True


async def late(delay: float, coro: Any) -> Any:
    """Awaits coro after delay seconds."""
    await asyncio.sleep(delay)
    return await coro


@pytest.mark.asyncio
async def test_verify_finds_a_lost_update_and_names_the_delayed_event() -> None:
    """A withdraw with an await between read and write passes its first run
    (the second client comes late), and verify finds the lost update by
    delaying the first client's event; the message names that event."""

    async def body(t: tracetest.T) -> None:
        account = Account(100)
        t.attach(trace_step, stream=by_who)
        async with asyncio.TaskGroup() as tg:
            first = tg.create_task(account.withdraw("alice", 70), name="alice")
            second = tg.create_task(
                late(BOB_LATE, account.withdraw("bob", 50)), name="bob"
            )
            await t.expect("alice", Fired("trace_step", "alice", 70))
            await t.expect("bob", Fired("trace_step", "bob", -1))
        assert (first.result(), second.result(), account.balance) == (True, False, 30)

    await tracetest.run(body)  # the race is hidden without delays
    with pytest.raises(tracetest.Failure) as failure:
        await tracetest.verify(body, delay=BOB_LATE * 4, timeout=TIMEOUT)
    text = str(failure.value)
    assert text.startswith("tracetest.verify: 1 of 2 runs with one event delayed")
    assert (
        "delay@0: delaying event #0 (alice: trace_step('alice', 70), from task "
        "'alice') made the run fail:" in text
    )
    assert "trace_step('bob', 50)" in text
    assert failure.value.problems[0].startswith("delay@0: ")


@pytest.mark.asyncio
async def test_verify_stops_when_the_first_run_fails() -> None:
    """If the run without delays fails, verify reports it and runs no more."""
    runs: list[int | None] = []

    async def body(t: tracetest.T) -> None:
        runs.append(t.delay_at)
        t.attach(trace_step, stream="a")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stepper("a", 1))
            await t.expect("a", Fired("trace_step", "a", 1))

    with pytest.raises(tracetest.Failure, match="the run without delays failed"):
        await tracetest.verify(body)
    assert runs == [None]


@pytest.mark.asyncio
async def test_a_cancelled_body_fails() -> None:
    """A body that ends cancelled, not by a deadlock, fails the run."""

    async def body(t: tracetest.T) -> None:
        raise asyncio.CancelledError

    with pytest.raises(tracetest.Failure, match="the test body was cancelled"):
        await tracetest.run(body)


FLAVOURS = [
    "asyncio",
    pytest.param(
        "eager",
        marks=pytest.mark.skipif(
            sys.version_info < (3, 12),
            reason="asyncio.eager_task_factory is new in Python 3.12",
        ),
    ),
    "uvloop",
]


def run_on(flavour: str, main: Callable[[], Awaitable[None]]) -> None:
    """Runs main() on a new loop of the given flavour."""
    factory = None
    if flavour == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop

    async def start() -> None:
        if flavour == "eager":
            factory = asyncio.eager_task_factory  # type: ignore[attr-defined,unused-ignore]
            asyncio.get_running_loop().set_task_factory(factory)
        await main()

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(start())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_asyncio_loop_flavour(flavour: str) -> None:
    """On stock asyncio, with eager tasks (whose first step runs inside
    create_task) and on uvloop, producers pause until accepted, the test
    orders them, and verify finds the lost update."""
    progress: list[str] = []

    async def ordered(t: tracetest.T) -> None:
        progress.clear()
        t.attach(trace_step, stream=by_who)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stepper("a", 2, progress))
            tg.create_task(stepper("b", 1, progress))
            await t.expect("b", Fired("trace_step", "b", 0))
            await asyncio.sleep(0.01)
            assert progress == ["b0"]
            await t.expect("a", Fired("trace_step", "a", 0))
            await t.expect("a", Fired("trace_step", "a", 1))

    async def lost_update(t: tracetest.T) -> None:
        account = Account(100)
        t.attach(trace_step, stream=by_who)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(account.withdraw("alice", 70))
            tg.create_task(late(BOB_LATE, account.withdraw("bob", 50)))
            await t.expect("alice", Fired("trace_step", "alice", 70))
            await t.expect("bob", Fired("trace_step", "bob", -1))

    async def main() -> None:
        await tracetest.verify(ordered, delay=0.01)
        with pytest.raises(tracetest.Failure, match="delay@0: delaying event #0"):
            await tracetest.verify(lost_update, delay=BOB_LATE * 4, timeout=TIMEOUT)

    run_on(flavour, main)
    assert progress == ["b0", "a0", "a1"]


@pytest.mark.asyncio
async def test_an_async_tracepoint_outside_asyncio_fails_clearly() -> None:
    """A trio coroutine awaiting an async tracepoint cannot be paused: the
    run fails at once and says so, and the trio program goes on."""
    trio = pytest.importorskip("trio")
    progress: list[str] = []

    async def body(t: tracetest.T) -> None:
        t.attach(trace_step, stream="a")
        th = threading.Thread(target=trio.run, args=(stepper, "a", 1, progress))
        th.start()
        await asyncio.to_thread(th.join)
        await t.expect("a", Fired("trace_step", "a", 0))

    with pytest.raises(tracetest.Failure, match="outside asyncio") as failure:
        await tracetest.run(body)
    assert "trace_step was awaited by thread" in str(failure.value)
    assert progress == ["a0"]
