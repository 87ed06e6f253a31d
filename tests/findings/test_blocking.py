"""The blocking rule names the call that holds the loop: real fault
programs under ``tests/findings/programs/blocking_*.py``, traced with
``aiotrace run`` (default options), each with an innocent look-alike that
must not be named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from findings_cli import PROGRAMS, marked_line, run_traced

from aiotrace.analysis import diagnose
from aiotrace.analysis._findings import Finding


def _trace(program: str, tmp_path: Path) -> Path:
    return run_traced(PROGRAMS / program, tmp_path / (Path(program).stem + ".trace"))


def _blocking(trace: Path) -> list[Finding]:
    return [f for f in diagnose(trace).findings if f.kind == "blocking"]


def _text(found: list[Finding]) -> str:
    return "\n".join(f"{f.summary}\n{f.detail}" for f in found)


def test_steps_under_the_threshold_that_add_up_are_named(tmp_path: Path) -> None:
    """Ten 50 ms ``time.sleep`` steps (each under the 0.1 s stall threshold)
    are one finding naming the sleeping function's line and the coroutine;
    the coroutine that awaits ``asyncio.sleep`` as long is not named."""
    program = "blocking_sleep.py"
    found = _blocking(_trace(program, tmp_path))
    assert len(found) == 1, _text(found)
    (f,) = found
    assert f.where.endswith(f"{program}:{marked_line(program, 'culprit')})"), f
    assert f.summary.startswith("blocking call in load_config ("), f.summary
    assert "coroutine handler" in f.summary
    assert f.evidence["steps"] >= 8  # a loaded machine may merge none, split none
    assert f"{program}:{marked_line(program, 'caller')}" in f.detail
    assert f"{program}:{marked_line(program, 'began')}" in f.detail
    assert "patient" not in _text(found)


def test_stats_names_the_blocking_call(tmp_path: Path) -> None:
    """``aiotrace stats`` prints the finding: the blocking line, in words."""
    program = "blocking_sleep.py"
    trace = _trace(program, tmp_path)
    text = subprocess.run(
        [sys.executable, "-m", "aiotrace", "stats", str(trace)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "blocking call in load_config" in text, text
    assert f"{program}:{marked_line(program, 'culprit')}" in text


def test_a_stall_and_a_stalling_callback_are_named(tmp_path: Path) -> None:
    """A 150 ms pure-Python hashing step (a stall) is named at its line in
    its function, as a loop stall; a plain callback that sleeps 120 ms is
    named too; the coroutine that does the same hashing in a thread is not."""
    program = "blocking_stall.py"
    found = _blocking(_trace(program, tmp_path))
    text = _text(found)
    step = [f for f in found if "checksum" in f.summary and "upload" in f.summary]
    assert len(step) == 1, text
    assert f"{program}:{marked_line(program, 'culprit')}" in step[0].where
    assert "loop stall" in step[0].detail
    callback = [f for f in found if "flush_metrics" in f.summary]
    assert len(callback) == 1, text
    assert callback[0].where.endswith(f"{program}:{marked_line(program, 'callback')})")
    assert "offloaded" not in text


def test_a_pure_python_loop_is_named_at_its_function(tmp_path: Path) -> None:
    """Eight 40 ms steps of pure-Python parsing are named in the parsing
    function (a generator expression's time is its caller's line); 320 steps
    of 1 ms of the same work are not (no step is long)."""
    program = "blocking_cpu.py"
    found = _blocking(_trace(program, tmp_path))
    text = _text(found)
    assert len(found) == 1, text
    assert found[0].summary.startswith("blocking call in parse ("), text
    assert "coroutine importer" in found[0].summary
    assert "chatty" not in text


def test_a_library_call_is_named_at_the_programs_line(tmp_path: Path) -> None:
    """A blocking ``urllib.request.urlopen`` is named at the program's line
    that calls it (the library's frames are not the culprit), with the
    library function; the coroutine that reads the same server with asyncio
    streams is not named."""
    program = "blocking_http.py"
    found = _blocking(_trace(program, tmp_path))
    text = _text(found)
    assert len(found) == 1, text
    assert found[0].where.endswith(f"{program}:{marked_line(program, 'culprit')})"), (
        text
    )
    assert "urlopen" in found[0].detail
    assert "fetch_async" not in text


def test_a_call_just_under_the_threshold_is_named(tmp_path: Path) -> None:
    """Two 90 ms blocking steps (stalls on a loaded machine, long steps on
    an idle one) are named either way; the coroutine awaiting as long is
    not."""
    program = "blocking_near.py"
    found = _blocking(_trace(program, tmp_path))
    text = _text(found)
    assert len(found) == 1, text
    assert found[0].where.endswith(f"{program}:{marked_line(program, 'culprit')})"), (
        text
    )
    assert "idle" not in text


def test_garbage_collection_is_not_a_blocking_call(tmp_path: Path) -> None:
    """Steps slow because full collections run in them are GC's: no
    blocking finding names them."""
    found = _blocking(_trace("blocking_gc.py", tmp_path))
    assert found == [], _text(found)


@pytest.mark.parametrize("program", ["blocking_sleep.py"])
def test_no_finding_names_aiotrace(program: str, tmp_path: Path) -> None:
    """No blocking finding names one of aiotrace's own frames."""
    for f in _blocking(_trace(program, tmp_path)):
        assert "/aiotrace/_" not in f.where and "/aiotrace/_" not in f.detail, f
