"""Shared fixtures: every test starts and ends with tracing off."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

import aiotrace
from aiotrace._context import current_task_var, regions_var


def pytest_configure(config: pytest.Config) -> None:
    """SIGINT back to Python's default if the suite was started with it
    ignored (as a non-interactive shell starts a background job): ignored
    signals stay ignored across exec, and the programs the tests interrupt
    with SIGINT would never see it (they hang until the tests time out)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Hypothesis's deadline and its too_slow health check time each example by
# the wall clock: on a busy machine a descheduled example fails them (as
# "Unreliable test timings" or "too slow"), which says nothing about the
# code. The tests' own bounds are pytest-timeout's 120 s.
settings.register_profile(
    "aiotrace", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("aiotrace")


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


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Says plainly what a run did not check: the browser test skipped (no
    Chromium or playwright; CI sets AIOTRACE_REQUIRE_BROWSER=1 and fails
    instead), and the eager-task tests skipped on Python 3.11 (CI runs 3.12
    and 3.13 too)."""
    skipped = terminalreporter.stats.get("skipped", [])
    browser = [r for r in skipped if "test_report_browser" in r.nodeid]
    eager = [r for r in skipped if "eager" in str(r.longrepr)]
    if not (browser or eager):
        return
    terminalreporter.section("not checked by this run", sep="=", yellow=True)
    if browser:
        terminalreporter.line(
            f"{len(browser)} browser test(s) SKIPPED: the HTML report was not "
            "rendered in Chromium (install chromium and playwright; CI sets "
            "AIOTRACE_REQUIRE_BROWSER=1, which makes this a failure)",
            yellow=True,
        )
    if eager:
        terminalreporter.line(
            f"{len(eager)} eager-task test(s) SKIPPED: Python {sys.version_info[0]}."
            f"{sys.version_info[1]} has no eager tasks (CI runs 3.12 and 3.13 too)",
            yellow=True,
        )
