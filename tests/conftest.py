"""Shared fixtures: every test starts and ends with tracing off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import aiotrace
from aiotrace._context import current_task_var, regions_var


@pytest.fixture(autouse=True)
def _tracing_off() -> Iterator[None]:
    assert not aiotrace.is_enabled(), "a previous test left tracing on"
    # A test that makes a task current without `with` (as Go's NewTask does)
    # must not hand it to the next test, which runs in the same context.
    task_token = current_task_var.set(None)
    regions_token = regions_var.set(())
    yield
    current_task_var.reset(task_token)
    regions_var.reset(regions_token)
    if aiotrace.is_enabled():
        try:
            aiotrace.stop()
        finally:
            pytest.fail("the test left tracing on")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Runs each anyio test on asyncio and on trio."""
    return str(request.param)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    # Our tests start traces of their own, which `pytest --aiotrace=DIR`
    # cannot also trace: tell the plugin to leave them alone.
    if config.pluginmanager.hasplugin("aiotrace"):
        for item in items:
            item.add_marker(pytest.mark.aiotrace(off=True))
