"""The recording session shared by a trace and a flight recorder.

A ``Session`` is one Recorder (the hot path), one Drainer (encoding) and one
execution tracer (loop hooks and the watchdog). ``aiotrace.start`` and
``FlightRecorder.start`` both join the session, starting it if needed; it
stops when the last of them leaves. So a trace and a flight recorder that
run at the same time share one set of hooks and one encoding, as in Go
1.25; each gets the encoded generations from the one at which it joined.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields
from typing import Protocol

from . import _recorder
from ._drain import GENERATION_BYTES, Drainer
from ._errors import TracingError
from ._loop import Runtime
from ._recorder import Recorder

lock = threading.RLock()
"""Guards the current session and its consumers. Never held while waiting
for the drain thread."""

_current: Session | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """Options are what a session records, fixed for its whole life."""

    stall_threshold: float | None
    metrics_interval: float | None
    annotation_stacks: bool
    block_stacks: bool
    runtime_events: bool


class Consumer(Protocol):
    """Consumer is a trace or a flight recorder fed by a session."""

    def _fail(self, exc: BaseException) -> None: ...


class Session:
    """Session is the recording shared by every consumer that runs at once."""

    def __init__(self, options: Options, *, max_buffer_bytes: int) -> None:
        self.options = options
        self.recorder = Recorder(stacks=options.annotation_stacks)
        self.drainer = Drainer(self.recorder, None, max_buffer_bytes=max_buffer_bytes)
        self.drainer.on_error = self._drain_failed
        self.consumers: list[Consumer] = []
        self.runtime: Runtime | None = None
        self.closed = False

    def _drain_failed(self, exc: BaseException) -> None:
        with lock:
            consumers = list(self.consumers)
        for consumer in consumers:
            consumer._fail(exc)

    def start(self) -> BaseException | None:
        """Turns recording on and starts the drain thread and the execution
        tracer; returns the execution tracer's failure, if it failed."""
        _recorder.active = self.recorder
        self.drainer.start()
        if not self.options.runtime_events:
            return None
        try:
            self.runtime = Runtime(
                self.recorder,
                stall_threshold=self.options.stall_threshold,
                metrics_interval=self.options.metrics_interval,
                block_stacks=self.options.block_stacks,
            )
        except Exception as exc:
            return exc
        # The drainer places each generation cut between the steps the
        # hooks run (``Recorder.take``).
        self.drainer.hooks = self.runtime.hooks
        return None

    def stop_runtime(self, *, join: bool = True) -> None:
        """Undoes the hooks and stops the watchdog."""
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.stop(join=join)

    def close(self, *, join: bool = True) -> None:
        """Turns recording off and forgets the session; the caller then stops
        (or abandons) the drainer. Call with ``lock`` held."""
        global _current
        self.closed = True
        if _recorder.active is self.recorder:
            _recorder.active = None
        self.stop_runtime(join=join)
        if _current is self:
            _current = None

    def reset_generation_size(self) -> None:
        """Sets the generation size to the smallest any consumer asks for."""
        size = GENERATION_BYTES
        for consumer in self.consumers:
            size = min(size, getattr(consumer, "generation_bytes", size))
        self.drainer.generation_bytes = size


def current() -> Session | None:
    """Returns the running session, if any (call with ``lock`` held)."""
    return _current


def new(options: Options, *, max_buffer_bytes: int) -> Session:
    """Makes the session current; the caller starts it (with ``lock`` held)."""
    global _current
    session = _current = Session(options, max_buffer_bytes=max_buffer_bytes)
    return session


def check(session: Session, options: Options, who: str) -> None:
    """Refuses options that differ from the running session's.

    Raises:
        TracingError: naming each option that differs.
    """
    diffs = [
        f"{f.name}={getattr(options, f.name)!r} (running: "
        f"{getattr(session.options, f.name)!r})"
        for f in fields(Options)
        if getattr(options, f.name) != getattr(session.options, f.name)
    ]
    if diffs:
        raise TracingError(
            f"aiotrace: {who} joins the recording already running (a trace or "
            "a flight recorder), which records with other options: "
            f"{', '.join(diffs)}; start it with the same options"
        )


def _forget_in_child() -> None:
    """In a forked child, the parent's session is not ours: its threads did
    not survive the fork."""
    global _current, lock
    session = _current
    if session is not None:
        session.stop_runtime(join=False)  # the patches survived the fork
    lock = threading.RLock()
    _current = None
    _recorder.active = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
