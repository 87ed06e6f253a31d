"""Fixtures of the export tests: one rich real trace and one long jittered
server trace, each made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_programs import run_rich_program
from longtrace import write_server_trace

import aiotrace
from aiotrace import reader


@pytest.fixture(scope="session")
def rich_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trace of two loops, threads, tasks, regions, logs and a stall."""
    path = tmp_path_factory.mktemp("export") / "rich.trace"
    run_rich_program(path)
    assert not aiotrace.is_enabled()
    return path


@pytest.fixture(scope="session")
def jitter_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-second server trace whose requests vary (seeded): 30,000
    requests of 115 µs to 1 ms, one a millisecond, nothing planted."""
    path = tmp_path_factory.mktemp("jitter") / "jitter.trace"
    write_server_trace(path, jitter=7)
    assert reader.validate(reader.read_events(path)) == []
    return path
