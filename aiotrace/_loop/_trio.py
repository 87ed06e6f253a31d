"""Hooks into trio (and anyio on trio) through ``trio.abc.Instrument``.

Each trio run is a loop. Its tasks are coroutines: spawned (RUNNABLE, with
the spawning stack), stepped (RUNNING), then rescheduled during their own
step (a checkpoint: yield), left waiting (blocked, with a reason from the
await chain), or exited. ``task_scheduled`` from elsewhere is the wakeup.

The instrument is added to the run that is current when tracing starts, and
to every run started with ``trio.run`` while tracing (the module attribute is
wrapped; anyio calls it through the module too). ``install`` runs when
tracing starts if trio is imported, else when the program imports it
(``_follow``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from .._format.spec import C, CoroState, ResourceKind
from .._recorder import clock
from ._reasons import (
    COROUTINE,
    EVENT,
    EXECUTOR,
    FUTURE,
    GATHER,
    IO,
    LOCK,
    QUEUE,
    REASON_TABLES,
    SLEEP,
    ReasonTable,
)
from ._state import Hooks, ThreadState

_CREATE = C["CoroCreate"]
_UNBLOCK = C["CoroUnblock"]
_STATUS = C["CoroStatus"]
_RUN_YIELD = C["CoroRunYield"]
_RUN_BLOCK = C["CoroRunBlock"]
_RUN_END = C["CoroRunEnd"]
_LABEL = C["Label"]
_LOOP_STATUS = C["LoopStatus"]
_LOOP_IDLE = C["LoopIdle"]
_LOOP_RUN = C["LoopRun"]
_LOOP_DESTROY = C["LoopDestroy"]
_COROUTINE = ResourceKind.COROUTINE
_LOOP = ResourceKind.LOOP

_TRIO: dict[str, tuple[str, ...]] = {
    SLEEP: ("_timeouts.sleep", "_timeouts.sleep_until", "_timeouts.sleep_forever"),
    LOCK: (
        "_sync._LockImpl.acquire",
        "_sync.Semaphore.acquire",
        "_sync.Condition.wait",
        "_sync.CapacityLimiter.acquire",
        "_sync.CapacityLimiter.acquire_on_behalf_of",
    ),
    EVENT: ("_sync.Event.wait",),
    QUEUE: (
        "_channel.MemoryReceiveChannel.receive",
        "_channel.MemorySendChannel.send",
    ),
    GATHER: ("_core._run.NurseryManager.__aexit__",),
    EXECUTOR: ("_threads.to_thread_run_sync",),
    IO: (
        "_core._io_epoll.EpollIOManager.wait_readable",
        "_core._io_epoll.EpollIOManager.wait_writable",
        "_core._generated_io_epoll.wait_readable",
        "_core._generated_io_epoll.wait_writable",
        "_subprocess.Process.wait",
    ),
}

_WAKER_BY_REASON = {SLEEP: "timer", IO: "io", EXECUTOR: "thread"}


def install(h: Hooks) -> None:
    """Traces the current trio run, if any, and every run ``trio.run`` starts."""
    trio = sys.modules.get("trio")
    if trio is None:
        return
    # Looked up by name as code is seen: anyio may be imported (lazily) later.
    reasons = ReasonTable(("trio", _TRIO), *REASON_TABLES)
    trio_dir = os.path.dirname(str(trio.__file__)) + os.sep
    make = _instrument_class(trio)

    def new_instrument(guest: bool = False) -> Any:
        return make(h, reasons, trio_dir, guest)

    try:
        trio.lowlevel.current_root_task()
    except RuntimeError:
        pass
    else:
        inst = new_instrument()
        trio.lowlevel.add_instrument(inst)
        inst.attach_current()

        def remove() -> None:
            inst.active = False
            # Fails for another thread's run, or one that ended: now inert.
            with contextlib.suppress(RuntimeError, KeyError):
                trio.lowlevel.remove_instrument(inst)

        h.on_uninstall("trio instrument", remove)

    orig_run = trio.run

    def run(*args: Any, **kwargs: Any) -> Any:
        inst = new_instrument()
        kwargs["instruments"] = (*kwargs.get("instruments", ()), inst)
        h.on_uninstall("trio instrument", lambda: setattr(inst, "active", False))
        return orig_run(*args, **kwargs)

    run.__wrapped__ = orig_run  # type: ignore[attr-defined]
    run.__doc__ = orig_run.__doc__
    h.patch(trio, "run", run)

    # Guest mode (anyio's pytest plugin runs trio tests this way): trio runs
    # inside a host loop, on the host's thread.
    orig_guest = trio.lowlevel.start_guest_run

    def start_guest_run(*args: Any, **kwargs: Any) -> Any:
        # Hosted by a running asyncio loop, whose hooks own this thread's
        # heartbeat; another host (anyio's test runner) leaves it to trio.
        aio = sys.modules.get("asyncio")
        inst = new_instrument(guest=aio is not None and _hosted(aio))
        kwargs["instruments"] = (*kwargs.get("instruments", ()), inst)
        h.on_uninstall("trio instrument", lambda: setattr(inst, "active", False))
        return orig_guest(*args, **kwargs)

    start_guest_run.__wrapped__ = orig_guest  # type: ignore[attr-defined]
    start_guest_run.__doc__ = orig_guest.__doc__
    h.patch(trio.lowlevel, "start_guest_run", start_guest_run)


def _hosted(asyncio: Any) -> bool:
    return asyncio.events._get_running_loop() is not None


def _instrument_class(trio: Any) -> Any:
    class _Instrument(trio.abc.Instrument):  # type: ignore[misc]
        """_Instrument records one trio run's tasks and its I/O waits."""

        def __init__(
            self, h: Hooks, reasons: ReasonTable, trio_dir: str, guest: bool
        ) -> None:
            # A guest run's steps run inside its host loop's callbacks, on
            # the host's thread: the host's hooks own the thread's loop and
            # heartbeat (a stall in a guest step is the host loop's stall).
            self._guest = guest
            self.active = True
            self._h = h
            self._reasons = reasons
            self._dir = trio_dir
            self._ids: dict[int, int] = {}
            self._blocked: dict[int, str] = {}  # cid -> reason, while waiting
            self._yielded = False
            self._exited = False
            self._t0 = 0
            self._lid = -1
            self._ts: ThreadState | None = None

        def _state(self) -> ThreadState:
            ts = self._ts
            if ts is None:
                ts = self._ts = self._h.thread_state()
            return ts

        def _cid(self, task: Any, state: CoroState) -> int:
            cid = self._ids.get(id(task))
            if cid is None:
                cid = self._ids[id(task)] = self._h.next_coroutine()
                now = clock()
                self._state().events.extend(
                    (
                        (_STATUS, now, cid, state),
                        (_LABEL, now, _COROUTINE, cid, task.name),
                    )
                )
            return cid

        def _guard(self, what: str, exc: Exception) -> None:
            self.active = False
            self._h.fail(f"trio {what}", exc)

        def attach_current(self) -> None:
            """Starts tracing a run that was already going."""
            self.before_run()

        def before_run(self) -> None:
            if not self.active:
                return
            try:
                ts = self._state()
                lid = self._lid = self._h.new_loop_id()
                if not self._guest:
                    ts.loop = lid
                now = clock()
                ts.events.extend(
                    (
                        (_LOOP_STATUS, now, lid, 2),  # RUNNING
                        (_LABEL, now, _LOOP, lid, f"trio run in {ts.thread.name}"),
                    )
                )
            except Exception as exc:
                self._guard("before_run", exc)

        def after_run(self) -> None:
            if self.active:
                self._state().events.append((_LOOP_DESTROY, clock(), self._lid))

        def before_io_wait(self, timeout: float) -> None:
            if self.active and timeout > 0:
                self._state().events.append((_LOOP_IDLE, clock(), self._lid))

        def after_io_wait(self, timeout: float) -> None:
            if self.active and timeout > 0:
                self._state().events.append((_LOOP_RUN, clock(), self._lid))

        def task_spawned(self, task: Any) -> None:
            if not self.active:
                return
            try:
                cid = self._ids[id(task)] = self._h.next_coroutine()
                now = clock()
                self._state().events.extend(
                    (
                        (_CREATE, now, cid, self._spawn_stack()),
                        (_LABEL, now, _COROUTINE, cid, task.name),
                    )
                )
                self._blocked[cid] = ""  # its first scheduling is no wakeup
            except Exception as exc:
                self._guard("task_spawned", exc)

        def task_scheduled(self, task: Any) -> None:
            if not self.active:
                return
            try:
                ts = self._state()
                cid = self._ids.get(id(task))
                if cid is not None and cid == ts.cur:
                    self._yielded = True  # rescheduled in its own step
                    return
                if cid is None:
                    cid = self._cid(task, CoroState.WAITING)
                    was = FUTURE
                else:
                    was = self._blocked.pop(cid, FUTURE)
                    if was == "":
                        return  # just spawned: already runnable
                waker = "coroutine" if ts.cur else _WAKER_BY_REASON.get(was, "loop")
                ts.events.append((_UNBLOCK, clock(), cid, waker))
            except Exception as exc:
                self._guard("task_scheduled", exc)

        def before_task_step(self, task: Any) -> None:
            if not self.active:
                return
            try:
                ts = self._state()
                cid = self._ids.get(id(task))
                if cid is None:
                    cid = self._cid(task, CoroState.RUNNABLE)
                self._blocked.pop(cid, None)
                ts.cur = cid
                self._yielded = self._exited = False
                self._t0 = clock()
                if not self._guest:
                    ts.t0 = self._t0
            except Exception as exc:
                self._guard("before_task_step", exc)

        def after_task_step(self, task: Any) -> None:
            if not self.active:
                return
            try:
                ts = self._state()
                t1 = clock()
                t0 = self._t0
                if not t0:
                    return  # a step that began before tracing did
                self._t0 = 0
                if not self._guest:
                    ts.t0 = 0
                cid = ts.cur
                if cid and not self._exited:
                    if self._yielded:
                        ts.events.append((_RUN_YIELD, t0, cid, t1 - t0))
                    else:
                        reason = self._reason(task)
                        self._blocked[cid] = reason
                        ts.events.append((_RUN_BLOCK, t0, cid, t1 - t0, reason, None))
                ts.cur = 0  # once the record is in (see _drain)
                if t1 - t0 > self._h.stall_ns and not self._guest:
                    self._h.stall_end(ts, t0, t1)
            except Exception as exc:
                self._guard("after_task_step", exc)

        def task_exited(self, task: Any) -> None:
            if not self.active:
                return
            try:
                ts = self._state()
                cid = self._ids.pop(id(task), None)
                if cid is None or cid != ts.cur:
                    return
                t0 = self._t0
                outcome = _outcome(sys._getframe(1))
                ts.events.append((_RUN_END, t0, cid, clock() - t0, outcome))
                self._exited = True  # after_task_step ends the step, no record
            except Exception as exc:
                self._guard("task_exited", exc)

        def _reason(self, task: Any) -> str:
            reasons = self._reasons
            by_id = reasons.ids  # code objects by id: hashing one is slow
            x = task.coro
            for _ in range(64):
                code = getattr(x, "cr_code", None)
                if code is not None:
                    r = by_id.get(id(code))
                    found = reasons[code] if r is None else r
                    if found:
                        return found
                    x = x.cr_await
                    continue
                code = getattr(x, "gi_code", None)
                if code is None:
                    break
                r = by_id.get(id(code))
                found = reasons[code] if r is None else r
                if found:
                    return found
                x = x.gi_yieldfrom
            return COROUTINE if x is None else FUTURE

        def _spawn_stack(self) -> tuple[tuple[Any, int], ...]:
            frame: Any = sys._getframe(2)
            trio_dir = self._dir
            while frame is not None and frame.f_code.co_filename.startswith(trio_dir):
                frame = frame.f_back
            frames: list[tuple[Any, int]] = []
            while frame is not None and len(frames) < 16:
                code = frame.f_code
                if code.co_filename.startswith(trio_dir):
                    break
                frames.append((code, frame.f_lasti))
                frame = frame.f_back
            return tuple(frames)

    return _Instrument


def _outcome(frame: Any) -> str:
    """Reads the exiting task's outcome from trio's Runner.task_exited frame."""
    for _ in range(4):
        if frame is None:
            break
        outcome = None
        if "outcome" in frame.f_code.co_varnames:
            outcome = frame.f_locals.get("outcome")
        if outcome is not None:
            error = getattr(outcome, "error", None)
            if error is None:
                return "returned"
            if type(error).__name__ == "Cancelled":
                return "cancelled"
            return f"raised {type(error).__qualname__}"
        frame = frame.f_back
    return "returned"
