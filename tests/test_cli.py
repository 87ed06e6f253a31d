"""The command line: `aiotrace demo` and `aiotrace dump`, run as users run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiotrace
from aiotrace.reader import EventKind, read_events, validate

TESTDATA = Path(__file__).resolve().parent / "testdata"


def _aiotrace(
    *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiotrace", *args],
        input=stdin.decode("latin-1") if stdin is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_demo_writes_a_trace_and_prints_its_first_events(tmp_path: Path) -> None:
    """`aiotrace demo -o DIR` traces its program into DIR/demo.trace, says
    where, and prints the first events of its dump; the trace reads back with
    the demo's logs from the loop thread and from worker threads."""
    proc = _aiotrace("demo", "-o", str(tmp_path), "-n", "5")
    assert proc.returncode == 0, proc.stderr
    trace = tmp_path / "demo.trace"
    assert str(trace) in proc.stdout
    dump_lines = [ln for ln in proc.stdout.splitlines() if ln[:1].isdigit()]
    assert len(dump_lines) == 5
    assert " SYNC " in dump_lines[0]
    events = read_events(trace)
    assert validate(events) == []
    logs = [ev for ev in events if ev.kind is EventKind.LOG]
    categories = {ev.log.category for ev in logs}
    assert {"barista", "grinder", "cafe"} <= categories
    grinder_threads = {ev.thread for ev in logs if ev.log.category == "grinder"}
    barista_threads = {ev.thread for ev in logs if ev.log.category == "barista"}
    assert grinder_threads.isdisjoint(barista_threads)


def test_dump_reads_stdin() -> None:
    """`aiotrace dump -` reads the trace from standard input."""
    data = (TESTDATA / "sample.trace").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "aiotrace", "dump", "-"],
        input=data,
        capture_output=True,
        check=True,
    )
    assert proc.stdout.decode() == (TESTDATA / "sample.dump").read_text()


def test_dump_raw_lists_events_in_file_order() -> None:
    """`aiotrace dump --raw` prints every raw event with its type and named
    arguments, as written."""
    proc = _aiotrace("dump", "--raw", str(TESTDATA / "sample.trace"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    typed = (TESTDATA / "sample.dump").read_text().splitlines()
    assert len(lines) == len(typed) - typed.count("") - sum(
        1 for t in typed if " SYNC " in t
    )
    assert any(" CoroBlock coroutine=1 reason=" in ln for ln in lines)


def test_dump_of_a_missing_file_says_so(tmp_path: Path) -> None:
    """A missing file is an error message and exit status 1, no traceback."""
    missing = tmp_path / "nope.trace"
    proc = _aiotrace("dump", str(missing))
    assert proc.returncode == 1
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dump_of_a_non_trace_says_what_is_wrong(tmp_path: Path) -> None:
    """A file that is not a trace gets the reader's message and status 1."""
    bogus = tmp_path / "bogus.trace"
    bogus.write_bytes(b"hello, world")
    proc = _aiotrace("dump", str(bogus))
    assert proc.returncode == 1
    assert "magic" in proc.stderr and str(bogus) in proc.stderr


def test_dump_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`aiotrace dump FILE | head -1` on a trace far bigger than a pipe's
    buffer ends quietly, without a BrokenPipe traceback."""
    trace = tmp_path / "big.trace"
    with aiotrace.tracing(trace):
        for i in range(20_000):
            aiotrace.log("bulk", f"message number {i}")
    proc = subprocess.run(
        f"{sys.executable} -m aiotrace dump {trace} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_console_script_and_module_agree() -> None:
    """The `aiotrace` console script is installed and behaves as
    `python -m aiotrace`."""
    script = Path(sys.executable).with_name("aiotrace")
    assert script.exists(), f"console script missing at {script}"
    out = subprocess.run(
        [str(script), "dump", str(TESTDATA / "sample.trace")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == (TESTDATA / "sample.dump").read_text()
