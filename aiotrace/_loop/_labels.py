"""Coroutine labels: the coroutine function's qualified name, then the task's
name if one was given, seen through libraries' wrapper coroutines.

anyio (4.16+) runs every task's coroutine inside ``TaskHandle._run_coro``
and names the task after the function (``module.qualname``): labelled
naively, every anyio task would be "TaskHandle._run_coro <name>". The label
names the coroutine the wrapper runs, and leaves out a name that only
repeats the function's.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any, Final

WRAPPERS: Final = (("/anyio/_core/_tasks.py", "TaskHandle._run_coro"),)
"""(file, qualified name) of wrapper coroutines whose ``self._coro`` is the
task's real coroutine."""

_MAX: Final = 1 << 12

# code object -> whether it is a wrapper's code.
_is_wrapper: dict[Any, bool] = {}


def coroutine_label(coro: Any, name: object) -> str:
    """The label of a task running ``coro``, named ``name`` (None: unnamed)."""
    inner = _unwrap(coro)
    qualname = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    if name is None:
        return qualname
    if inner is not coro and _is_default_name(name, qualname):
        return qualname
    return f"{qualname} {name}"


def _unwrap(coro: Any) -> Any:
    """The coroutine a wrapper coroutine runs, or ``coro`` itself.

    The wrapper's ``self`` is found among the coroutine's referents, not in
    ``cr_frame.f_locals``: before 3.13 that makes a snapshot of the locals
    that outlives the wrapper's own ``del self``, and with it the task's
    handle, its result and its exception.
    """
    code = getattr(coro, "cr_code", None)
    if code is None:
        return coro
    wrapper = _is_wrapper.get(code)
    if wrapper is None:
        wrapper = _check(code)
    if not wrapper:
        return coro
    for obj in gc.get_referents(coro):
        inner = (
            getattr(obj, "_coro", None) if type(obj).__name__ == "TaskHandle" else None
        )
        if getattr(inner, "cr_code", None) is not None:
            return inner
    return coro


def _check(code: Any) -> bool:
    filename = code.co_filename.replace(os.sep, "/")
    found = any(
        code.co_qualname == qualname and filename.endswith(where)
        for where, qualname in WRAPPERS
    )
    if len(_is_wrapper) >= _MAX:
        _is_wrapper.clear()
    _is_wrapper[code] = found
    return found


def _is_default_name(name: object, qualname: str) -> bool:
    """Whether ``name`` is the one anyio gives a task of a function called
    ``qualname`` when none is given: ``module.qualname``."""
    if not isinstance(name, str) or not name.endswith("." + qualname):
        return False
    return name[: -len(qualname) - 1] in sys.modules
