"""Fixtures of the tests on real programs: redis-server, and where traces go.

The servers and clients themselves live in apps/ and run in processes of
their own under `aiotrace run` (see realprograms.py); this pytest process
only loads them and reads their traces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from realprograms import in_ci, redis_binary, redis_server


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    """A fresh path for one trace file."""
    return tmp_path / "program.trace"


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    """A real redis-server on 127.0.0.1 without persistence, for this test;
    its port. Skipped if redis-server is not installed, except in CI (CI=true),
    where a missing server fails."""
    binary = redis_binary()
    if binary is None:
        if in_ci():
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        pytest.skip("redis-server is not installed")
    with redis_server(binary, tmp_path) as port:
        yield port
