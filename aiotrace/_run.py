"""Runs a program the way ``python script.py`` or ``python -m module`` would.

``aiotrace run`` traces an unmodified program inside its own process, so the
program must see what the interpreter would have given it: ``sys.argv``,
``sys.path[0]``, a ``__main__`` module, its exit status, and on an uncaught
exception the traceback Python prints, without aiotrace's own frames.
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.machinery import SourceFileLoader
from typing import Final

INTERRUPTED: Final = 130  # the shell's status for a program stopped by SIGINT

_OUR_MODULES: Final = frozenset({__name__, "runpy"})


class ProgramNotFound(Exception):
    """The script or module to run does not exist; the message says which."""


@dataclass
class Program:
    """Program is a script (``python script.py``) or a module (``python -m``).

    Attributes:
        target: the script's path, or the module's dotted name.
        args: the arguments after it, as the program's ``sys.argv[1:]``.
        module: whether ``target`` is a module name.
    """

    target: str
    args: list[str] = field(default_factory=list)
    module: bool = False
    interrupted: bool = field(default=False, init=False)
    """Set by ``run`` when the program ended by an uncaught KeyboardInterrupt."""

    @property
    def name(self) -> str:
        """A short name for the program: the script's stem or the module name."""
        if self.module:
            return self.target
        stem = os.path.splitext(os.path.basename(os.path.normpath(self.target)))[0]
        return stem or "program"

    def check(self) -> None:
        """Checks that the script exists, as Python does before running it.

        Raises:
            ProgramNotFound: the script cannot be opened (a module is only
                found when it runs, as with ``python -m``).
        """
        if self.module:
            if not self.target or self.target.startswith("."):
                raise ProgramNotFound(
                    f"-m needs an absolute module name, got {self.target!r}"
                )
            return
        try:
            os.stat(self.target)
        except OSError as exc:
            raise ProgramNotFound(
                f"can't open file {os.path.abspath(self.target)!r}: "
                f"[Errno {exc.errno}] {exc.strerror}"
            ) from None

    def run(self) -> int:
        """Runs the program as ``__main__`` and returns its exit status.

        An uncaught exception is printed as Python prints it (through
        ``sys.excepthook``) and gives status 1, ``KeyboardInterrupt``
        gives 130 (``INTERRUPTED``), ``SystemExit`` gives its code (a
        message is printed and gives 1).

        Raises:
            ProgramNotFound: ``-m`` of a module that cannot be found or run
                (nothing of the program ran).
        """
        _set_sys_path(self)
        try:
            if self.module:
                sys.argv = ["-m", *self.args]
                runpy.run_module(self.target, run_name="__main__", alter_sys=True)
            elif os.path.isdir(self.target) or not self.target.endswith(".py"):
                # A directory or zip with __main__.py, or a .pyc: runpy's rules.
                sys.argv = [self.target, *self.args]
                runpy.run_path(self.target, run_name="__main__")
            else:
                sys.argv = [self.target, *self.args]
                _run_source(self.target)
        except SystemExit as exc:
            return exit_status(exc)
        except BaseException as exc:
            if isinstance(exc, ImportError) and _innermost_is_ours(exc.__traceback__):
                # runpy found no module to run: nothing of the program ran.
                raise ProgramNotFound(str(exc)) from None
            self.interrupted = isinstance(exc, KeyboardInterrupt)
            return report_uncaught(exc)
        return 0


def _set_sys_path(program: Program) -> None:
    # Python puts the script's directory (symlinks resolved), or the current
    # directory for -m, first on sys.path, where aiotrace's own entry is now.
    if sys.flags.safe_path:
        return
    if program.module:
        entry = os.getcwd()
    elif os.path.isdir(program.target) or not program.target.endswith(".py"):
        entry = os.path.abspath(program.target)
    else:
        entry = os.path.dirname(os.path.realpath(program.target))
    if sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def _run_source(path: str) -> None:
    filename = os.path.abspath(path)
    with io.open_code(filename) as f:
        source = f.read()
    # dont_inherit: this module's `from __future__` flags must not leak in.
    code = compile(source, filename, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__file__ = filename
    main.__loader__ = SourceFileLoader("__main__", filename)
    main.__cached__ = None  # type: ignore[attr-defined]
    main.__builtins__ = sys.modules["builtins"]  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def exit_status(exc: SystemExit) -> int:
    """The exit status Python gives ``exc``, printing its message if it has one."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stdout.flush()
    print(code, file=sys.stderr)
    return 1


def report_uncaught(exc: BaseException) -> int:
    """Prints ``exc`` as Python prints an uncaught exception; returns the status.

    The traceback starts at the program's own outermost frame, as it would
    under ``python``; ``runpy``'s and aiotrace's frames are left out.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in _OUR_MODULES:
        tb = tb.tb_next
    exc.__traceback__ = tb
    sys.stdout.flush()
    try:
        sys.excepthook(type(exc), exc, tb)
    except BaseException:  # a broken excepthook: Python falls back, so do we
        sys.__excepthook__(type(exc), exc, tb)
    return INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1


def _innermost_is_ours(tb: types.TracebackType | None) -> bool:
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__") in _OUR_MODULES


def join_threads() -> None:
    """Waits for the program's non-daemon threads, as Python does at exit."""
    current = threading.current_thread()
    while True:
        alive = [
            t
            for t in threading.enumerate()
            if t is not current and not t.daemon and t is not threading.main_thread()
        ]
        if not alive:
            return
        for t in alive:
            t.join()


def finish_on_sigterm(finish: Callable[[], None]) -> None:
    """Makes SIGTERM call ``finish()`` (which stops the trace) before the
    process dies of it, if the program runs with SIGTERM's default action.

    The program still dies on the spot, as under ``python``: its ``finally``
    blocks do not run and its status is "killed by SIGTERM". Raising an
    exception in it instead could hang an asyncio program whose step the
    signal interrupted.
    """
    import signal

    if not hasattr(signal, "SIGTERM"):
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _terminated(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)
        try:
            finish()
        finally:
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, _terminated)


class SigintExit:
    """SigintExit makes the process die of SIGINT once it has finished
    exiting, as Python does after an uncaught KeyboardInterrupt (a shell
    then sees status 130, a parent process "killed by SIGINT").

    Made before the program runs, its ``atexit`` handler runs after the
    program's own, as Python's re-raise of SIGINT follows them; it acts only
    if ``due`` was set.
    """

    def __init__(self) -> None:
        import atexit

        self.due = False
        atexit.register(self._die)

    def _die(self) -> None:
        import signal

        if not self.due or sys.platform == "win32":
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # closed: nothing to flush
                stream.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
