"""Golden traces: the writer's bytes and the dump text do not drift."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from aiotrace.reader import Reader, TraceError, format_event

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", TESTDATA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerating_the_goldens_changes_nothing() -> None:
    """The generator script reproduces every committed golden byte for byte,
    so the encoding is deterministic and unchanged."""
    for name, content in _generator().goldens().items():
        assert (TESTDATA / name).read_bytes() == content, name


def test_golden_dump_matches_the_reader() -> None:
    """Reading the committed golden trace gives the committed dump."""
    with open(TESTDATA / "sample.trace", "rb") as f:
        lines = [format_event(ev) + "\n" for ev in Reader(f)]
    assert "".join(lines) == (TESTDATA / "sample.dump").read_text()


def test_cli_dump_prints_the_golden_dump() -> None:
    """`aiotrace dump FILE` prints exactly the golden dump."""
    out = subprocess.run(
        [sys.executable, "-m", "aiotrace", "dump", str(TESTDATA / "sample.trace")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == (TESTDATA / "sample.dump").read_text()


FUZZ = {
    "truncated-string-table": "truncated inside a frame",
    "truncated-batch": "truncated inside a frame",
    "bad-crc": "CRC-32",
    "unknown-version": "version 2 is not supported",
    "no-trace-end": "no TRACE_END",
}


@pytest.mark.parametrize("name", sorted(FUZZ))
def test_fuzz_regressions(name: str) -> None:
    """Each named regression input raises TraceError with its message."""
    data = (TESTDATA / "fuzz" / f"{name}.trace").read_bytes()
    with pytest.raises(TraceError, match=FUZZ[name]):
        list(Reader(io.BytesIO(data)))


def test_cli_dump_reports_bad_input() -> None:
    """`aiotrace dump` on a damaged trace prints the events it could read,
    then the error with the file name, and exits 1."""
    path = TESTDATA / "fuzz" / "no-trace-end.trace"
    proc = subprocess.run(
        [sys.executable, "-m", "aiotrace", "dump", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.count("SYNC") == 2
    assert str(path) in proc.stderr and "truncated" in proc.stderr
