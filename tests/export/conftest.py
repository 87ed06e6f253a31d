"""Fixtures of the export tests: one rich real trace, shared by the module."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_programs import run_rich_program

import aiotrace


@pytest.fixture(scope="session")
def rich_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trace of two loops, threads, tasks, regions, logs and a stall."""
    path = tmp_path_factory.mktemp("export") / "rich.trace"
    run_rich_program(path)
    assert not aiotrace.is_enabled()
    return path
