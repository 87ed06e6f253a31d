"""What every loop hook shares during one trace: ids, per-thread state, patches.

Hooks record into the thread's own event list (the recorder's), and keep
per-thread scheduling state in a ``ThreadState`` that the stall watchdog reads
from its own thread.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Final

from .._errors import TracingWarning
from .._format.spec import C, LoopState, ResourceKind
from .._recorder import Recorder, clock

NEVER: Final = 1 << 62
"""A stall threshold in ns that no step reaches: stall detection off."""

_LABEL = C["Label"]
_LOOP_STATUS = C["LoopStatus"]
_LOOP_RUN = C["LoopRun"]
_LOOP_IDLE = C["LoopIdle"]
_LOOP_DESTROY = C["LoopDestroy"]
_LOG = C["Log"]


class ThreadState:
    """ThreadState is what the hooks know about one OS thread running a loop.

    The watchdog reads ``t0``, ``cur`` and ``loop`` from its own thread, so
    they are plain attributes written with single stores.
    """

    __slots__ = (
        "cur",
        "events",
        "handle",
        "ident",
        "lock",
        "loop",
        "native",
        "pending",
        "stall_t0",
        "t0",
        "thread",
    )

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        # Invariant: t0 is the start (trace clock) of the step or callback
        # running on this thread, or 0 between them.
        self.t0 = 0
        # The coroutine whose step is running (eager steps nest), or 0.
        self.cur = 0
        # The plain loop callback (Handle) running, or None.
        self.handle: Any = None
        self.loop = -1
        self.ident = threading.get_ident()
        # Hooks run in threads the threading module knows (not while starting).
        self.thread = threading.current_thread()
        self.native = threading.get_native_id()
        self.lock = threading.Lock()
        # The t0 of the step the watchdog has reported as a stall, or 0.
        self.stall_t0 = 0
        # The task whose step started tracing, until that step is seen over.
        self.pending: Any = None


class Hooks:
    """Hooks is the state shared by every loop hook of one trace."""

    def __init__(self, rec: Recorder, *, stall_threshold: float | None) -> None:
        self.rec = rec
        self.local = rec._local
        self.stall_ns = NEVER if stall_threshold is None else int(stall_threshold * 1e9)
        self.next_coroutine: Callable[[], int] = itertools.count(1).__next__
        self._next_loop: Callable[[], int] = itertools.count(1).__next__
        # id(task) -> coroutine id, for live tasks. A task destroyed while
        # pending leaves a stale entry, overwritten if its address is reused
        # by a task created through a hook.
        self.coroutines: dict[int, int] = {}
        self._loops: dict[int, tuple[int, weakref.ref[Any]]] = {}
        # Loops seen running mid-run, whose run_forever began out of sight.
        self._unleft: set[int] = set()
        self.threads: list[ThreadState] = []
        # Reentrant: an allocation under it can run the GC callback.
        self._lock = threading.RLock()
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._failed: set[str] = set()
        self._links: list[tuple[str, ...]] = []
        self.on_loop: list[Callable[[Any, int, ThreadState], None]] = []
        """Called (loop, loop id, thread state) when a loop is first seen."""
        self.stall_end: Callable[[ThreadState, int, int], None] = _no_stall
        self.hidden_codes: set[Any] = set()
        """Code objects of hooks that run user code under them: their frames
        are left out of ``Task.get_stack()``."""

    # Per-thread state.

    def thread_state(self) -> ThreadState:
        """Returns the calling thread's state, creating it on first use."""
        local = self.local
        try:
            ts: ThreadState = local.ts
        except AttributeError:
            ts = local.ts = ThreadState(self.rec.events())
            with self._lock:
                self.threads.append(ts)
        return ts

    def live_threads(self) -> list[ThreadState]:
        """Returns the thread states, forgetting those of exited threads."""
        with self._lock:
            self.threads = [ts for ts in self.threads if ts.thread.is_alive()]
            return list(self.threads)

    # Loops.

    def new_loop_id(self) -> int:
        """Returns a fresh loop id, for a loop the hooks track themselves."""
        return self._next_loop()

    def loop_id(self, loop: Any) -> int | None:
        """Returns the loop's id, or None if it was never seen."""
        entry = self._loops.get(id(loop))
        if entry is None or entry[1]() is not loop:
            return None
        return entry[0]

    def enter_loop(self, loop: Any, *, fresh: bool) -> int:
        """Records that ``loop`` runs on the calling thread; returns its id.

        A loop seen for the first time gets a LoopStatus (RUNNING) and a label;
        a known one, entered again by ``run_forever`` (``fresh``), a LoopRun.
        """
        ts = self.thread_state()
        lid = self.loop_id(loop)
        if lid is None:
            lid = self.new_loop_id()
            self._loops[id(loop)] = (lid, weakref.ref(loop))
            now = clock()
            ts.events += (
                (_LOOP_STATUS, now, lid, LoopState.RUNNING),
                (_LABEL, now, ResourceKind.LOOP, lid, _loop_label(loop, ts)),
            )
            ts.loop = lid
            for fn in self.on_loop:
                fn(loop, lid, ts)
        else:
            ts.loop = lid
            if fresh:
                now = clock()
                if lid in self._unleft:
                    # Seen mid-run: that run_forever ended out of sight.
                    ts.events.append((_LOOP_IDLE, now, lid))
                ts.events.append((_LOOP_RUN, now, lid))
        if fresh:
            self._unleft.discard(lid)
        else:
            self._unleft.add(lid)
        return lid

    def leave_loop(self, loop: Any) -> None:
        """Records that ``run_forever`` returned: the loop is idle."""
        lid = self.loop_id(loop)
        if lid is not None:
            self._unleft.discard(lid)
            self.thread_state().events.append((_LOOP_IDLE, clock(), lid))

    def close_loop(self, loop: Any) -> None:
        """Records that ``loop`` was closed."""
        lid = self.loop_id(loop)
        if lid is not None:
            del self._loops[id(loop)]
            self.thread_state().events.append((_LOOP_DESTROY, clock(), lid))

    def loops(self) -> list[tuple[int, Any]]:
        """Returns the (id, loop) pairs of the loops seen and still alive."""
        out = []
        for lid, ref in list(self._loops.values()):
            loop = ref()
            if loop is not None:
                out.append((lid, loop))
        return out

    # Patches.

    def patch(self, owner: Any, name: str, new: Any) -> Any:
        """Replaces ``owner.name`` with ``new`` until ``uninstall``; returns the old."""
        old = owner.__dict__[name] if name in owner.__dict__ else getattr(owner, name)
        own = name in owner.__dict__
        setattr(owner, name, new)

        def undo() -> None:
            if owner.__dict__.get(name) is new:
                if own:
                    setattr(owner, name, old)
                else:
                    delattr(owner, name)

        self._undo.append((f"{getattr(owner, '__name__', owner)}.{name}", undo))
        return old

    def on_uninstall(self, what: str, undo: Callable[[], None]) -> None:
        """Runs ``undo`` at uninstall (and when the hook ``what`` fails)."""
        self._undo.append((what, undo))

    def link(self, *names: str) -> None:
        """Makes the hooks ``names`` fail together: one alone would record
        transitions that contradict the others' silence."""
        self._links.append(names)

    def fail(self, what: str, exc: BaseException) -> None:
        """Disables the failing hook ``what`` and reports it once.

        The traced program goes on: the hook's patch is undone, a
        TracingWarning is issued and an ``aiotrace/hook-error`` log is
        recorded.
        """
        if what in self._failed:
            return
        self._failed.add(what)
        off = {what}
        for names in self._links:
            if what in names:
                off.update(names)
        for name, undo in self._undo:
            if name in off:
                with contextlib.suppress(Exception):
                    undo()
        message = f"{what} hook failed ({type(exc).__name__}: {exc}); it is now off"
        with contextlib.suppress(Exception):
            self.rec.events().append(
                (_LOG, clock(), 0, "aiotrace/hook-error", message, None)
            )
        with contextlib.suppress(Exception):
            warnings.warn(
                f"aiotrace: {message}; the program goes on",
                TracingWarning,
                stacklevel=2,
            )

    def uninstall(self) -> None:
        """Undoes every patch, newest first."""
        while self._undo:
            _, undo = self._undo.pop()
            with contextlib.suppress(Exception):
                undo()


def _loop_label(loop: Any, ts: ThreadState) -> str:
    return f"{type(loop).__name__} in {ts.thread.name}"


def _no_stall(ts: ThreadState, t0: int, t1: int) -> None:
    pass
