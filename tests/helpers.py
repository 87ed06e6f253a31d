"""Small helpers shared by the tests."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

MIN_BUFFER = 64 << 10
"""The smallest max_buffer_bytes the tracer accepts."""


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Polls ``cond`` until it holds; fails (never hangs) if it does not."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def aiotrace_cli(
    *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m aiotrace ARGS`` (``stdin`` its input); returns the
    completed process with stdout and stderr decoded."""
    r = subprocess.run(
        [sys.executable, "-m", "aiotrace", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )
    return subprocess.CompletedProcess(
        r.args, r.returncode, r.stdout.decode(), r.stderr.decode()
    )


class StuckFile:
    """A binary file whose writes wait until ``released`` is set."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.writing = threading.Event()
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.writing.set()
        if not self.released.wait(60):
            raise OSError(errno.ETIMEDOUT, "the test never released the sink")
        self.data += data
        return len(data)


def hold_until_sampled(n: int, timeout: float = 60.0) -> None:
    """Holds the calling thread's event loop (a stall, if it lasts past the
    threshold) until the stall watchdog has taken ``n`` stack samples of it;
    at least ``n`` samples then fall inside the stall's range. The stall
    lasts as long as the watchdog needs, however loaded the machine: tests
    wait on the samples, not on a duration.

    White-box: it reads the running trace's watchdog. Samples taken here name
    this function (innermost), called from the stalling code."""
    from aiotrace import _session

    session = _session.current()
    assert session is not None and session.runtime is not None, "not tracing"
    watchdog = session.runtime._watchdog
    assert watchdog is not None, "no watchdog: stall detection is off"
    samples, ident = watchdog._samples, threading.get_ident()
    deadline = time.monotonic() + timeout
    # One more than asked: the n-th sample's time is taken before the
    # watchdog counts the next one, so all n are inside the range.
    while samples.get(ident, 0) <= n:
        if time.monotonic() > deadline:
            raise AssertionError(f"the watchdog took no {n} samples in {timeout} s")
        time.sleep(0.001)


def hold_until_metrics_posted(timeout: float = 60.0) -> None:
    """Holds the calling thread's running asyncio loop until the metric
    sampler has posted its per-loop callback to it (the callback then runs
    once the caller yields); fails after ``timeout``.

    White-box: it looks for the sampler's ``_on_loop`` handle in the loop's
    ready queue (asyncio's own loop only)."""
    import asyncio

    ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while not any(
        getattr(getattr(h, "_callback", None), "__name__", "") == "_on_loop"
        for h in list(ready)
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"no metric sample posted in {timeout} s")
        time.sleep(0.001)
