"""What the findings tests share: the fault programs, the real command
line, and the lines the programs mark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiotrace

PROGRAMS = Path(__file__).resolve().parent / "programs"
"""The tests' own fault programs."""

PACKAGE = str(Path(aiotrace.__file__).resolve().parent)
"""aiotrace's own files: a finding never names them."""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m aiotrace ARGS`` and returns what it did."""
    return subprocess.run(
        [sys.executable, "-m", "aiotrace", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def run_traced(program: Path, out: Path) -> Path:
    """Runs ``program`` under ``aiotrace run -o out`` (default options);
    returns the trace's path."""
    run = cli("run", "-q", "-o", str(out), str(program))
    assert run.returncode == 0, run.stderr
    return out


def marked_line(program: str, mark: str) -> int:
    """The line of ``PROGRAMS/program`` that carries ``# mark: <mark>``."""
    text = (PROGRAMS / program).read_text().splitlines()
    return next(i for i, line in enumerate(text, 1) if f"# mark: {mark}" in line)
