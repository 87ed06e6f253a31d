"""Tracepoints and probes (go123 ``tracing``): trace events that cost one check.

A tracepoint is declared by decorating a stub; the stub's signature is the
event's payload and its body never runs. The decorator returns a new
function with the stub's exact signature whose whole body, when nothing is
attached, is one attribute check: ``if point.probes: point.fire(...)``. It
is compiled once per tracepoint, as ``dataclasses`` compiles ``__init__``:
such a call costs 1.6-2.2 times an empty function call, where an object
with ``__call__`` costs 3.8-5.2 times and a closure taking ``*args`` 2.8-3.5
times (``bench/bench_probe.py``).

Invariant: ``_Point.probes`` is an immutable tuple, replaced whole under
``_lock`` on attach and detach. A firing reads it once, so attach and
detach are safe while other threads and coroutines fire, and never block
them.
"""

from __future__ import annotations

import contextlib
import inspect
import keyword
import threading
import traceback
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from types import ModuleType, TracebackType
from typing import Any, Final, ParamSpec, Protocol, cast, overload

from . import _recorder
from ._context import current_task_var
from ._errors import TracingWarning
from ._format.spec import C
from ._recorder import capture_stack
from ._task import BACKGROUND_TASK

P = ParamSpec("P")

PROBE_ERROR: Final = "aiotrace/probe"
"""The log category under which a failing probe is recorded while tracing."""

_LOG: Final = C["Log"]
_clock = _recorder.clock
_lock = threading.Lock()
"""Serialises attach and detach (go123's ``tracing.Lock``); firing never takes it."""

_declared: weakref.WeakValueDictionary[str, Callable[..., Any]] = (
    weakref.WeakValueDictionary()
)
"""Every tracepoint function by name, in declaration order, for listing."""


class Tracepoint(Protocol[P]):
    """Tracepoint is a declared trace event: calling it fires the event.

    ``@probe.tracepoint`` on a ``def`` stub makes one. Calling it runs the
    attached probes, in attach order, synchronously in the caller; with no
    probe attached it costs one attribute check inside a function call.
    """

    @property
    def name(self) -> str:
        """The tracepoint's qualified name, ``module.qualname``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Fires the event: runs every attached probe with these arguments."""

    def attach(self, fn: Callable[P, object], group: ProbeGroup | None = None) -> Probe:
        """Attaches ``fn`` as a probe, after those already attached."""

    def probes(self) -> tuple[Probe, ...]:
        """Returns the attached probes, in the order they run."""


class AsyncTracepoint(Protocol[P]):
    """AsyncTracepoint is a tracepoint that may suspend: ``await`` its call.

    ``@probe.tracepoint`` on an ``async def`` stub makes one. Awaiting it
    runs the attached probes in attach order; a probe that is a coroutine
    function is awaited, so it can pause the firing coroutine (as
    ``aiotrace.tracetest`` does). With no probe attached, awaiting it
    suspends nothing and costs one attribute check more than awaiting an
    empty ``async def``.
    """

    @property
    def name(self) -> str:
        """The tracepoint's qualified name, ``module.qualname``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[None]:
        """Fires the event; the returned awaitable runs the probes."""

    def attach(self, fn: Callable[P, object], group: ProbeGroup | None = None) -> Probe:
        """Attaches ``fn`` (a function or a coroutine function) as a probe."""

    def probes(self) -> tuple[Probe, ...]:
        """Returns the attached probes, in the order they run."""


class Probe:
    """Probe is one function attached to a tracepoint; ``detach`` removes it."""

    __slots__ = ("_point", "fn")

    def __init__(self, point: _Point, fn: Callable[..., object]) -> None:
        self.fn = fn
        """The function the tracepoint calls."""
        # Invariant: None exactly when the probe is not in _point.probes.
        self._point: _Point | None = point

    @property
    def attached(self) -> bool:
        """Whether the probe is still attached."""
        return self._point is not None

    def detach(self) -> None:
        """Detaches the probe; detaching it again does nothing.

        A firing already under way in another thread may still call it once.
        """
        with _lock:
            point = self._point
            if point is None:
                return
            point.probes = tuple(p for p in point.probes if p is not self)
            self._point = None

    def __repr__(self) -> str:
        where = "detached" if self._point is None else f"on {self._point.name}"
        return f"<Probe {_describe(self.fn)} {where}>"


class ProbeGroup:
    """ProbeGroup keeps probes together so that ``done`` detaches them all.

    Pass it to ``attach(fn, group=g)`` or ``add`` a probe; ``done()`` (or the
    end of a ``with g:`` block) detaches every probe in the group. The group
    may be used again afterwards.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probes: list[Probe] = []

    def add(self, p: Probe) -> None:
        """Adds a probe to the group."""
        with self._lock:
            self._probes.append(p)

    def done(self) -> None:
        """Detaches every probe in the group and empties it."""
        with self._lock:
            probes, self._probes = self._probes, []
        for p in probes:
            p.detach()

    def __len__(self) -> int:
        return len(self._probes)

    def __enter__(self) -> ProbeGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.done()


class _Point:
    """_Point is a tracepoint's state; the tracepoint function reads ``probes``."""

    __slots__ = ("format", "is_async", "name", "params", "probes", "record", "short")

    def __init__(self, stub: Callable[..., Any], *, is_async: bool, record: bool):
        self.name: str = f"{stub.__module__}.{stub.__qualname__}"
        self.short: str = stub.__name__
        self.is_async = is_async
        self.record = record
        self.probes: tuple[Probe, ...] = ()
        self.params: tuple[str, ...] = tuple(
            p.name
            for p in inspect.signature(stub).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        # For record=True: one str.format call makes the usual message.
        self.format = ", ".join(f"{n}={{!r}}" for n in self.params).format

    def attach(
        self, fn: Callable[..., object], group: ProbeGroup | None = None
    ) -> Probe:
        if not callable(fn):
            raise TypeError(f"a probe must be callable, not {type(fn).__name__}")
        if not self.is_async and inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{self.name} is a sync tracepoint: nothing would await the "
                f"coroutine function {_describe(fn)}; declare the tracepoint "
                "with `async def` to attach coroutine functions"
            )
        p = Probe(self, fn)
        with _lock:
            self.probes = (*self.probes, p)
        if group is not None:
            group.add(p)
        return p

    # The stack skips and stack levels below count the frames up to the code
    # that fired: this method, then the tracepoint function, then that code.

    def fire(self, *args: Any, **kwargs: Any) -> None:
        """Runs a sync tracepoint's probes, in attach order."""
        if self.record:
            self._record(args, kwargs, 3)
        for p in self.probes:
            if p._point is None:  # detached by an earlier probe, or a thread
                continue
            try:
                p.fn(*args, **kwargs)
            except Exception as exc:
                self._failed(p, exc, 4)

    async def fire_async(self, *args: Any, **kwargs: Any) -> None:
        """Runs an async tracepoint's probes, awaiting what they return."""
        if self.record:
            self._record(args, kwargs, 3)
        for p in self.probes:
            if p._point is None:
                continue
            try:
                result = p.fn(*args, **kwargs)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self._failed(p, exc, 4)

    def _record(self, args: tuple[Any, ...], kwargs: dict[str, Any], skip: int) -> None:
        rec = _recorder.active
        if rec is None:
            return
        task = current_task_var.get()
        try:
            events = rec._local.events  # as aiotrace.log does
        except AttributeError:
            events = rec.events()
        events.append(
            (
                _LOG,
                _clock(),
                BACKGROUND_TASK if task is None else task.id,
                self.name,
                self._message(args, kwargs),
                capture_stack(skip) if rec.stacks else None,
            )
        )

    def _message(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        names = self.params
        if not kwargs and len(args) == len(names):
            try:
                return self.format(*args)
            except Exception:
                pass  # a broken __repr__: the careful way below
        parts = [
            f"{names[i]}={_repr(a)}" if i < len(names) else _repr(a)
            for i, a in enumerate(args)
        ]
        parts += [f"{k}={_repr(v)}" for k, v in kwargs.items()]
        return ", ".join(parts)

    def _failed(self, p: Probe, exc: Exception, stacklevel: int) -> None:
        p.detach()
        where = ""
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            where = f" at {last.filename}:{last.lineno} in {last.name}"
        message = (
            f"probe {_describe(p.fn)} on tracepoint {self.name} raised "
            f"{type(exc).__name__}: {exc}{where}; it is detached and the traced "
            "code goes on"
        )
        rec = _recorder.active
        if rec is not None:
            task = current_task_var.get()
            task_id = BACKGROUND_TASK if task is None else task.id
            rec.events().append((_LOG, _clock(), task_id, PROBE_ERROR, message, None))
        # With warnings as errors this would raise into the traced code.
        with contextlib.suppress(Exception):
            warnings.warn(f"aiotrace: {message}", TracingWarning, stacklevel=stacklevel)


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break the traced code
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else repr(fn)


def _compile(stub: Callable[..., Any], point: _Point) -> Callable[..., Any]:
    """Returns the tracepoint function: ``stub``'s signature, a one-check body."""
    sig = inspect.signature(stub, follow_wrapped=False)
    taken = set(sig.parameters)

    def free(name: str) -> str:
        while name in taken:
            name += "_"
        return name

    s, rec = free("_point"), free("_recorder")
    params: list[str] = []
    call: list[str] = []
    star = False
    kinds = [p.kind for p in sig.parameters.values()]
    for i, p in enumerate(sig.parameters.values()):
        # Placeholders only; the stub's own defaults are copied afterwards.
        default = "=None" if p.default is not p.empty else ""
        if p.kind is p.VAR_POSITIONAL:
            params.append(f"*{p.name}")
            call.append(f"*{p.name}")
            star = True
        elif p.kind is p.VAR_KEYWORD:
            params.append(f"**{p.name}")
            call.append(f"**{p.name}")
        elif p.kind is p.KEYWORD_ONLY:
            if not star:
                params.append("*")
                star = True
            params.append(p.name + default)
            call.append(f"{p.name}={p.name}")
        else:
            params.append(p.name + default)
            call.append(p.name)
        if p.kind is p.POSITIONAL_ONLY and (
            i + 1 == len(kinds) or kinds[i + 1] is not p.POSITIONAL_ONLY
        ):
            params.append("/")
    check = f"{s}.probes"
    if point.record:
        check += f" or {rec}.active is not None"
    name = stub.__name__
    if not name.isidentifier() or keyword.iskeyword(name):
        name = "tracepoint"
    # An async tracepoint is itself a coroutine function: awaiting a new
    # coroutine is cheaper than awaiting any object with __await__.
    if point.is_async:
        define, fire = "async def", f"await {s}.fire_async"
    else:
        define, fire = "def", f"{s}.fire"
    source = (
        f"def __make({s}, {rec}):\n"
        f"    {define} {name}({', '.join(params)}):\n"
        f"        if {check}:\n"
        f"            {fire}({', '.join(call)})\n"
        f"    return {name}\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<tracepoint {point.name}>", "exec"), namespace)
    fn: Any = namespace["__make"](point, _recorder)
    fn.__defaults__ = stub.__defaults__
    fn.__kwdefaults__ = stub.__kwdefaults__
    fn.__code__ = fn.__code__.replace(co_qualname=stub.__qualname__)
    return cast(Callable[..., Any], fn)


class _Declare(Protocol):
    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, None]], /
    ) -> AsyncTracepoint[P]: ...
    @overload
    def __call__(self, fn: Callable[P, None], /) -> Tracepoint[P]: ...


@overload
def tracepoint(fn: Callable[P, Coroutine[Any, Any, None]], /) -> AsyncTracepoint[P]: ...
@overload
def tracepoint(fn: Callable[P, None], /) -> Tracepoint[P]: ...
@overload
def tracepoint(*, record: bool = False) -> _Declare: ...
def tracepoint(fn: Any = None, /, *, record: bool = False) -> Any:
    """Declares a tracepoint: the decorated stub's signature is the event's payload.

    ::

        @probe.tracepoint
        def trace_hello(who: str) -> None: ...  # calling trace_hello fires

        @probe.tracepoint(record=True)  # also a LOG in the trace, while tracing
        async def trace_fill(key: str) -> None: ...  # `await trace_fill(k)`

    The stub's body never runs. A ``def`` stub makes a ``Tracepoint``, whose
    probes are plain functions; an ``async def`` stub makes an
    ``AsyncTracepoint``, which callers ``await`` and whose probes may be
    coroutine functions that suspend the firing coroutine.

    With ``record=True``, each firing while tracing is on is also recorded
    as a LOG: the category is the tracepoint's ``name``, the message its
    arguments (``who='bob'``). That costs a second check when nothing is
    attached, and a ``repr`` of each argument while tracing.
    """

    def declare(stub: Any) -> Any:
        if not inspect.isfunction(stub):
            raise TypeError(
                f"@tracepoint decorates a def or async def, not {type(stub).__name__}"
            )
        is_async = inspect.iscoroutinefunction(stub)
        point = _Point(stub, is_async=is_async, record=record)
        fire = _compile(stub, point)
        fire.__module__ = stub.__module__
        fire.__name__ = stub.__name__
        fire.__qualname__ = stub.__qualname__
        fire.__doc__ = stub.__doc__
        fire.__annotations__ = dict(stub.__annotations__)
        fire.__wrapped__ = stub  # type: ignore[attr-defined]
        fire.name = point.name  # type: ignore[attr-defined]
        fire.attach = point.attach  # type: ignore[attr-defined]
        fire.probes = lambda: point.probes  # type: ignore[attr-defined]
        fire._aiotrace_point = point  # type: ignore[attr-defined]
        _declared[point.name] = fire
        return fire

    if fn is None:
        return declare
    return declare(fn)


def point_of(tp: object) -> _Point:
    """Returns a tracepoint's state; TypeError if ``tp`` is no tracepoint."""
    point = getattr(tp, "_aiotrace_point", None)
    if not isinstance(point, _Point):
        raise TypeError(f"{tp!r} is not a tracepoint (see @probe.tracepoint)")
    return point


def tracepoints(
    module: str | ModuleType,
) -> list[Tracepoint[...] | AsyncTracepoint[...]]:
    """Returns the tracepoints ``module`` declares, in declaration order.

    ``module`` is a module or its name; a name is imported first. Only
    tracepoints declared in the module count, not those it imports.
    """
    if isinstance(module, str):
        import importlib

        module = importlib.import_module(module)
    name = module.__name__
    return [
        cast(Any, tp)
        for tp in list(_declared.values())
        if getattr(tp, "__module__", None) == name
    ]


def describe(tp: object) -> str:
    """Returns one line describing a tracepoint: name, payload and options."""
    point = point_of(tp)
    sig = inspect.signature(cast(Callable[..., Any], tp))
    # Annotations are often strings (`from __future__ import annotations`):
    # show them as written, without quotes.
    params = [
        p.replace(annotation=_Written(p.annotation))
        if isinstance(p.annotation, str)
        else p
        for p in sig.parameters.values()
    ]
    text = f"{point.name}{sig.replace(parameters=params, return_annotation=sig.empty)}"
    options = [
        o for o, on in (("async", point.is_async), ("record", point.record)) if on
    ]
    return f"{text}  [{', '.join(options)}]" if options else text


class _Written(str):
    """_Written is an annotation string that formats as written."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)
