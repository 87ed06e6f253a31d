"""Shared fixtures: every test starts and ends with tracing off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import aiotrace


@pytest.fixture(autouse=True)
def _tracing_off() -> Iterator[None]:
    assert not aiotrace.is_enabled(), "a previous test left tracing on"
    yield
    if aiotrace.is_enabled():
        try:
            aiotrace.stop()
        finally:
            pytest.fail("the test left tracing on")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Runs each anyio test on asyncio and on trio."""
    return str(request.param)
