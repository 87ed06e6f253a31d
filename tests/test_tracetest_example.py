"""examples/tracetest_example.py: verify finds the cache's fill race, and the
fixed cache passes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from aiotrace import tracetest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tracetest_example.py"


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    """The example, imported as a module."""
    spec = importlib.util.spec_from_file_location("tracetest_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.mark.asyncio
async def test_the_race_is_hidden_without_delays(example: ModuleType) -> None:
    """A single run of the scenario passes even with the racy cache: bob
    arrives after alice's load is done."""
    await tracetest.run(example.scenario(example.RacyCache), timeout=example.TIMEOUT)


@pytest.mark.asyncio
async def test_verify_finds_the_racy_fill(example: ModuleType) -> None:
    """verify fails the racy cache: delaying the database's load for alice
    lets bob miss too. The failure names the delayed event, shows that the
    load the test accepted was bob's, and lists alice's second load and
    bob's value from it as paused."""
    with pytest.raises(tracetest.Failure) as failure:
        await tracetest.verify(
            example.scenario(example.RacyCache),
            timeout=example.TIMEOUT,
            delay=example.DELAY,
        )
    text = str(failure.value)
    assert text.startswith(
        "tracetest.verify: 1 of 3 runs with one event delayed by 0.2 s failed"
    )
    assert (
        "delay@0: delaying event #0 (db: Load(key='k'), from task 'alice') "
        "made the run fail:" in text
    )
    assert "the test waited for an event on stream 'alice'" in text
    assert "Accepted so far (1):\n      db: Load(key='k'), from task 'bob'" in text
    assert "db: Load(key='k'), from task 'alice' [sent, not received]" in text
    assert "Served(client='bob', key='k', value='k:v2')" in text


@pytest.mark.asyncio
async def test_the_fixed_cache_passes_verify(example: ModuleType) -> None:
    """The cache that keeps one load in flight passes every run of verify."""
    assert await example.check(example.Cache) is None


def test_the_example_runs_as_a_script() -> None:
    """Run as a script, the example reports the racy cache's failure and the
    fixed cache's pass, and exits 0."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "RacyCache: FAILED"
    assert lines[1].startswith("tracetest.verify: 1 of 3 runs")
    assert lines[-1] == "Cache: passed"
