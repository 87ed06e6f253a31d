"""CapturedTrace: one test's trace, as the pytest plugin records it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ._errors import TracingError
from ._sinks import MemorySink

if TYPE_CHECKING:
    from ._pytest_stalls import Stall
    from ._tracer import Tracer
    from .reader import CoroID, Event


class CapturedTrace:
    """CapturedTrace is one test's trace: to a file under ``--aiotrace``,
    else in memory. The ``aiotrace_events`` fixture hands it to the test.

    Tracing starts before the test's fixtures are set up and stops after
    they are torn down, or at the first ``stop()`` or ``events()``: what the
    test does after that is not traced.
    """

    def __init__(self, path: str | None, options: dict[str, Any]) -> None:
        self.path = path
        """The trace file, or None if the trace is kept in memory."""
        self.error: BaseException | None = None
        """Why the trace failed (a ``TracingError``), if it did."""
        self._options = options
        self._sink = MemorySink() if path is None else None
        self._tracer: Tracer | None = None
        self._stopped = False
        self._events: list[Event] | None = None

    def _start(self) -> None:
        from ._tracer import start

        sink: object = self.path if self._sink is None else self._sink
        self._tracer = start(sink, **self._options)

    @property
    def stall_threshold(self) -> float | None:
        """The trace's stall threshold in seconds, or None if detection is off."""
        return None if self._tracer is None else self._tracer.stall_threshold

    def stop(self) -> None:
        """Stops tracing the test, once every event is written.

        Raises:
            TracingError: the trace failed (its sink failed).
        """
        tracer = self._tracer
        if tracer is None or self._stopped:
            return
        self._stopped = True
        try:
            tracer.stop()
        except TracingError as exc:
            self.error = exc
            raise

    def _close(self) -> None:
        """Stops tracing; a failure is kept in ``error``, never raised."""
        with contextlib.suppress(TracingError):
            self.stop()

    def events(self) -> list[Event]:
        """Stops tracing, if it is still on, and returns the test's events,
        read back from the trace.

        Raises:
            TracingError: the trace failed, so there is nothing whole to read.
        """
        if self._events is None:
            self.stop()
            if self.error is not None:
                raise TracingError(
                    f"aiotrace: this test's trace failed: {self.error}"
                ) from self.error
            if self._sink is not None:
                self._events = self._sink.events()
            else:
                from .reader import read_events

                assert self.path is not None
                self._events = read_events(self.path)
        return self._events

    def labels(self) -> dict[CoroID, list[str]]:
        """Returns every label of each coroutine in the trace (stops tracing).

        A coroutine's label is its coroutine function's qualified name, then a
        space and its task's name when it was given one.
        """
        from ._pytest_stalls import coroutine_labels

        return coroutine_labels(self.events())

    def coroutines(self, name: str) -> list[CoroID]:
        """Returns the coroutines called ``name``, in order of creation (stops
        tracing).

        ``name`` matches a coroutine function's qualified name or its last
        part (``handler`` for ``test_x.<locals>.handler``), a task's name, or
        a whole label.
        """
        from ._pytest_stalls import label_matches

        return [
            coro
            for coro, labels in self.labels().items()
            if any(label_matches(label, name) for label in labels)
        ]

    def transitions(self, name: str) -> list[Event]:
        """Returns the state transitions of the coroutines called ``name``, in
        time order (stops tracing).

        Raises:
            LookupError: no coroutine in the trace is called ``name``.
        """
        from .reader import EventKind, ResourceKind

        coros = set(self.coroutines(name))
        if not coros:
            known = sorted({ls[-1] for ls in self.labels().values()})
            raise LookupError(
                f"aiotrace: no coroutine called {name!r} in this test's trace; "
                f"its coroutines are: {', '.join(map(repr, known)) or 'none'}"
            )
        found = []
        for ev in self.events():
            if ev.kind is EventKind.STATE_TRANSITION:
                res = ev.state_transition.resource
                if res.kind is ResourceKind.COROUTINE and res.id in coros:
                    found.append(ev)
        return found

    def block_reasons(self, name: str) -> list[str]:
        """Returns why the coroutines called ``name`` blocked, one reason per
        RUNNING to WAITING transition, in time order (stops tracing).

        Reasons are the execution tracer's: ``sleep``, ``io``, ``lock``,
        ``queue``, ``event``, ``coroutine``, ``gather``, ``executor`` or
        ``future``.

        Raises:
            LookupError: no coroutine in the trace is called ``name``.
        """
        from .reader import CoroState

        return [
            ev.state_transition.reason
            for ev in self.transitions(name)
            if ev.state_transition.new is CoroState.WAITING
        ]

    def stalls(self) -> list[Stall]:
        """Returns the loop stalls in the trace, in the order they began
        (stops tracing)."""
        from ._pytest_stalls import find_stalls

        return find_stalls(self.events())

    def __repr__(self) -> str:
        where = self.path or "memory"
        state = "stopped" if self._stopped or self._tracer is None else "tracing"
        return f"<CapturedTrace {where} ({state})>"
