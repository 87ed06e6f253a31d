"""The command line: `aiotrace demo` and `aiotrace dump`, run as users run them."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from helpers import wait_until

import aiotrace
from aiotrace import analysis
from aiotrace.reader import (
    NO_COROUTINE,
    NO_LOOP,
    CoroState,
    EventKind,
    read_events,
    validate,
)

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


def _demo_stall_line() -> int:
    """The line of the demo's planted blocking call, read from its source."""
    source = Path(aiotrace.__file__).with_name("_demo.py").read_text().splitlines()
    (line,) = [
        i
        for i, text in enumerate(source, 1)
        if "time.sleep(RECEIPT_PRINTER_SECONDS)" in text
    ]
    return line


def test_demo_writes_a_trace_that_shows_what_it_promises(tmp_path: Path) -> None:
    """`aiotrace demo -o DIR` traces its coffee bar into DIR/demo.trace: a
    valid trace with coroutines blocked on a lock and on a queue, user tasks
    that span several coroutines and a worker thread, the demo's logs, and
    exactly one loop stall holding the planted blocking call (the step that
    logs the receipt), whose samples name its line."""
    out = tmp_path / "new" / "dir"
    proc = _aiotrace("demo", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    events = read_events(out / "demo.trace")
    assert validate(events) == []

    reasons = {
        ev.state_transition.reason
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.new is CoroState.WAITING
    }
    assert {"lock", "queue", "executor"} <= reasons

    orders = {
        ev.task.id
        for ev in events
        if ev.kind is EventKind.TASK_BEGIN and ev.task.type == "order"
    }
    assert len(orders) == 4
    loop_threads = {ev.thread for ev in events if ev.loop != NO_LOOP}
    for order in orders:
        inside = [
            ev
            for ev in events
            if (ev.kind in (EventKind.REGION_BEGIN, EventKind.LOG))
            and (ev.region.task if ev.kind is EventKind.REGION_BEGIN else ev.log.task)
            == order
        ]
        coroutines = {ev.coroutine for ev in inside if ev.coroutine != NO_COROUTINE}
        worker_threads = {ev.thread for ev in inside} - loop_threads
        assert len(coroutines) >= 3, f"order task {order} on {coroutines}"
        assert len(worker_threads) == 1, f"order task {order} on {worker_threads}"

    categories = {ev.log.category for ev in events if ev.kind is EventKind.LOG}
    assert {"barista", "grinder", "cafe"} <= categories

    # The planted stall is the one step that logs "receipt printed" right
    # after blocking: exactly one stall holds that log. (A loaded machine
    # may add stalls of its own elsewhere; they are real, and not counted.)
    (printed,) = [
        ev
        for ev in events
        if ev.kind is EventKind.LOG and ev.log.message.endswith("receipt printed")
    ]
    planted = [
        st
        for st in analysis.analyze(events).stalls
        if st.thread == printed.thread
        and st.start_ns <= printed.time <= st.start_ns + st.duration_ns
    ]
    assert len(planted) == 1, planted
    (stall,) = planted
    assert stall.duration_ns >= 150_000_000
    assert stall.coroutine_name.startswith("_waiter"), stall.coroutine_name
    # The watchdog samples while the stall lasts; a sample may catch the
    # line after the blocking call as it returns, never most of them.
    innermost = Counter(
        (st.frames[0].func, Path(st.frames[0].file).name, st.frames[0].line)
        for st in stall.samples
    )
    # The demo blocks until the watchdog took 3 samples (SAMPLES_TO_SHOW).
    assert sum(innermost.values()) >= 3, innermost
    assert innermost.most_common(1)[0][0] == (
        "_blocking_receipt_printer",
        "_demo.py",
        _demo_stall_line(),
    ), innermost


def test_demo_prints_where_the_files_are_and_the_summary(tmp_path: Path) -> None:
    """The demo's output names its trace and report, both of which exist,
    gives the stats summary with the stall, names the blocking function and
    its line, and says how to go on (Perfetto export, tracing your own
    program)."""
    proc = _aiotrace("demo", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    trace, report = tmp_path / "demo.trace", tmp_path / "demo.html"
    assert trace.is_file() and report.is_file()
    assert str(trace) in proc.stdout and str(report) in proc.stdout
    summary = analysis.analyze(trace)
    assert analysis.format_summary(summary, top=5).strip() in proc.stdout
    assert f"_blocking_receipt_printer (_demo.py:{_demo_stall_line()})" in proc.stdout
    assert f"aiotrace export {trace}" in proc.stdout
    assert "aiotrace run" in proc.stdout


def test_demo_into_a_place_that_is_not_a_directory_says_so(tmp_path: Path) -> None:
    """`-o` naming a file, not a directory: a message and status 1."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _aiotrace("demo", "-o", str(blocker / "sub"))
    assert proc.returncode == 1
    assert str(blocker / "sub") in proc.stderr and "Traceback" not in proc.stderr


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


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the pty's other side closed
            return out
        if not chunk:
            return out
        out += chunk


def test_long_reads_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """`export` and `stats` on a trace that takes a while to read show how
    far they are on stderr when it is a terminal, then erase the line; with
    stderr not a terminal they print no progress at all.

    The trace comes through a named pipe: the test sends its first half,
    waits past the half second after which progress may show (the command
    is blocked reading meanwhile), then sends the rest. So the read takes
    that long whatever the machine's speed."""
    trace = tmp_path / "big.trace"
    tracer = aiotrace.start(trace, runtime_events=False)
    try:
        for i in range(1, 200_001):
            aiotrace.log("n", "x")
            if i % 50_000 == 0:  # let the drainer keep up: nothing is lost
                wait_until(lambda n=i: tracer.events >= n, "the drainer")
    finally:
        aiotrace.stop()
    assert tracer.lost_events == 0
    assert validate(read_events(trace)) == []
    data = trace.read_bytes()
    assert len(data) > 1 << 20  # a generation ends in each half
    for command in (["export", "-o", str(tmp_path / "big.json")], ["stats"]):
        fifo = tmp_path / f"{command[0]}.fifo"
        os.mkfifo(fifo)
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiotrace", *command, str(fifo)],
            stdout=subprocess.DEVNULL,
            stderr=secondary,
        )
        os.close(secondary)
        with open(fifo, "wb") as w:  # opens once the command opens it to read
            w.write(data[: len(data) // 2])
            w.flush()
            time.sleep(0.6)  # a lower bound: progress may show after 0.5 s
            w.write(data[len(data) // 2 :])
        shown = _read_all(primary).decode()
        os.close(primary)
        assert proc.wait(timeout=120) == 0
        assert f"aiotrace: reading {fifo}: " in shown, shown
        assert " MiB " in shown and shown.endswith("\r\x1b[K"), shown
        quiet = _aiotrace(*command, str(trace))
        assert quiet.returncode == 0, quiet.stderr
        assert "aiotrace: reading" not in quiet.stderr
