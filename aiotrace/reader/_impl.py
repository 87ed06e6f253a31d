"""Which implementation of the per-event loops a new Reader uses: C or Python.

The C extension (``_cdecode``, built from ``_cdecode.c`` when a compiler is
at hand) is the twin of the pure-Python loops in ``_decode`` and ``_typed``:
same events, same errors. It is used when it was built, unless the
environment variable ``AIOTRACE_PURE_PYTHON`` is set to a non-empty value
other than ``0`` when the reader is first imported.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

C: Any = None
"""The set-up ``_cdecode`` module new Readers use, or None (pure Python)."""

_built: ModuleType | None = None


def _load() -> ModuleType | None:
    try:
        from . import _cdecode
    except ImportError:
        return None
    return _cdecode


def implementation() -> str:
    """Returns which implementation new Readers use: ``"c"`` or ``"python"``.

    ``"c"`` when aiotrace's C extension was built at install time and the
    environment variable ``AIOTRACE_PURE_PYTHON`` was unset (or empty, or
    ``0``) when ``aiotrace.reader`` was imported; ``"python"`` otherwise.
    Both read every trace the same way, event for event and error for
    error; the C one is about twice as fast.
    """
    return "python" if C is None else "c"


def available() -> bool:
    """Returns whether the C extension was built (whatever is in use)."""
    return _built is not None


def use(name: str) -> None:
    """Makes new Readers use ``name`` ("c" or "python"): for tests.

    Raises:
        RuntimeError: "c" was asked for and the extension was not built.
    """
    global C
    if name == "python":
        C = None
    elif name == "c":
        if _built is None:
            raise RuntimeError("aiotrace's C extension (_cdecode) is not built")
        C = _built
    else:
        raise ValueError(f"no implementation {name!r}; use 'c' or 'python'")


def _setup(mod: ModuleType) -> None:
    # Everything the C loops need to know about the format and the model
    # comes from here, so the two twins cannot drift apart on the tables.
    from .._format.spec import BY_CODE, BY_NAME, STEPS, SYNC, Arg
    from . import _model as m
    from ._decode import _ENUMS, STEP_END
    from ._typed import LOST_METRIC, MAX_OPEN_TASKS, handler_names

    kinds = {Arg.INT: 0, Arg.STRING: 1, Arg.STACK: 2, Arg.NUMBER: 3}
    specs: list[Any] = [None] * (max(BY_CODE) + 1)
    for code, spec in BY_CODE.items():
        if code == SYNC:
            continue
        arg_kinds, limits = [], []
        for argname, kind in spec.args:
            valid = _ENUMS.get((spec.name, argname))
            if valid is not None:
                assert valid.start == 0
                assert valid.step == 1
                arg_kinds.append(4)
                limits.append(valid.stop)
            else:
                arg_kinds.append(kinds[kind])
                limits.append(0)
        end = BY_NAME[STEPS[spec.name][1]].code + STEP_END if spec.name in STEPS else -1
        specs[code] = (tuple(arg_kinds), tuple(limits), end)
    for enum in (m.ResourceKind, m.CoroState, m.LoopState):
        assert [int(v) for v in enum] == list(range(len(enum)))  # indexed by value
    k = m.EventKind
    mod.setup(
        Event=m.Event,
        Metric=m.Metric,
        Label=m.Label,
        Range=m.Range,
        Task=m.Task,
        Region=m.Region,
        Log=m.Log,
        StateTransition=m.StateTransition,
        ResourceID=m.ResourceID,
        METRIC=k.METRIC,
        LABEL=k.LABEL,
        STACK_SAMPLE=k.STACK_SAMPLE,
        RANGE_BEGIN=k.RANGE_BEGIN,
        RANGE_ACTIVE=k.RANGE_ACTIVE,
        RANGE_END=k.RANGE_END,
        TASK_BEGIN=k.TASK_BEGIN,
        TASK_END=k.TASK_END,
        REGION_BEGIN=k.REGION_BEGIN,
        REGION_END=k.REGION_END,
        LOG=k.LOG,
        STATE_TRANSITION=k.STATE_TRANSITION,
        NO_STACK=m.NO_STACK,
        NO_COROUTINE=m.NO_COROUTINE,
        NO_LOOP=m.NO_LOOP,
        NO_TASK=m.NO_TASK,
        LOST_METRIC=LOST_METRIC,
        resource_kinds=tuple(m.ResourceKind),
        coro_states=tuple(m.CoroState),
        loop_states=tuple(m.LoopState),
        MAX_OPEN_TASKS=MAX_OPEN_TASKS,
        specs=specs,
        handlers=handler_names(),
    )


def init() -> None:
    """Loads and sets up the extension; called once the reader is imported."""
    global C, _built
    mod = _load()
    if mod is not None:
        _setup(mod)
        _built = mod
    pure = os.environ.get("AIOTRACE_PURE_PYTHON", "")
    C = None if pure not in ("", "0") else _built
