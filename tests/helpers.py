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
