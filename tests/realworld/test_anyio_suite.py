"""anyio's own test suite under ``pytest --aiotrace=DIR``.

anyio's tests come from its sdist, for the very version installed here,
downloaded once with pip into pytest's cache (``.pytest_cache``), and run
in a subprocess on a bounded subset: its synchronization primitives and
task groups, on asyncio (plain, and with eager tasks on 3.12+). Every test
writes a trace, and every trace must validate; any test that fails traced
must also fail untraced (the tracer never changes what a program does).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from realprograms import in_ci, summarise

import aiotrace

# The first test's setup downloads the sdist and runs the subset (about 30 s
# on an idle machine, eager tasks doubling it on 3.12+): more than pytest's
# 120 s per test on a loaded one would be a hang, not this.
pytestmark = pytest.mark.timeout(300)

SUBSET = ["tests/test_synchronization.py", "tests/test_taskgroups.py"]
SELECT = "asyncio and not uvloop"


@dataclass
class SuiteRun:
    """One run of the subset: pytest's status, output and failed test ids."""

    returncode: int
    output: str
    failed: list[str]
    passed: int


def _pythonpath() -> str:
    """PYTHONPATH with the aiotrace under test first, whatever the cwd."""
    here = str(Path(aiotrace.__file__).resolve().parent.parent)
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)


def _run_suite(root: Path, *args: str) -> SuiteRun:
    r = subprocess.run(
        [
            sys.executable, "-m", "pytest", *args,
            "-p", "no:cacheprovider", "-q", "-rfE", "-o", "console_output_style=classic",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": _pythonpath()},
    )  # fmt: skip
    out = r.stdout + r.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.MULTILINE)
    m = re.search(r"(\d+) passed", out)
    return SuiteRun(r.returncode, out, failed, int(m.group(1)) if m else 0)


@pytest.fixture(scope="module")
def anyio_tests(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The root of anyio's sdist for the installed version, with its tests.

    Downloaded once into pytest's cache; skipped if PyPI cannot be reached,
    except in CI (CI=true), where that fails."""
    ver = version("anyio")
    cache = getattr(request.config, "cache", None)
    base = (
        cache.mkdir(f"aiotrace-anyio-sdist-{ver}")  # shared with tests/runtime
        if cache is not None
        else tmp_path_factory.mktemp("anyio-sdist")
    )
    root = base / f"anyio-{ver}"
    if (root / "tests" / "conftest.py").exists():
        return root
    archive = base / f"anyio-{ver}.tar.gz"
    if not archive.exists():
        r = subprocess.run(
            [
                sys.executable, "-m", "pip", "download", f"anyio=={ver}",
                "--no-binary", ":all:", "--no-deps", "-q", "-d", str(base),
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if r.returncode != 0 or not archive.exists():
            why = f"could not download anyio {ver}'s sdist: {r.stderr.strip()[-500:]}"
            if in_ci():
                pytest.fail(why)
            pytest.skip(why)
    staging = base / f"staging-{os.getpid()}"
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    try:
        (staging / f"anyio-{ver}").rename(root)  # whole, or not there at all
    except OSError:  # another session got there first: either copy will do
        assert (root / "tests" / "conftest.py").exists()
    return root


@pytest.fixture(scope="module")
def traced_run(
    anyio_tests: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SuiteRun, Path]:
    """The subset run once under ``--aiotrace=DIR``; the run and DIR."""
    traces = tmp_path_factory.mktemp("anyio-traces")
    run = _run_suite(anyio_tests, *SUBSET, "-k", SELECT, f"--aiotrace={traces}")
    assert run.passed > 150, run.output[-3000:]
    return run, traces


def test_every_trace_of_anyios_suite_validates(
    traced_run: tuple[SuiteRun, Path],
) -> None:
    """Each test of the subset wrote a trace (one per test that ran, passed
    or failed), and every one validates with 0 problems and no lost event."""
    run, traces = traced_run
    files = sorted(traces.glob("*.trace"))
    assert len(files) >= run.passed + len(run.failed), (len(files), run.passed)
    bad = {}
    for path in files:
        s = summarise(path)
        if s.problem_count or s.lost_events:
            bad[path.name] = (s.problem_count, s.lost_events, s.problems[:3])
    assert not bad, bad


def test_anyio_tests_that_fail_traced_fail_untraced(
    anyio_tests: Path, traced_run: tuple[SuiteRun, Path]
) -> None:
    """Every test of the subset that fails under ``--aiotrace`` also fails
    without it: tracing changes no outcome. (``TestRefcycles::
    test_exception_refcycles_parent_task`` failed traced only, on asyncio and
    with eager tasks, until the tracer stopped holding the ExceptionGroup.)"""
    run, _ = traced_run
    if not run.failed:
        return
    untraced = _run_suite(anyio_tests, *run.failed)
    only_traced = sorted(set(run.failed) - set(untraced.failed))
    assert not only_traced, only_traced
