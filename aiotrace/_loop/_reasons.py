"""Why a coroutine waits, and what woke it: asyncio's code objects, classified.

A blocked task's await chain (``cr_await`` from its coroutine inwards) is
matched, outermost frame first, against the library functions that wait for
something: ``Queue.get`` waits on the queue even though, deep inside, it
awaits a plain future. Functions are named by package, module and qualified
name, and each code object is looked up once (``ReasonTable``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import types
import weakref
from types import CodeType
from typing import Any

SLEEP = "sleep"
IO = "io"
LOCK = "lock"
QUEUE = "queue"
EVENT = "event"
COROUTINE = "coroutine"
GATHER = "gather"
EXECUTOR = "executor"
FUTURE = "future"

_ASYNCIO: dict[str, tuple[str, ...]] = {
    SLEEP: ("tasks.sleep",),
    LOCK: (
        "locks.Lock.acquire",
        "locks.Semaphore.acquire",
        "locks.Condition.wait",
        "locks.Condition.wait_for",
        "locks.Barrier.wait",
    ),
    EVENT: ("locks.Event.wait",),
    QUEUE: ("queues.Queue.get", "queues.Queue.put", "queues.Queue.join"),
    GATHER: (
        "tasks.wait",
        "tasks._wait",
        "tasks.as_completed",
        "taskgroups.TaskGroup.__aexit__",
        "taskgroups.TaskGroup._aexit",
    ),
    COROUTINE: ("tasks.wait_for",),
    EXECUTOR: ("threads.to_thread",),
    IO: (
        "streams.StreamReader._wait_for_data",
        "streams.FlowControlMixin._drain_helper",
        "streams.StreamWriter.drain",
        "streams.StreamWriter.wait_closed",
        "selector_events.BaseSelectorEventLoop._accept_connection2",
        "streams.open_connection",
        "streams.start_server",
        "selector_events.BaseSelectorEventLoop.sock_recv",
        "selector_events.BaseSelectorEventLoop.sock_recv_into",
        "selector_events.BaseSelectorEventLoop.sock_recvfrom",
        "selector_events.BaseSelectorEventLoop.sock_recvfrom_into",
        "selector_events.BaseSelectorEventLoop.sock_sendall",
        "selector_events.BaseSelectorEventLoop.sock_sendto",
        "selector_events.BaseSelectorEventLoop.sock_connect",
        "selector_events.BaseSelectorEventLoop.sock_accept",
        "base_events.BaseEventLoop.sock_sendfile",
        "base_events.BaseEventLoop.create_connection",
        "base_events.BaseEventLoop.create_server",
        "base_events.BaseEventLoop.getaddrinfo",
        "base_events.BaseEventLoop.getnameinfo",
        "subprocess.Process.wait",
        "subprocess.Process.communicate",
        "base_subprocess.BaseSubprocessTransport._wait",
    ),
}

_ANYIO: dict[str, tuple[str, ...]] = {
    # The outermost known function of the await chain names the reason, so
    # both the generic classes and each backend's own (anyio 4.5+ makes a
    # backend-specific Lock, Event... on asyncio) are listed.
    SLEEP: ("_core._eventloop.sleep",),
    LOCK: (
        "_core._synchronization.Lock.acquire",
        "_core._synchronization.LockAdapter.acquire",
        "_core._synchronization.Semaphore.acquire",
        "_core._synchronization.SemaphoreAdapter.acquire",
        "_core._synchronization.Condition.acquire",
        "_core._synchronization.Condition.wait",
        "_core._synchronization.Condition.wait_for",
        "_core._synchronization.CapacityLimiter.acquire",
        "_core._synchronization.CapacityLimiter.acquire_on_behalf_of",
        "_core._synchronization.CapacityLimiterAdapter.acquire",
        "_core._synchronization.CapacityLimiterAdapter.acquire_on_behalf_of",
        "_backends._asyncio.Lock.acquire",
        "_backends._asyncio.Semaphore.acquire",
        "_backends._asyncio.CapacityLimiter.acquire",
        "_backends._asyncio.CapacityLimiter.acquire_on_behalf_of",
        "_backends._trio.Lock.acquire",
        "_backends._trio.Semaphore.acquire",
        "_backends._trio.CapacityLimiter.acquire",
        "_backends._trio.CapacityLimiter.acquire_on_behalf_of",
    ),
    EVENT: (
        "_core._synchronization.Event.wait",
        "_core._synchronization.EventAdapter.wait",
        "_backends._asyncio.Event.wait",
        "_backends._trio.Event.wait",
    ),
    QUEUE: (
        "streams.memory.MemoryObjectReceiveStream.receive",
        "streams.memory.MemoryObjectSendStream.send",
    ),
    GATHER: (
        "_backends._asyncio.TaskGroup.__aexit__",
        "_backends._trio.TaskGroup.__aexit__",
    ),
    COROUTINE: ("_core._tasks.TaskHandle.wait",),
    EXECUTOR: ("to_thread.run_sync",),
    IO: (
        "_backends._asyncio.SocketStream.receive",
        "_backends._asyncio.SocketStream.send",
        "_core._sockets.connect_tcp",
        "_core._sockets.wait_socket_readable",
        "_core._sockets.wait_socket_writable",
        "_core._sockets.wait_readable",
        "_core._sockets.wait_writable",
        "_backends._asyncio.wait_readable",
        "_backends._asyncio.wait_writable",
        "_backends._asyncio.AsyncIOBackend.wait_readable",
        "_backends._asyncio.AsyncIOBackend.wait_writable",
    ),
}

REASON_TABLES: tuple[tuple[str, dict[str, tuple[str, ...]]], ...] = (
    ("asyncio", _ASYNCIO),
    ("anyio", _ANYIO),
)
"""(package, table) pairs: the reasons the asyncio hooks know."""

REASONS_MAX = 1 << 16
"""Most code objects a ReasonTable remembers; it starts over past this."""


class ReasonTable(dict[Any, "str | None"]):
    """ReasonTable maps code objects to the reason their function waits for.

    Each code object is looked up once, by its file and qualified name, and
    the answer (a reason, or None) is remembered: a package imported after
    tracing started (or lazily, as anyio imports its parts) is known as soon
    as its code is seen, and nothing but code objects is kept. Index it with
    ``table[code]``; ``get`` fills it too.
    """

    def __init__(self, *tables: tuple[str, dict[str, tuple[str, ...]]]) -> None:
        super().__init__()
        # id(code) -> its reason, or "" for none, for each code object the
        # table holds (so the id stays that code's): hashing a code object
        # hashes its bytecode and constants, 120-560 ns; an id costs none.
        self.ids: dict[int, str] = {}
        # qualified name -> [("/package/module.py", reason)], in table order.
        # A path "a.b.C.f" does not say where the module ends: every split
        # is indexed, and only the real one matches a code object.
        self._names: dict[str, list[tuple[str, str]]] = {}
        for root, table in tables:
            for reason, paths in table.items():
                for path in paths:
                    parts = path.split(".")
                    for i in range(1, len(parts)):
                        where = "/" + "/".join((root, *parts[:i])) + ".py"
                        qualname = ".".join(parts[i:])
                        self._names.setdefault(qualname, []).append((where, reason))

    def __missing__(self, code: Any) -> str | None:
        found: str | None = None
        for where, reason in self._names.get(getattr(code, "co_qualname", ""), ()):
            if code.co_filename.replace(os.sep, "/").endswith(where):
                found = reason
                break
        if len(self) >= REASONS_MAX:
            self.clear()  # code made at run time (exec), over and over
            self.ids.clear()
        self[code] = found
        self.ids[id(code)] = found or ""
        return found

    def get(self, code: Any, default: str | None = None) -> str | None:  # type: ignore[override]
        """Returns the reason of ``code``, or ``default`` if it names none."""
        found = self[code]
        return default if found is None else found


class Classifier:
    """Classifier names what a blocked task waits for, and what woke a task."""

    def __init__(self, task_types: tuple[type, ...], *, stacks: bool) -> None:
        self._reasons = ReasonTable(*REASON_TABLES)
        self._task_types = task_types
        self._gathering = getattr(asyncio.tasks, "_GatheringFuture", None)
        self._stacks = stacks
        # Waker names by what names them: code objects, types and strings,
        # never the callback (a closure or bound method holds user objects).
        self._wakers: dict[tuple[Any, ...], str] = {}
        # id(callback) -> weak reference to it, for callbacks queued by other
        # threads: the reference tells a reused id apart without keeping the
        # callback (and what it is bound to) alive.
        self._from_thread: dict[int, weakref.ref[Any]] = {}
        # (library code, caller code, offset) -> a wait site's stack.
        self._sites: dict[tuple[int, int, int], Any] = {}
        # Types in await chains that are no coroutine (futures): the walk
        # stops at them without trying their attributes.
        self._plain: set[type] = set()
        # id(code) -> (is it asyncio's or anyio's, the code)
        self._library: dict[int, tuple[bool, Any]] = {}

    def from_thread(self, callback: Any) -> None:
        """Notes that ``callback`` is about to be queued by call_soon_threadsafe.

        Noted before it is queued: the loop may run it at once. Most such
        callbacks wake no coroutine, so only the newest few are remembered.
        A callback that cannot be weakly referenced is not noted: its wakeups
        are named after the callback.
        """
        try:
            ref = weakref.ref(callback)
        except TypeError:
            return
        pending = self._from_thread
        pending[id(callback)] = ref
        if len(pending) > FROM_THREAD_MAX:
            del pending[next(iter(pending))]

    def block(self, coro: Any, waiter: Any) -> tuple[str, Any]:
        """Returns (reason, stack) for a task running ``coro`` waiting on
        ``waiter``.

        The stack is the await chain, innermost first, as (code, lasti)
        frames, when scheduler stacks are on. When they are off it is the
        wait's site: the library function that names the reason (such as
        ``Queue.put``) and the frame that awaits it, with its line, or the
        innermost frame of the chain when no library function names it.
        That tells a queue's ``put`` from its ``get`` and one lock from
        another for ``aiotrace stats``' findings, for one frame object read.
        """
        reasons = self._reasons
        by_id = reasons.ids
        found: str | None = None
        frames: list[tuple[Any, int]] | None = [] if self._stacks else None
        x = coro
        chain: list[Any] = []  # the coroutines walked before the reason's
        site_code: Any = None
        site_caller: Any = None
        weak: tuple[Any, Any, Any] | None = None
        code: Any = None
        last: Any = None
        plain = self._plain
        for _ in range(64):
            tx = type(x)
            if tx is _COROUTINE_TYPE:
                code = x.cr_code
                nxt = x.cr_await
            elif tx is _GENERATOR_TYPE:
                code = x.gi_code
                nxt = x.gi_yieldfrom
            elif tx in plain:
                break  # a future: the chain ends (no exception raised)
            else:
                code = getattr(x, "cr_code", None)
                if code is not None:
                    nxt = x.cr_await
                else:
                    code = getattr(x, "gi_code", None)
                    if code is None:
                        if len(plain) < SITES_MAX:
                            plain.add(tx)
                        break
                    nxt = x.gi_yieldfrom
            if found is None:
                r = by_id.get(id(code))
                found = (reasons[code] if r is None else r) or None
                if found is not None:
                    site_code = code
                    site_caller = self._caller(chain)
                    if found is COROUTINE and code.co_name == "wait_for":
                        # wait_for(x, t) awaits x inline (3.12+): what x
                        # waits for, if known, says more than "coroutine".
                        weak = (found, site_code, site_caller)
                        found = None
                        chain.append(x)
                else:
                    chain.append(x)
            if frames is not None:
                frame = getattr(x, "cr_frame", None) or getattr(x, "gi_frame", None)
                if frame is not None:
                    frames.append((code, frame.f_lasti))
            elif found is not None:
                break  # the site is known: the rest of the chain tells nothing
            last = x
            x = nxt
        if found is None and weak is not None:
            found, site_code, site_caller = weak
        if found is None:
            wtype = type(waiter)
            if wtype is self._gathering:
                found = GATHER
            elif isinstance(waiter, self._task_types):
                found = COROUTINE
            else:
                found = getattr(waiter, "_aiotrace_reason", FUTURE)
        if frames is not None:
            if frames:
                frames.reverse()
                return found, tuple(frames)
            return found, None
        if site_code is not None:
            return found, self._site(site_code, site_caller)
        if last is not None:
            # No library function names the wait: the innermost frame is
            # where it waits, and the program's own frame awaiting it, if
            # that is another, says where in the program.
            caller = self._caller(chain)
            if caller is None or caller is last:
                return found, self._site(None, last)
            inner = getattr(last, "cr_code", None) or getattr(last, "gi_code", None)
            return found, self._site(inner, caller)
        return found, None

    def _caller(self, chain: list[Any]) -> Any:
        """The innermost coroutine of ``chain`` that is not library code
        (asyncio's, anyio's or an installed package's, such as
        ``Lock.__aenter__``), or the innermost of all, or None."""
        library = self._library
        for x in reversed(chain):
            code = getattr(x, "cr_code", None) or getattr(x, "gi_code", None)
            known = library.get(id(code))
            if known is None:
                if code is None:
                    return x
                if len(library) >= SITES_MAX:
                    library.clear()
                file = code.co_filename.replace(os.sep, "/")
                # (Keyed by id, the code kept alive beside its answer.)
                known = library[id(code)] = (
                    any(d in file for d in _LIBRARY_DIRS),
                    code,
                )
            if not known[0]:
                return x
        return chain[-1] if chain else None

    def _site(self, lib: Any, caller: Any) -> Any:
        """The stack of a wait's site: ``lib``'s code (or None) and the frame
        of the coroutine ``caller`` at the line it awaits, innermost first.
        Stacks are cached, so a site's stack is the same tuple each time."""
        lasti = -1
        code: Any = None
        if caller is not None:
            code = getattr(caller, "cr_code", None) or getattr(caller, "gi_code", None)
            frame = getattr(caller, "cr_frame", None) or getattr(
                caller, "gi_frame", None
            )
            if frame is not None:
                lasti = frame.f_lasti
        # By id: the cached stack holds both code objects, so their ids stay
        # theirs while it is cached (hashing code objects is slow).
        key = (id(lib), id(code), lasti)
        sites = self._sites
        stack = sites.get(key)
        if stack is None:
            if len(sites) >= SITES_MAX:
                sites.clear()  # code made at run time, over and over
            frames: list[tuple[Any, int]] = []
            if lib is not None:
                frames.append((lib, 0))
            if code is not None:
                frames.append((code, lasti))
            stack = sites[key] = tuple(frames) or None
        return stack

    def waker(self, handle: Any) -> str:
        """Names the loop callback ``handle`` as a waker: timer, io or its name."""
        if isinstance(handle, asyncio.TimerHandle):
            return "timer"
        cb = handle._callback
        if self._from_thread:
            ref = self._from_thread.pop(id(cb), None)
            if ref is not None and ref() is cb:
                return "thread"
        if type(cb) is functools.partial:
            cb = cb.func
        key = _waker_key(cb)
        wakers = self._wakers
        name = wakers.get(key)
        if name is None:
            if len(wakers) >= WAKERS_MAX:
                wakers.clear()  # code made at run time (exec, lambdas in eval)
            name = wakers[key] = _waker_name(cb)
        return name


_COROUTINE_TYPE = types.CoroutineType
_GENERATOR_TYPE = types.GeneratorType

_LIBRARY_DIRS = ("/asyncio/", "/anyio/", "/site-packages/", "/dist-packages/")
"""Where the library code that a wait's site looks past lives: asyncio,
anyio and installed packages (aiohttp's client, redis-py), so the site
names the program's line that called into them."""

SITES_MAX = 4096
"""Most wait sites' stacks cached; the cache starts over past this."""

FROM_THREAD_MAX = 1024
"""Most callbacks queued from other threads remembered at once."""

WAKERS_MAX = 4096
"""Most waker names cached; the cache starts over past this."""


def _waker_key(cb: Any) -> tuple[Any, ...]:
    """What ``_waker_name(cb)`` depends on, holding nothing ``cb`` is bound to.

    asyncio wakes from a new closure (or bound method) on every gather,
    shield or wait: keyed by the callback, the cache would keep each one
    alive, and with it the futures, children and results it refers to.
    """
    func = getattr(cb, "__func__", cb)
    owner = type(getattr(cb, "__self__", None))
    code = getattr(func, "__code__", None)
    if type(code) is CodeType:
        return (code, owner)
    # A builtin (bound) method or a callable object: named by its type.
    return (type(cb), owner, _str_attr(cb, "__qualname__"), _str_attr(cb, "__module__"))


def _str_attr(obj: Any, name: str) -> str | None:
    value = getattr(obj, name, None)
    return value if type(value) is str else None


def _waker_name(cb: Any) -> str:
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.BaseTransport | asyncio.BaseProtocol):
        return "io"
    qualname = getattr(cb, "__qualname__", None) or type(cb).__qualname__
    module = getattr(cb, "__module__", None) or ""
    if module.startswith("asyncio.selector_events") or "Transport" in qualname:
        return "io"
    if qualname.startswith(("_chain_future.", "_call_set_state", "_copy_future_state")):
        return "thread"  # a concurrent.futures result, set by its thread
    return f"callback {qualname}"
