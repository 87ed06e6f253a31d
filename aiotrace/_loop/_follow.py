"""Installs a loop flavour's hooks when the program imports the flavour.

uvloop and trio are usually imported by the traced program after tracing
starts (``aiotrace run``, the pytest plugin's first test), so their hooks
cannot all be installed at ``start``. ``follow`` installs a flavour's hooks
at once if its module is already imported, and otherwise puts a finder
first on ``sys.meta_path`` that installs them right after the module's own
code has run, before ``import`` returns to the program. So ``import
uvloop``, ``from trio import run`` and anyio's lazy ``import trio`` all see
the patched module. The finder leaves at ``Hooks.uninstall``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

from ._state import Hooks

Install = Callable[[], None]


def follow(h: Hooks, flavours: dict[str, Install]) -> None:
    """Runs each ``flavours[name]`` now if module ``name`` is imported, else
    when it is first imported; errors go to ``h.fail``, never to the program."""
    waiting: dict[str, Install] = {}
    for name, install in flavours.items():
        if name in sys.modules:
            _guarded(h, name, install)
        else:
            waiting[name] = install
    if not waiting:
        return
    finder = _Finder(h, waiting)
    sys.meta_path.insert(0, finder)

    def remove() -> None:
        finder.waiting.clear()
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)

    h.on_uninstall("import hook", remove)


def _guarded(h: Hooks, name: str, install: Install) -> None:
    try:
        install()
    except Exception as exc:
        h.fail(f"{name} hooks", exc)


class _Finder:
    """_Finder finds nothing itself: for a watched module it asks the finders
    after it for the spec, and has the spec's loader install the hooks once
    the module has executed."""

    def __init__(self, h: Hooks, waiting: dict[str, Install]) -> None:
        self._h = h
        self.waiting = waiting
        self._lock = threading.Lock()
        self._local = threading.local()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        """Returns the spec the other finders give a watched module, its
        loader set to install the hooks after it runs; None otherwise."""
        if fullname not in self.waiting or getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            spec = _find_after(self, fullname, path, target)
        finally:
            self._local.busy = False
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None or "exec_module" in getattr(loader, "__dict__", {}):
            return spec
        finder = self

        def exec_then_hook(module: ModuleType) -> None:
            try:
                exec_module(module)
            finally:
                # The loader is the module's own (__loader__): leave it as it was.
                if loader.__dict__.get("exec_module") is exec_then_hook:
                    del loader.exec_module
            finder._imported(fullname)

        with contextlib.suppress(AttributeError, TypeError):  # __slots__
            loader.exec_module = exec_then_hook
        return spec

    def _imported(self, name: str) -> None:
        with self._lock:
            install = self.waiting.pop(name, None)
        if install is not None:
            _guarded(self._h, name, install)

    def invalidate_caches(self) -> None:
        """Nothing cached (``importlib.invalidate_caches`` calls this)."""


def _find_after(
    me: object,
    fullname: str,
    path: Sequence[str] | None,
    target: ModuleType | None,
) -> ModuleSpec | None:
    for finder in list(sys.meta_path):
        if finder is me:
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec: ModuleSpec | None = find(fullname, path, target)
        if spec is not None:
            return spec
    return None
