"""Real programs under `aiotrace run`, real servers, and what their traces hold.

Shared by tests/realworld and bench/soak_realworld.py. Each program in
apps/ runs in its own process under ``python -m aiotrace run``, as a user
would run it; servers get a listening socket the caller bound on 127.0.0.1
(port 0), so clients may connect before the server is up and no port is
ever guessed. A trace is read once, streaming, into a ``TraceSummary``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiotrace import reader
from aiotrace.reader import CoroState, EventKind, ResourceKind

APPS = Path(__file__).resolve().parent / "apps"
"""The real programs: servers and clients."""

ANNOTATIONS = frozenset(
    (
        EventKind.TASK_BEGIN,
        EventKind.TASK_END,
        EventKind.REGION_BEGIN,
        EventKind.REGION_END,
        EventKind.LOG,
    )
)


def listening_socket() -> socket.socket:
    """A TCP socket listening on 127.0.0.1 on a free port, inheritable."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def aiotrace_run(
    trace: Path, *program: str, quiet: bool = True, options: tuple[str, ...] = ()
) -> list[str]:
    """The command that runs ``program`` under ``aiotrace run OPTIONS`` into
    ``trace`` (``quiet``: without the exit summary)."""
    q = ["-q"] if quiet else []
    run = [sys.executable, "-m", "aiotrace", "run", *q, *options]
    return [*run, "-o", str(trace), *program]


@dataclass
class Finished:
    """A program that ran to its end: its status and output."""

    returncode: int
    stdout: str
    stderr: str


@dataclass
class Exit:
    """How a server ended: its resident memory just before SIGINT, seconds
    from its SIGINT to its exit, its stderr."""

    rss_bytes: int = 0
    seconds: float = 0.0
    stderr: str = ""


@contextlib.contextmanager
def traced_server(
    trace: Path,
    script: str,
    *args: str,
    traced: bool = True,
    quiet: bool = True,
    options: tuple[str, ...] = (),
    exit: Exit | None = None,
) -> Iterator[str]:
    """Runs the server ``apps/script`` on a fresh listening socket, under
    `aiotrace run OPTIONS` unless ``traced`` is false; yields its base URL.

    On exit the server gets SIGINT, as from Ctrl-C, and must exit 0 within a
    minute (failing otherwise, with its stderr); ``exit``, if given, gets
    how long that took and the server's stderr (with ``quiet`` false, the
    exit summary).
    """
    sock = listening_socket()
    port = sock.getsockname()[1]
    fd = str(sock.fileno())
    prog = (str(APPS / script), fd, *args)
    cmd = (
        aiotrace_run(trace, *prog, quiet=quiet, options=options)
        if traced
        else [sys.executable, *prog]
    )
    proc = subprocess.Popen(
        cmd,
        pass_fds=(sock.fileno(),),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sock.close()  # the server holds its own copy
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if exit is not None and proc.poll() is None:
            import psutil

            exit.rss_bytes = psutil.Process(proc.pid).memory_info().rss
        t0 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{script} did not stop on SIGINT: {err}") from None
        if exit is not None:
            exit.seconds, exit.stderr = time.monotonic() - t0, err
    if proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}: {out}\n{err}")


def run_traced(
    trace: Path,
    script: str,
    *args: str,
    timeout: float = 120,
    under_run: bool = True,
    options: tuple[str, ...] = (),
) -> Finished:
    """Runs the client ``apps/script`` to its end: under `aiotrace run
    OPTIONS` into ``trace``, or (``under_run`` false) by itself with
    ``--trace trace``."""
    prog = (str(APPS / script), *args)
    r = subprocess.run(
        aiotrace_run(trace, *prog, options=options)
        if under_run
        else [sys.executable, *prog, "--trace", str(trace)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Finished(r.returncode, r.stdout, r.stderr)


def redis_binary() -> str | None:
    """The path of redis-server, or None."""
    return shutil.which("redis-server")


@contextlib.contextmanager
def redis_server(binary: str, workdir: Path) -> Iterator[int]:
    """Runs redis-server on 127.0.0.1 without persistence; yields its port.

    redis-server cannot take a listening socket, so a free port is asked of
    the kernel and handed over; if another process takes it first, the
    server fails to bind and the next try uses another port.
    """
    for _ in range(5):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        proc = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
                "--loglevel", "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        if _redis_answers(proc, port):
            try:
                yield port
            finally:
                proc.terminate()
                proc.communicate(timeout=30)
            return
        proc.kill()
        proc.communicate()
    raise AssertionError("redis-server did not start in 5 tries")


def _redis_answers(proc: subprocess.Popen[str], port: int) -> bool:
    """Waits until redis-server answers PING on ``port``; False if it exits."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass
class TraceSummary:
    """What one trace holds, read once from start to end."""

    problem_count: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, as text
    events: int = 0
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    annotations_without_coroutine: int = 0
    lost_events: int = 0
    loops: set[int] = field(default_factory=set)
    labels: dict[int, str] = field(default_factory=dict)
    ends: dict[int, str] = field(default_factory=dict)  # coroutine -> end reason
    blocks: collections.Counter[str] = field(default_factory=collections.Counter)
    block_funcs: collections.Counter[str] = field(default_factory=collections.Counter)
    task_types: collections.Counter[str] = field(default_factory=collections.Counter)
    tasks_ended: int = 0
    logs: collections.Counter[str] = field(default_factory=collections.Counter)

    def coroutines(self, label: str) -> list[int]:
        """The coroutines labelled ``label`` (a coroutine function's qualified
        name), in id order."""
        return sorted(c for c, lab in self.labels.items() if lab == label)

    def ended(self, label: str, reason: str = "returned") -> int:
        """How many coroutines labelled ``label`` ended for ``reason``."""
        return sum(1 for c in self.coroutines(label) if self.ends.get(c) == reason)

    def check_exact(self) -> None:
        """Asserts what every trace of a real program must hold: 0 problems,
        no lost event, every annotation event with its coroutine, exactly one
        event loop, and a reason for every block."""
        assert self.problem_count == 0, self.problems
        assert self.lost_events == 0
        assert self.annotations_without_coroutine == 0, self.brief()
        assert len(self.loops) == 1, self.brief()
        assert "" not in self.blocks, f"blocks without a reason: {self.blocks}"

    def brief(self) -> str:
        """One line: problems, events, annotation events without a coroutine."""
        return (
            f"problems={self.problem_count} events={self.events} "
            f"annotations_without_coroutine={self.annotations_without_coroutine} "
            f"lost={self.lost_events} loops={len(self.loops)} "
            f"coroutines={len(self.labels)}"
        )


def summarise(path: Path, problems_kept: int = 20) -> TraceSummary:
    """Reads and validates the trace at ``path`` in one streaming pass.

    Every problem counts in ``problem_count``; the first ``problems_kept``
    are kept as text, so that a broken long trace stays readable.
    """
    s = TraceSummary()
    validator = reader.Validator()
    with open(path, "rb") as f:
        for ev in reader.Reader(f):
            validator.check(ev)
            s.events += 1
            kind = ev.kind
            s.kinds[kind.name] += 1
            if kind in ANNOTATIONS and ev.coroutine == reader.NO_COROUTINE:
                s.annotations_without_coroutine += 1
            if kind is EventKind.SYNC:
                s.lost_events = ev.sync.lost_events
            elif kind is EventKind.LABEL:
                lab = ev.label
                if lab.resource.kind is ResourceKind.COROUTINE:
                    s.labels[lab.resource.id] = lab.label
            elif kind is EventKind.STATE_TRANSITION:
                st = ev.state_transition
                if st.resource.kind is ResourceKind.LOOP:
                    s.loops.add(st.resource.id)
                elif st.resource.kind is ResourceKind.COROUTINE:
                    if st.new is CoroState.NOT_EXIST:
                        s.ends[st.resource.id] = st.reason
                    elif st.new is CoroState.WAITING:
                        s.blocks[st.reason] += 1
                        for fr in st.stack.frames:
                            s.block_funcs[fr.func] += 1
            elif kind is EventKind.TASK_BEGIN:
                s.task_types[ev.task.type] += 1
            elif kind is EventKind.TASK_END:
                s.tasks_ended += 1
            elif kind is EventKind.LOG:
                s.logs[ev.log.category] += 1
            if validator.problems:
                for p in validator.problems:
                    s.problem_count += 1
                    if len(s.problems) < problems_kept:
                        text = str(p)
                        s.problems.append(
                            text if len(text) < 300 else text[:300] + "..."
                        )
                validator.problems.clear()  # memory stays bounded
    return s


def in_ci() -> bool:
    """Whether this runs in CI, where nothing may be skipped for want of a tool."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def drive(base: str, paths: list[str], concurrency: int) -> collections.Counter[int]:
    """Requests ``base + path`` for each of ``paths`` with an httpx client,
    ``concurrency`` at a time; returns how many answered each status."""
    import asyncio

    import httpx

    async def main() -> collections.Counter[int]:
        statuses: collections.Counter[int] = collections.Counter()
        todo = list(reversed(paths))
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def worker() -> None:
                while todo:
                    r = await client.get(base + todo.pop())
                    statuses[r.status_code] += 1

            async with asyncio.TaskGroup() as tg:
                for _ in range(concurrency):
                    tg.create_task(worker())
        return statuses

    return asyncio.run(main())
