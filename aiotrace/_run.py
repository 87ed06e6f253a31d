"""Runs a program the way ``python script.py`` or ``python -m module`` would.

``aiotrace run`` traces an unmodified program inside its own process, so the
program must see what the interpreter would have given it: ``sys.argv``,
``sys.path[0]``, a ``__main__`` module, its exit status, and on an uncaught
exception the traceback Python prints, without aiotrace's own frames.
"""

from __future__ import annotations

import io
import os
import runpy
import shlex
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.machinery import SourceFileLoader
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .reader import Stack

INTERRUPTED: Final = 130  # the shell's status for a program stopped by SIGINT

_OUR_MODULES: Final = frozenset({__name__, "runpy"})


class ProgramNotFound(Exception):
    """The script or module to run does not exist; the message says which."""


@dataclass(frozen=True)
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
        gives 130, ``SystemExit`` gives its code (a message is printed
        and gives 1).
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
    An ImportError raised by runpy itself (``-m`` of a missing module)
    is one line, as Python prints it.
    """
    tb = exc.__traceback__
    if isinstance(exc, ImportError) and _innermost_is_ours(tb):
        sys.stdout.flush()
        print(f"aiotrace run: {exc}", file=sys.stderr)
        return 1
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


def summary(path: str, *, stall_threshold: float | None) -> str:
    """The few lines ``aiotrace run`` prints at exit about the trace in ``path``.

    They name the file, count its events, list the loop stalls (the
    longest first, each with where it blocked) and the slowest task types.
    """
    from . import analysis
    from .analysis import format_duration as _duration
    from .reader import TraceError

    try:
        s = analysis.analyze(path)
    except (OSError, TraceError) as exc:
        return f"aiotrace: trace written to {path}; cannot summarise it: {exc}"
    lines = [
        f"aiotrace: trace written to {path} "
        f"({s.events:,} events, {_duration(s.duration_ns)})"
    ]
    if s.lost_events:
        lines.append(
            f"aiotrace: {s.lost_events:,} events were lost (the sink fell behind)"
        )
    if s.truncated:
        lines.append(f"aiotrace: the trace is truncated: {s.truncated}")
    if stall_threshold is None:
        lines.append("aiotrace: stall detection was off")
    elif not s.stalls:
        lines.append(f"aiotrace: no loop stalls (threshold {stall_threshold:g} s)")
    else:
        n = len(s.stalls)
        lines.append(
            f"aiotrace: {n} loop stall{'s' if n != 1 else ''} "
            f"(threshold {stall_threshold:g} s){', longest first' if n > 1 else ''}:"
        )
        longest = sorted(s.stalls, key=lambda st: -st.duration_ns)
        for st in longest[:_TOP]:
            where = _where(st.folded()[0][0]) if st.samples else "no stack sampled"
            who = f" in coroutine {st.coroutine_name}" if st.coroutine_name else ""
            lines.append(f"  {_duration(st.duration_ns):>9}  {where}{who}")
        if n > _TOP:
            lines.append(f"  ... and {n - _TOP} more")
    finished = [(name, d) for name, d in s.tasks.items() if d.count]
    if finished:
        lines.append("aiotrace: slowest task types (by p90):")
        finished.sort(key=lambda item: -item[1].p90)
        for name, d in finished[:_TOP]:
            lines.append(
                f"  {name}: {d.count} done, p50 {_duration(d.p50)}, "
                f"p90 {_duration(d.p90)}, max {_duration(d.max_ns)}"
            )
    q = shlex.quote(path)
    html = shlex.quote(os.path.splitext(path)[0] + ".html")
    lines.append(
        f"aiotrace: more with `aiotrace stats {q}`, `aiotrace stalls {q}` "
        f"or `aiotrace report {q} -o {html}`"
    )
    return "\n".join(lines)


_TOP: Final = 3


def _where(stack: Stack) -> str:
    """The innermost frame of ``stack``, and the program's own frame nearest
    to it when the innermost is in the standard library or a package."""
    frames = stack.frames
    if not frames:
        return "no stack sampled"
    inner = frames[0]
    text = f"{inner.func} ({os.path.basename(inner.file)}:{inner.line})"
    if _is_library(inner.file):
        for f in frames[1:]:
            if not _is_library(f.file):
                text += f" called from {f.func} ({os.path.basename(f.file)}:{f.line})"
                break
    return text


def _is_library(file: str) -> bool:
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return file.startswith("<") or any(file.startswith(r + os.sep) for r in roots)


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
