"""tracetest's streams: events travel from paused producers to the test.

A producer is the coroutine or thread that fires a tracepoint. The probe
that ``T.attach`` installs turns the firing into a ``Message``, routes it
to a stream and pauses the producer until the test accepts the event:

- a coroutine on the test's event loop awaits an ``asyncio.Future`` (so the
  tracepoint must be an async one, ``await trace_x(...)``);
- a coroutine on another thread's loop awaits a wrapped
  ``concurrent.futures.Future``;
- a thread (a sync tracepoint) blocks on a ``concurrent.futures.Future``.

A sync tracepoint fired on the test's own event loop thread cannot pause
without stopping the loop the test runs on; that is reported as a failure.

Invariant: streams, waiters and failures are touched on the test's loop
thread only; other threads hand messages over with
``call_soon_threadsafe``. ``_lock`` guards the event count, ``_closed`` and
``_live``, which producers in any thread update.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._probe import Probe, ProbeGroup, _Point, point_of

Route = Callable[[Any], str]


class Failure(AssertionError):
    """Failure reports a failed tracetest run: a deadlock, or an event that
    was unexpected, unconsumed, or could not pause its producer.

    Attributes:
        problems: one text per problem found, in the order found.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = [message] if problems is None else problems


class Fired:
    """Fired is the default event: the tracepoint's name and its arguments.

    ``Fired("trace_load", "k")`` equals the event that ``trace_load("k")``
    makes when attached without an ``event`` function.
    """

    __slots__ = ("args", "kwargs", "name")

    def __init__(self, name: str, /, *args: object, **kwargs: object) -> None:
        self.name = name
        self.args = args
        self.kwargs = kwargs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fired):
            return NotImplemented
        return (self.name, self.args, self.kwargs) == (
            other.name,
            other.args,
            other.kwargs,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.args, tuple(sorted(self.kwargs.items()))))

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


class Message:
    """Message is one event on its way from a paused producer to the test.

    ``T.receive`` returns it; the producer stays paused until ``ack()``.
    """

    __slots__ = ("_future", "_t", "event", "index", "producer", "state", "stream")

    def __init__(self, t: T, stream: str, event: object, index: int, producer: str):
        self._t = t
        self.stream = stream
        """The stream the event was routed to."""
        self.event = event
        """The event, as the attach's ``event`` function made it."""
        self.index = index
        """The event's number in this run, in firing order, from 0."""
        self.producer = producer
        """Who fired it: ``task 'name'`` or ``thread 'name'``."""
        self.state = "delivering"
        """delivering, sent (waiting in its stream), received, accepted or
        released (the run ended first)."""
        self._future: asyncio.Future[None] | concurrent.futures.Future[None] | None
        self._future = None

    def ack(self) -> None:
        """Accepts the event: the producer goes on. Call it on the test's loop."""
        if self.state in ("accepted", "released"):
            return
        self.state = "accepted"
        self._t._settled(self)
        fut = self._future
        if isinstance(fut, asyncio.Future):
            if not fut.done():
                fut.set_result(None)
        elif fut is not None and not fut.done():
            # The producer's side may have cancelled it meanwhile.
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                fut.set_result(None)

    def _release(self) -> None:
        # The run is over: a coroutine producer is cancelled where it paused;
        # a thread producer goes on (a thread cannot be cancelled).
        if self.state != "accepted":
            self.state = "released"
        fut = self._future
        if fut is not None and not fut.done():
            # An asyncio future exists only for a producer on the test's loop,
            # and releasing happens on that loop.
            fut.cancel()

    def describe(self) -> str:
        """Returns ``stream: event, from producer``."""
        return f"{self.stream}: {_repr(self.event)}, from {self.producer}"

    def __repr__(self) -> str:
        return f"<Message #{self.index} {self.describe()} ({self.state})>"


class T:
    """T is the test's side of one tracetest run: it attaches tracepoints to
    streams, and receives and checks their events.

    ``tracetest.run`` and ``tracetest.verify`` make a fresh ``T`` for each
    run and pass it to the test body.
    """

    def __init__(
        self, *, timeout: float, delay_at: int | None = None, delay: float = 0.0
    ) -> None:
        self.timeout = timeout
        """Seconds without any event sent or received before a deadlock fails
        the run."""
        self.delay_at = delay_at
        """The number of the event this run delays (verify), or None."""
        self.delay = delay
        """How long, in seconds, the delayed event waits before its stream."""
        self.delayed: Message | None = None
        """The event this run delayed, once it has fired."""
        self.messages: list[Message] = []
        """Every event of the run, in firing order."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._group = ProbeGroup()
        self._streams: dict[str, deque[Message]] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._live: set[Message] = set()  # producers not yet let go
        self._closed = False
        self._count = 0
        self.problems: list[str] = []
        """What went wrong so far, in the order found."""
        # When an event was last fired, sent or received (time.monotonic).
        self._last_progress = time.monotonic()

    # ------------------------------------------------------------------
    # The test's side

    def attach(
        self,
        tp: object,
        *,
        stream: str | Route,
        event: Callable[..., object] | None = None,
    ) -> Probe:
        """Attaches a probe to tracepoint ``tp`` that sends its events here.

        Args:
            tp: a tracepoint (``@probe.tracepoint``). Coroutines must fire
                async ones (``await trace_x(...)``) to be paused; threads
                may fire either kind.
            stream: the stream's name, or a function from the event to it.
                Each stream must be totally ordered by causality: events of
                one stream never race with each other.
            event: makes the event from the tracepoint's arguments, in the
                producer, when it fires (so it may snapshot state); by
                default a ``Fired(name, *args, **kwargs)``.

        Returns:
            the probe; the run detaches it at its end.
        """
        point = point_of(tp)
        if self._closed:
            raise RuntimeError("this tracetest run is over")
        make = functools.partial(Fired, point.short) if event is None else event
        route: Route = (lambda _ev: stream) if isinstance(stream, str) else stream

        if point.is_async:

            async def on_async(*args: Any, **kwargs: Any) -> None:
                await self._fire_async(point, route, make, args, kwargs)

            fn: Callable[..., object] = on_async
        else:

            def on_sync(*args: Any, **kwargs: Any) -> None:
                self._fire_sync(point, route, make, args, kwargs)

            fn = on_sync
        return point.attach(fn, group=self._group)

    async def receive(self, stream: str) -> Message:
        """Waits for the next event on ``stream`` and returns it.

        Its producer stays paused until the message's ``ack()``.

        Raises:
            Failure: a producer failed (the run fails at once), or the run
                deadlocked while waiting.
        """
        self._check()
        if stream in self._waiters:
            self._fail(f"two receives at once on stream {stream!r}")
        queue = self._streams.get(stream)
        while not queue:
            waiter = self._loop.create_future()
            self._waiters[stream] = waiter
            try:
                await waiter
            finally:
                del self._waiters[stream]
            self._check()
            queue = self._streams.get(stream)
        msg = queue.popleft()
        msg.state = "received"
        self._last_progress = time.monotonic()
        return msg

    async def expect(self, stream: str, event: object) -> None:
        """Receives the next event on ``stream``, checks that it equals
        ``event``, and accepts it: the producer goes on.

        Raises:
            Failure: the event differs (its producer stays paused), or as
                ``receive`` raises.
        """
        msg = await self.receive(stream)
        if msg.event != event:
            self._fail(
                f"stream {stream!r}: expected\n    {_repr(event)}\nbut got\n    "
                f"{_repr(msg.event)}\nfrom {msg.producer} (event #{msg.index})"
            )
        msg.ack()

    # ------------------------------------------------------------------
    # The producers' side

    def _make(
        self,
        point: _Point,
        route: Route,
        make: Callable[..., object],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Message | None:
        producer = _producer()
        try:
            event = make(*args, **kwargs)
            stream = route(event)
            if not isinstance(stream, str):
                raise TypeError(f"the stream must be a str, not {type(stream)}")
        except Exception as exc:
            self._report(
                f"{point.name} fired by {producer}: making or routing its event "
                f"raised {type(exc).__name__}: {exc}"
            )
            return None
        with self._lock:
            if self._closed:
                return None
            msg = Message(self, stream, event, self._count, producer)
            self._count += 1
            self._live.add(msg)
            self.messages.append(msg)
        self._last_progress = time.monotonic()
        if msg.index == self.delay_at:
            self.delayed = msg
        return msg

    async def _fire_async(
        self,
        point: _Point,
        route: Route,
        make: Callable[..., object],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._report(
                f"{point.name} was awaited by {_producer()} outside asyncio "
                "(trio, say): tracetest cannot pause it there. Fire a sync "
                "tracepoint from a worker thread instead."
            )
            return
        msg = self._make(point, route, make, args, kwargs)
        if msg is None:
            return
        if msg is self.delayed:
            await asyncio.sleep(self.delay)  # everyone else goes first
        if loop is self._loop:
            fut: asyncio.Future[None] = loop.create_future()
            msg._future = fut
            self._post(msg)
            await fut
        else:
            cf: concurrent.futures.Future[None] = concurrent.futures.Future()
            msg._future = cf
            self._hand_over(msg)
            await asyncio.wrap_future(cf)

    def _fire_sync(
        self,
        point: _Point,
        route: Route,
        make: Callable[..., object],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        if threading.get_ident() == self._loop_thread:
            self._report(
                f"{point.name} is a sync tracepoint, fired on the test's event "
                f"loop by {_producer()}: it cannot pause there without stopping "
                "the loop. Declare it with `async def` and `await` it, or fire "
                "it from another thread."
            )
            return
        msg = self._make(point, route, make, args, kwargs)
        if msg is None:
            return
        if msg is self.delayed:
            time.sleep(self.delay)
        cf: concurrent.futures.Future[None] = concurrent.futures.Future()
        msg._future = cf
        self._hand_over(msg)
        # Cancelled when the run is over: the thread goes on unpaused.
        with contextlib.suppress(concurrent.futures.CancelledError):
            cf.result()

    def _hand_over(self, msg: Message) -> None:
        with self._lock:
            closed = self._closed
        if not closed:
            try:
                self._loop.call_soon_threadsafe(self._post, msg)
                return
            except RuntimeError:  # the loop is closed
                pass
        msg._release()

    def _post(self, msg: Message) -> None:
        if self._closed:
            msg._release()
            return
        msg.state = "sent"
        self._streams.setdefault(msg.stream, deque()).append(msg)
        self._last_progress = time.monotonic()
        waiter = self._waiters.get(msg.stream)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _settled(self, msg: Message) -> None:
        with self._lock:
            self._live.discard(msg)
        self._last_progress = time.monotonic()

    # ------------------------------------------------------------------
    # Failures and the end of the run

    def _report(self, problem: str) -> None:
        """Records a producer's problem, from any thread; the test fails."""
        if threading.get_ident() != self._loop_thread:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._report, problem)
            return
        self.problems.append(problem)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, problem: str) -> None:
        self.problems.append(problem)
        raise Failure(problem)

    def _check(self) -> None:
        if self.problems:
            raise Failure(self.problems[0], list(self.problems))

    def pending(self) -> list[Message]:
        """Returns the events whose producers are still paused, in firing order."""
        with self._lock:
            live = set(self._live)
        return [m for m in self.messages if m in live]

    def _deadlock(self) -> str:
        """Returns the text of a deadlock failure, as things stand now."""
        if self._waiters:
            streams = ", ".join(repr(s) for s in self._waiters)
            what = f"the test waited for an event on stream {streams}"
        else:
            what = "the test was not receiving"
        text = (
            f"deadlock: no event was sent or received for {self.timeout:g} s; {what}."
        )
        accepted = [m for m in self.messages if m.state == "accepted"]
        if accepted:
            text += f"\nAccepted so far ({len(accepted)}):"
            text += "".join(f"\n  {m.describe()}" for m in accepted)
        return text + "\n" + self._paused_text()

    def _paused_text(self) -> str:
        """Returns the paused producers, one per line, or says there are none."""
        pending = self.pending()
        if not pending:
            return (
                "No producer is paused at a tracepoint: the code under test is "
                "blocked elsewhere, or finished without firing."
            )
        lines = [f"Paused producers ({len(pending)}):"]
        for m in pending:
            lines.append(f"  {m.describe()} [{_STATES.get(m.state, m.state)}]")
        return "\n".join(lines)

    def _unconsumed(self) -> str | None:
        """Returns the failure text for the events fired and not accepted."""
        left = self.pending()
        if not left:
            return None
        lines = [f"{len(left)} event(s) left unconsumed at the end of the test:"]
        for m in left:
            lines.append(f"  {m.describe()} [{_STATES[m.state]}]")
        return "\n".join(lines)

    def _close(self) -> None:
        """Detaches the run's probes and lets every paused producer go."""
        self._group.done()
        with self._lock:
            self._closed = True
            live = list(self._live)
            self._live.clear()
        for msg in live:
            msg._release()


_STATES = {
    "delivering": "not yet in its stream",
    "sent": "sent, not received",
    "received": "received, not accepted",
}


def _producer() -> str:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        task = None
    if task is not None:
        return f"task {task.get_name()!r}"
    return f"thread {threading.current_thread().name!r}"


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
