"""anyio's own reference-cycle tests pass under ``pytest --aiotrace``.

They check, with ``gc.get_referrers``, that nothing but the test holds an
exception (or a context value, or a loop) once a task group, a thread call
or a connection attempt is over; while tracing, aiotrace must hold none of
them either. The tests come from anyio's sdist for the installed version,
downloaded once with pip and cached by pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from programs import read_trace

import aiotrace
from aiotrace.reader import EventKind, ResourceKind

REFCYCLE_TESTS = (
    "tests/test_taskgroups.py::TestRefcycles",
    "tests/test_to_thread.py::test_run_sync_worker_cyclic_references",
    "tests/test_sockets.py::TestTCPStream::test_happy_eyeballs_refcycles",
)
"""anyio's tests that check no other reference is left to an object.

Not ``test_asyncio_run_does_not_leak_event_loop``: it fails untraced too, about
once in a hundred runs (anyio's worker thread can still hold the loop)."""

ANYIO_OPTIONS = (
    # anyio's addopts name plugins by module (-p pytest_mock); those that
    # are installed load from their entry points anyway.
    "-o",
    "addopts=",
    "-p",
    "anyio",
    "-p",
    "no:asyncio",
    "-p",
    "no:trio",
    "-p",
    "no:cacheprovider",
    "-o",
    "anyio_mode=auto",
)


@pytest.fixture(scope="session")
def anyio_tests(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Path:
    """The root of anyio's sdist for the installed anyio, tests included."""
    ver = version("anyio")
    cache = getattr(request.config, "cache", None)
    base = (
        Path(cache.mkdir(f"aiotrace-anyio-sdist-{ver}"))
        if cache is not None
        else tmp_path_factory.mktemp("anyio-sdist")
    )
    root = base / f"anyio-{ver}"
    if (root / "tests" / "test_taskgroups.py").is_file():
        return root
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"anyio=={ver}",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
            str(base),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    sdists = sorted(base.glob(f"anyio-{ver}.tar.gz"))
    assert got.returncode == 0 and sdists, (
        f"pip could not download anyio {ver}'s sdist (its tests are needed):\n"
        f"{got.stdout}\n{got.stderr}"
    )
    staging = base / f"staging-{os.getpid()}"
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(staging, filter="data")
    # A concurrent session may have got there first: either copy will do.
    try:
        (staging / f"anyio-{ver}").rename(root)
    except OSError:
        assert (root / "tests" / "test_taskgroups.py").is_file()
    return root


def test_anyio_refcycle_tests_pass_under_aiotrace(
    anyio_tests: Path, tmp_path: Path
) -> None:
    """anyio's refcycle tests, run by pytest with ``--aiotrace``, all pass on
    every backend (asyncio, asyncio+uvloop, eager tasks on 3.12+, trio), and
    each test's trace validates, the asyncio ones with coroutines in them.

    ``TestRefcycles::test_exception_refcycles_parent_task[asyncio]`` failed:
    the tracer's waker table held the callback that woke the task group's
    host task, and through it the ExceptionGroup."""
    traces = tmp_path / "traces"
    junit = tmp_path / "junit.xml"
    env = dict(os.environ)
    here = str(Path(aiotrace.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *ANYIO_OPTIONS,
            f"--aiotrace={traces}",
            f"--junitxml={junit}",
            "-q",
            *REFCYCLE_TESTS,
        ],
        cwd=anyio_tests,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    cases = ET.parse(junit).getroot().iter("testcase")
    outcomes = {
        f"{case.get('classname')}.{case.get('name')}": [child.tag for child in case]
        for case in cases
    }
    assert outcomes, done.stdout
    assert all(tags == [] for tags in outcomes.values()), outcomes
    names = {name.rsplit(".", 1)[-1] for name in outcomes}
    assert "test_exception_refcycles_parent_task[asyncio]" in names
    assert "test_exception_refcycles_parent_task[trio]" in names
    files = sorted(traces.glob("*.trace"))
    assert len(files) == len(outcomes), (files, sorted(outcomes))
    for path in files:
        trace = read_trace(path)
        trace.check()
        if "asyncio" in path.name and "does_not_leak" not in path.name:
            assert any(
                ev.kind is EventKind.STATE_TRANSITION
                and ev.state_transition.resource.kind is ResourceKind.COROUTINE
                for ev in trace.events
            ), f"{path.name} has no coroutine"
