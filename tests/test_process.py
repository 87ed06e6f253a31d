"""The traced process's life: exiting without stop(), and forking."""

from __future__ import annotations

import faulthandler
import multiprocessing
import subprocess
import sys
import textwrap
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

import aiotrace
from aiotrace.reader import EventKind, read_events


def test_trace_is_finished_at_exit_without_stop(tmp_path: Path) -> None:
    """A program that starts tracing to a path and never stops still leaves a
    complete, readable trace when it exits."""
    trace = tmp_path / "t.trace"
    program = textwrap.dedent(
        f"""
        import aiotrace
        aiotrace.start({str(trace)!r})
        for i in range(1000):
            aiotrace.log("exit", str(i))
        """
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60)
    logs = [ev.log.message for ev in read_events(trace) if ev.kind is EventKind.LOG]
    assert logs == [str(i) for i in range(1000)]


def _child_report(conn: Connection) -> None:
    # A child stuck (say, on a lock some parent thread held at the fork)
    # prints where it is and exits, so that the test's failure says why.
    faulthandler.dump_traceback_later(50, exit=True)
    enabled_before = aiotrace.is_enabled()
    aiotrace.log("child", "not recorded")
    # A child may trace on its own.
    sink = aiotrace.sinks.MemorySink()
    with aiotrace.tracing(sink):
        aiotrace.log("child", "its own trace")
    messages = [ev.log.message for ev in sink.events() if ev.kind is EventKind.LOG]
    conn.send((enabled_before, messages))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork"
)
def test_forked_child_does_not_inherit_the_trace(tmp_path: Path) -> None:
    """A child forked while tracing is not tracing (the parent's threads did
    not survive the fork) and can start its own trace; the parent's trace
    goes on and holds none of the child's events."""
    trace = tmp_path / "parent.trace"
    ctx = multiprocessing.get_context("fork")
    with aiotrace.tracing(trace):
        aiotrace.log("parent", "before fork")
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_report, args=(child_conn,))
        proc.start()
        # Only the child holds the sending end now: a child that dies before
        # it reports ends the wait at once (EOFError), and one that hangs
        # fails the test with its state rather than blocking it.
        child_conn.close()
        try:
            if not parent_conn.poll(60):
                pytest.fail(f"the forked child sent nothing in 60 s: {proc!r}")
            try:
                enabled_in_child, child_messages = parent_conn.recv()
            except EOFError:
                proc.join(60)
                pytest.fail(f"the forked child died without a report: {proc!r}")
            proc.join(60)
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(60)
            parent_conn.close()
        aiotrace.log("parent", "after fork")
    assert proc.exitcode == 0
    assert enabled_in_child is False
    assert child_messages == ["its own trace"]
    logs = [ev.log.message for ev in read_events(trace) if ev.kind is EventKind.LOG]
    assert logs == ["before fork", "after fork"]
