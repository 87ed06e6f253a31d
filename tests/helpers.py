"""Small helpers shared by the tests."""

from __future__ import annotations

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
