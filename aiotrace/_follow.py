"""Following child processes: each child Python process traces itself.

``follow_children("app.trace")`` makes every child process the program
starts from now on write its own trace beside the parent's, named with its
process id: ``app.<pid>.trace``. It covers the children that
``multiprocessing`` makes (fork, spawn and forkserver start methods, so
``Pool``, ``ProcessPoolExecutor`` and uvicorn's ``--workers``) and any child
of a plain ``os.fork()`` (gunicorn's workers), and their own children in turn.

How a child starts tracing:

- fork (``os.fork`` and multiprocessing's fork): an ``os.register_at_fork``
  hook starts a fresh trace in the child, after aiotrace has forgotten the
  parent's (``_tracer._forget_in_child``).
- spawn and forkserver: the child is a new interpreter that unpickles the
  "preparation data" multiprocessing sends it before anything else. The
  parent adds one entry to it whose unpickling starts the trace; the child
  ignores the entry otherwise.

How a child finishes its trace (the file must be whole):

- at interpreter exit (``atexit``: spawn children, gunicorn workers);
- multiprocessing's fork and forkserver children leave by ``os._exit``,
  after multiprocessing's own exit function: a ``multiprocessing.util.
  Finalize`` with the lowest priority stops the trace there, last;
- SIGTERM (``Pool.terminate``, a pool's ``with`` block, daemonic children at
  the parent's exit): if the child runs with SIGTERM's default action, the
  trace is finished and the child then dies of the signal as it would have.

A child killed by SIGKILL (``ProcessPoolExecutor`` after a worker broke)
leaves a trace cut short, which aiotrace reads up to the cut.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any, Final

from . import _flight, _session, _tracer  # noqa: F401  (their fork hooks go first)
from ._sinks import MemorySink

_FINAL_PRIORITY: Final = -(2**31)
"""Our Finalize runs after every other multiprocessing finalizer."""

_config: dict[str, Any] | None = None
"""While following: {"base": absolute path, "options": start's options}."""
_child: _tracer.Tracer | None = None
"""The trace this process started as a followed child, if it did."""
_patched: bool = False
_atexit_registered: bool = False
_busy: bool = False
"""Whether the child's trace is starting or finishing (SIGTERM then waits)."""
_terminate_pending: int | None = None


class _Anchor:
    """A long-lived object for ``multiprocessing.util.register_after_fork``,
    which holds its entries by weak reference."""


_ANCHOR: Final = _Anchor()


def child_path(base: str, pid: int) -> str:
    """The trace file of child ``pid``: ``app.trace`` gives ``app.<pid>.trace``
    (a name without a suffix gets ``.<pid>``)."""
    root, ext = os.path.splitext(base)
    if not ext:
        return f"{base}.{pid}"
    return f"{root}.{pid}{ext}"


def child_traces(base: str, since_ns: int = 0) -> list[str]:
    """The child traces beside ``base`` (``app.<pid>.trace``), oldest first,
    leaving out files last changed before ``since_ns`` (wall clock, ns)."""
    directory, name = os.path.split(os.path.abspath(base))
    root, ext = os.path.splitext(name)
    if ext:
        pattern = re.compile(re.escape(root) + r"\.(\d+)" + re.escape(ext) + r"\Z")
    else:
        pattern = re.compile(re.escape(name) + r"\.(\d+)\Z")
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        if st.st_mtime_ns >= since_ns:
            found.append((st.st_mtime_ns, entry.name))
    shown = os.path.dirname(base)
    return [os.path.join(shown, n) for _, n in sorted(found)]


def follow_children(path: str | os.PathLike[str], **options: Any) -> None:
    """Makes each child process started from now on trace itself.

    A child writes ``path`` with its process id before the suffix
    (``app.trace`` gives ``app.<pid>.trace``), in the same directory
    whatever its working directory, with ``options`` (those of
    ``aiotrace.start``). It traces from its start (for spawn, before its
    ``__main__`` is imported again) to its exit. Children of children are
    followed too. Calling it again changes the path and options; the parent's
    own tracing is not affected: start it, or not, as usual.

    Raises:
        TypeError, ValueError: a bad option (checked now, not in the child).
    """
    global _config
    _tracer.Tracer(MemorySink(), **options)  # checks the options; never started
    base = os.path.abspath(os.fspath(path))
    _config = {"base": base, "options": dict(options)}
    _install()


def unfollow_children() -> None:
    """Stops following: children started from now on are not traced."""
    global _config
    _config = None


def following() -> str | None:
    """The path children's traces are named after, while following."""
    return None if _config is None else str(_config["base"])


def _install() -> None:
    global _patched
    if _patched:
        return
    _patched = True
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork)
    try:
        from multiprocessing import spawn, util
    except ImportError:  # a Python built without multiprocessing
        return
    util.register_after_fork(_ANCHOR, _arm_finalizer)
    original = spawn.get_preparation_data

    def get_preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        if _config is not None:
            data["aiotrace_follow"] = _Bootstrap(_config)
        return data

    get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
    get_preparation_data.__doc__ = original.__doc__
    spawn.get_preparation_data = get_preparation_data


# Runs in the child as it unpickles the preparation data, before the
# child's sys.path is set: aiotrace may only be importable from where the
# parent found it. Never raises: a child that cannot trace runs untraced.
_BOOT: Final = """\
try:
    import sys
    try:
        from aiotrace._follow import _start_in_child
    except ImportError:
        sys.path.append(where)
        try:
            from aiotrace._follow import _start_in_child
        finally:
            sys.path.remove(where)
    _start_in_child(config)
except Exception as exc:
    try:
        sys.stderr.write(
            "aiotrace: this child process is not traced "
            f"({type(exc).__name__}: {exc})\\n"
        )
    except Exception:
        pass
"""


class _Bootstrap:
    """Pickles as a call that starts tracing in the child that unpickles it."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def __reduce__(self) -> tuple[Any, ...]:
        where = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return (exec, (_BOOT, {"config": self.config, "where": where}))


def _after_fork() -> None:
    global _child, _busy, _terminate_pending
    # A followed child's own trace is not its forked child's (_tracer
    # forgets it the same way).
    _child, _busy, _terminate_pending = None, False, None
    if _config is not None:
        _start_in_child(_config)


def _start_in_child(config: Mapping[str, Any]) -> None:
    """Starts this child's trace (and follows its own children)."""
    global _child, _config
    if _child is not None or _tracer._current is not None:
        return  # already traced: a program that traces itself, say
    _config = dict(config)
    path = child_path(str(config["base"]), os.getpid())
    global _busy, _atexit_registered
    _busy = True  # a SIGTERM meanwhile waits for the trace to start
    _finish_on_sigterm()
    try:
        _child = _tracer.start(path, **config["options"])
    except Exception as exc:  # the child runs on, untraced
        with contextlib.suppress(Exception):
            print(f"aiotrace: {path}: not traced: {exc}", file=sys.stderr)
    finally:
        _busy = False
    _install()
    if _child is not None and not _atexit_registered:
        _atexit_registered = True
        # Runs before _tracer's own exit handler, which would stop the
        # trace without deferring a SIGTERM.
        atexit.register(finish_child)
    if _terminate_pending is not None:
        finish_child()


def finish_child() -> None:
    """Finishes this child's trace, if it is a followed child; never raises.

    A SIGTERM that came while the trace started or finished (a pool
    terminating the worker as it leaves) kills the child once it is whole.
    """
    global _child, _busy
    tracer, _child = _child, None
    if tracer is not None:
        _busy = True
        try:
            tracer.stop()
        except Exception as exc:
            with contextlib.suppress(Exception):
                print(f"aiotrace: at exit: {exc}", file=sys.stderr)
        finally:
            _busy = False
    if _terminate_pending is not None:
        _real_signal(_terminate_pending, signal.SIG_DFL)
        os.kill(os.getpid(), _terminate_pending)


def _arm_finalizer(_anchor: object) -> None:
    """In a multiprocessing child (after multiprocessing cleared the
    finalizers it inherited): finish the trace as the child leaves, after
    every other finalizer, since it leaves by ``os._exit``."""
    if _child is None:
        return
    from multiprocessing import util

    util.Finalize(None, finish_child, exitpriority=_FINAL_PRIORITY)


def _finish_on_sigterm() -> None:
    """SIGTERM, if it would kill the child (or would run the parent's
    ``aiotrace run`` handler, inherited through fork), finishes the trace
    first; the child then dies of the signal as it would have.

    The program may set SIGTERM back to its default later (gunicorn's
    uvicorn worker does, then re-raises the SIGTERM it caught to die of
    it): while the trace runs, ``signal.signal`` and ``signal.getsignal``
    are wrapped so that the default stays "finish the trace, then die",
    and the program still sees ``SIG_DFL``.
    """
    global _wrapped
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return
    if not _wrapped:
        _wrapped = True
        signal.signal = _signal
        signal.getsignal = _getsignal
    current = _real_getsignal(signal.SIGTERM)
    if current is signal.SIG_DFL or getattr(current, "_aiotrace", False):
        _real_signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, frame: object) -> None:
    """The child's SIGTERM handler in place of the default action."""
    global _terminate_pending
    if _busy:  # interrupted a start or a finish: die once it is done
        _terminate_pending = signum
        return
    _real_signal(signum, signal.SIG_DFL)
    try:
        finish_child()
    finally:
        os.kill(os.getpid(), signum)


_real_signal: Final = signal.signal
_real_getsignal: Final = signal.getsignal
_wrapped = False


@functools.wraps(_real_signal)
def _signal(signalnum: int, handler: Any) -> Any:
    if signalnum == signal.SIGTERM and handler is signal.SIG_DFL and _child is not None:
        handler = _terminated
    previous = _real_signal(signalnum, handler)
    return signal.SIG_DFL if previous is _terminated else previous


@functools.wraps(_real_getsignal)
def _getsignal(signalnum: int) -> Any:
    handler = _real_getsignal(signalnum)
    return signal.SIG_DFL if handler is _terminated else handler
