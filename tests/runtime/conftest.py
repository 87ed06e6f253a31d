"""Fixtures of the execution tracer's tests: where traces go, and which loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from programs import FLAVOURS


@pytest.fixture
def trace_path(tmp_path: Path) -> Path:
    """A fresh path for one trace file."""
    return tmp_path / "runtime.trace"


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """The loop flavour: "plain" asyncio, or "eager" tasks (3.12+)."""
    return str(request.param)
