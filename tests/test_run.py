"""`aiotrace run`: an unmodified program traced as `python` would run it.

Each test writes a real program into a temporary directory and runs it in a
subprocess twice where it matters, under `python` and under `aiotrace run`,
and compares what the program saw and what the user saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aiotrace.reader import (
    CoroState,
    Event,
    EventKind,
    ResourceKind,
    TraceError,
    read_events,
    validate,
)

RUN = [sys.executable, "-m", "aiotrace", "run"]

SHOW_ENV = """
import json, sys
print(json.dumps({
    "argv": sys.argv,
    "path0": sys.path[0],
    "name": __name__,
    "file": __file__,
    "package": __package__,
    "main_is_me": sys.modules["__main__"].__dict__ is globals(),
}))
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _run(
    argv: list[str], cwd: Path, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        **kwargs,  # type: ignore[call-overload]
    )


def _summary_lines(stderr: str) -> list[str]:
    """The lines of the summary: from its first `aiotrace:` line to the end."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("aiotrace: trace written to "):
            return lines[i:]
    pytest.fail(f"no summary in stderr:\n{stderr}")


def _valid_events(trace: Path) -> list[Event]:
    events = read_events(trace)
    assert validate(events) == []
    return events


def test_a_script_sees_what_python_gives_it(tmp_path: Path) -> None:
    """The script runs as __main__ with python's argv, sys.path[0] (its own
    directory), __file__ and stdout; options after the script name are the
    script's, not aiotrace's."""
    script = _write(tmp_path / "app" / "show.py", SHOW_ENV)
    args = ["-o", "not-ours", "--stall-threshold", "x", "-m", "y", "--", "z"]
    python = _run([sys.executable, "app/show.py", *args], tmp_path)
    traced = _run([*RUN, "app/show.py", *args], tmp_path)
    assert python.returncode == traced.returncode == 0, traced.stderr
    assert traced.stdout == python.stdout
    seen = json.loads(traced.stdout)
    assert seen["argv"] == ["app/show.py", *args]
    assert seen["path0"] == str(script.parent.resolve())
    assert seen["name"] == "__main__" and seen["main_is_me"]
    assert (tmp_path / "show.trace").exists()
    assert not (tmp_path / "not-ours").exists()


def test_a_module_runs_as_with_python_dash_m(tmp_path: Path) -> None:
    """`aiotrace run -m pkg.tool args` runs a package's module as __main__
    with python -m's argv, package (relative imports work) and sys.path[0]
    (the current directory); everything after the module name is its."""
    _write(tmp_path / "pkg" / "__init__.py", "")
    _write(tmp_path / "pkg" / "helper.py", "WORD = 'relative import works'\n")
    _write(
        tmp_path / "pkg" / "tool.py",
        SHOW_ENV + "from .helper import WORD\nprint(WORD)\n",
    )
    args = ["-o", "x", "-m", "q"]
    python = _run([sys.executable, "-m", "pkg.tool", *args], tmp_path)
    traced = _run([*RUN, "-m", "pkg.tool", *args], tmp_path)
    assert python.returncode == traced.returncode == 0, traced.stderr
    assert traced.stdout == python.stdout
    seen = json.loads(traced.stdout.splitlines()[0])
    assert seen["argv"] == [str(tmp_path.resolve() / "pkg" / "tool.py"), *args]
    assert seen["package"] == "pkg" and seen["name"] == "__main__"
    assert seen["path0"] == str(tmp_path.resolve())
    assert (tmp_path / "pkg.tool.trace").exists()


def test_a_package_runs_its_dunder_main(tmp_path: Path) -> None:
    """`aiotrace run -m pkg` runs pkg/__main__.py, as python -m does."""
    _write(tmp_path / "pkg" / "__init__.py", "")
    _write(tmp_path / "pkg" / "__main__.py", SHOW_ENV)
    python = _run([sys.executable, "-m", "pkg", "a"], tmp_path)
    traced = _run([*RUN, "-o", "p.trace", "-m", "pkg", "a"], tmp_path)
    assert python.returncode == traced.returncode == 0, traced.stderr
    assert traced.stdout == python.stdout
    _valid_events(tmp_path / "p.trace")


@pytest.mark.parametrize(
    "ending",
    [
        "pass",
        "sys.exit()",
        "sys.exit(3)",
        "sys.exit('the database is gone')",
        "raise SystemExit(True)",
        "raise ValueError('bad input')",
        "raise KeyboardInterrupt",
        "def f():\n    raise RuntimeError('inner') from KeyError('cause')\nf()",
        "sys.exit(130)",
        "import atexit\natexit.register(print, 'at exit')\nraise KeyboardInterrupt",
    ],
)
def test_exit_status_and_errors_are_python_s(tmp_path: Path, ending: str) -> None:
    """Whatever way the program ends, `aiotrace run -q` exits with python's
    status and prints exactly what python prints, tracebacks included, and
    the trace is complete. An uncaught KeyboardInterrupt kills the process
    by SIGINT after its atexit handlers ran (status -2 here, 130 in a
    shell), as python does; `sys.exit(130)` is a plain status 130."""
    _write(
        tmp_path / "prog.py",
        "import asyncio, sys\n"
        "async def main():\n"
        "    await asyncio.sleep(0)\n"
        "asyncio.run(main())\n"
        "print('ran')\n" + ending + "\n",
    )
    python = _run([sys.executable, "prog.py"], tmp_path)
    traced = _run([*RUN, "-q", "prog.py"], tmp_path)
    if sys.platform != "win32":
        expected = -signal.SIGINT if "KeyboardInterrupt" in ending else None
        assert python.returncode == (expected or python.returncode)
    assert traced.returncode == python.returncode
    assert traced.stdout == python.stdout
    assert traced.stdout.startswith("ran\n")
    assert traced.stderr == python.stderr
    events = _valid_events(tmp_path / "prog.trace")
    assert events


def test_main_module_pickles_and_spawns_like_python_s(tmp_path: Path) -> None:
    """Classes defined in the script pickle by reference to __main__, and a
    spawned multiprocessing pool re-imports the script, as under python."""
    _write(
        tmp_path / "mp.py",
        """
        import multiprocessing, pickle

        class Order:
            pass

        def square(x):
            return x * x

        if __name__ == "__main__":
            print(type(pickle.loads(pickle.dumps(Order()))).__qualname__)
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                print(pool.map(square, range(4)))
        """,
    )
    python = _run([sys.executable, "mp.py"], tmp_path)
    traced = _run([*RUN, "-q", "mp.py"], tmp_path)
    assert traced.returncode == python.returncode == 0, traced.stderr
    assert traced.stdout == python.stdout == "Order\n[0, 1, 4, 9]\n"


def test_a_syntax_error_is_reported_as_python_does(tmp_path: Path) -> None:
    """A script that does not compile gets python's message and status 1."""
    _write(tmp_path / "bad.py", "print('fine')\ndef broken(:\n")
    python = _run([sys.executable, "bad.py"], tmp_path)
    traced = _run([*RUN, "-q", "bad.py"], tmp_path)
    assert traced.returncode == python.returncode == 1
    assert traced.stderr == python.stderr
    assert "SyntaxError" in traced.stderr


def test_the_summary_goes_to_stderr_and_names_the_file(tmp_path: Path) -> None:
    """The summary is on stderr (stdout is the program's alone) and names
    the trace file and the number of events recorded (the trace's, without
    what the file format adds per generation)."""
    _write(tmp_path / "hello.py", "print('hello')\n")
    traced = _run([*RUN, "-o", "out/h.trace", "hello.py"], tmp_path)
    assert traced.returncode == 1  # out/ does not exist
    assert "out/h.trace" in traced.stderr and "Traceback" not in traced.stderr
    assert traced.stdout == ""
    traced = _run([*RUN, "-o", "h.trace", "hello.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == "hello\n"
    summary = _summary_lines(traced.stderr)
    events = _valid_events(tmp_path / "h.trace")
    # What the reader adds to what was recorded: each generation's SYNC and
    # thread labels (the program is short: one generation, nothing restated).
    added = [
        ev
        for ev in events
        if ev.kind is EventKind.SYNC
        or (
            ev.kind is EventKind.LABEL and ev.label.resource.kind is ResourceKind.THREAD
        )
    ]
    assert len([ev for ev in events if ev.kind is EventKind.SYNC]) == 1
    count = len(events) - len(added)
    assert summary[0].startswith(
        f"aiotrace: trace written to h.trace ({count:,} events recorded, "
    )


STALL_PROGRAM = """
import asyncio, time
import aiotrace

def hog():
    time.sleep(0.3)  # blocks the loop

async def fetch(n):
    async with aiotrace.new_task("fetch"):
        await asyncio.sleep(0.01 * n)
        if n == 2:
            hog()

async def main():
    async with asyncio.TaskGroup() as tg:
        for n in range(4):
            tg.create_task(fetch(n))

asyncio.run(main())
"""


def test_a_stall_shows_in_the_summary_with_its_line(tmp_path: Path) -> None:
    """A step that blocks the loop is a stall in the trace, and the summary
    names it with the blocking function's line and the coroutine, and lists
    the program's task types."""
    script = _write(tmp_path / "slow.py", STALL_PROGRAM)
    traced = _run([*RUN, "slow.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    summary = "\n".join(_summary_lines(traced.stderr))
    line = (
        script.read_text().splitlines().index("    time.sleep(0.3)  # blocks the loop")
        + 1
    )
    assert "1 loop stall (threshold 0.1 s)" in summary
    assert f"hog (slow.py:{line}) in coroutine fetch" in summary
    assert "slowest task types" in summary and "  fetch: 4 done" in summary
    events = _valid_events(tmp_path / "slow.trace")
    stalls = [
        ev
        for ev in events
        if ev.kind is EventKind.RANGE_BEGIN and ev.range.name == "loop stall"
    ]
    assert len(stalls) == 1


def test_stacks_read_as_under_python_without_the_runner_s_frames(
    tmp_path: Path,
) -> None:
    """The stall's samples go from the blocking line out to the script's
    `<module>`, as a traceback under `python` would: no frame of aiotrace's
    hooks or runner, and none of runpy's."""
    script = _write(tmp_path / "slow.py", STALL_PROGRAM)
    traced = _run([*RUN, "slow.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    events = _valid_events(tmp_path / "slow.trace")
    samples = [ev for ev in events if ev.kind is EventKind.STACK_SAMPLE]
    assert samples
    package = str(Path(__import__("aiotrace").__file__).parent)
    for ev in samples:
        frames = ev.stack.frames
        assert frames[0].func == "hog"
        assert (frames[-1].func, frames[-1].file) == ("<module>", str(script))
        for fr in frames:
            assert not fr.file.startswith(package), fr
            assert "runpy" not in fr.file, fr


@pytest.mark.parametrize("threshold", ["1", "off"])
def test_stall_threshold_moves_or_turns_off_detection(
    tmp_path: Path, threshold: str
) -> None:
    """`--stall-threshold 1` lets a 0.3 s step pass; `off` records no stalls
    at all; the summary says which."""
    _write(tmp_path / "slow.py", STALL_PROGRAM)
    traced = _run([*RUN, "--stall-threshold", threshold, "slow.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    summary = "\n".join(_summary_lines(traced.stderr))
    if threshold == "off":
        assert "stall detection was off" in summary
    else:
        assert "no loop stalls (threshold 1 s)" in summary
    names = {
        ev.range.name
        for ev in _valid_events(tmp_path / "slow.trace")
        if ev.kind is EventKind.RANGE_BEGIN
    }
    assert "loop stall" not in names


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "nan"])
def test_a_bad_stall_threshold_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    """A threshold that is not a positive number of seconds is refused
    before the program runs."""
    _write(tmp_path / "p.py", "print('ran')\n")
    traced = _run([*RUN, "--stall-threshold", bad, "p.py"], tmp_path)
    assert traced.returncode == 2
    assert "--stall-threshold" in traced.stderr and repr(bad) in traced.stderr
    assert traced.stdout == ""


def test_threads_and_their_loops_are_traced_to_the_end(tmp_path: Path) -> None:
    """A program that runs a second event loop in a thread, and leaves a
    non-daemon thread working after its main code returns, is traced whole:
    both loops' coroutines are in the trace, and the late thread's log too,
    since aiotrace waits for non-daemon threads as python does."""
    _write(
        tmp_path / "threads.py",
        """
        import asyncio, threading, time
        import aiotrace

        async def in_thread():
            await asyncio.sleep(0.01)

        async def in_main():
            await asyncio.to_thread(lambda: None)

        t = threading.Thread(target=asyncio.run, args=(in_thread(),))
        t.start()
        asyncio.run(in_main())
        t.join()

        def late():
            time.sleep(0.2)
            aiotrace.log("late", "after main returned")

        threading.Thread(target=late).start()
        print("main done")
        """,
    )
    traced = _run([*RUN, "threads.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    events = _valid_events(tmp_path / "threads.trace")
    labels = {ev.label.label for ev in events if ev.kind is EventKind.LABEL}
    assert {"in_thread", "in_main"} <= labels
    loop_threads = {
        ev.thread
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.kind is ResourceKind.LOOP
    }
    assert len(loop_threads) == 2
    late = [
        ev for ev in events if ev.kind is EventKind.LOG and ev.log.category == "late"
    ]
    assert len(late) == 1


def test_flight_keeps_only_the_last_seconds(tmp_path: Path) -> None:
    """`--flight S` records with the flight recorder and writes, at exit, a
    valid trace of only the last seconds or so: a log from the program's
    start has been dropped, the one from its end is there."""
    _write(
        tmp_path / "long.py",
        """
        import time, aiotrace
        aiotrace.log("marker", "early")
        for i in range(150):
            aiotrace.log("filler", "x" * 2000)
            time.sleep(0.01)
        aiotrace.log("marker", "late")
        print("done")
        """,
    )
    argv = ["--flight", "0.2", "--flight-max-mib", "0.0625", "long.py"]
    traced = _run([*RUN, *argv], tmp_path)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == "done\n"
    assert traced.stderr.startswith(
        "aiotrace: flight recorder: kept about the last 0.2 s"
    )
    events = _valid_events(tmp_path / "long.trace")
    markers = [
        ev.log.message
        for ev in events
        if ev.kind is EventKind.LOG and ev.log.category == "marker"
    ]
    assert markers == ["late"]
    fillers = sum(
        1 for ev in events if ev.kind is EventKind.LOG and ev.log.category == "filler"
    )
    assert 0 < fillers < 150


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--flight", "0", "p.py"], "'0' is not a positive number"),
        (["--flight", "soon", "p.py"], "'soon' is not a positive number"),
        (["--flight-max-mib", "8", "p.py"], "--flight-max-mib goes with --flight"),
    ],
)
def test_bad_flight_options_are_usage_errors(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    """Flight options that make no sense are refused before the program runs."""
    _write(tmp_path / "p.py", "print('ran')\n")
    traced = _run([*RUN, *argv], tmp_path)
    assert traced.returncode == 2
    assert message in traced.stderr and "usage: aiotrace run" in traced.stderr
    assert traced.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["p.py"]


def test_flight_to_a_bad_path_fails_before_the_program_runs(tmp_path: Path) -> None:
    """With --flight the file is written at exit, but a path that cannot be
    written is refused at once, before the program runs."""
    _write(tmp_path / "p.py", "print('ran')\n")
    traced = _run([*RUN, "--flight", "5", "-o", "no/dir/p.trace", "p.py"], tmp_path)
    assert traced.returncode == 1
    assert traced.stdout == ""
    assert "no/dir/p.trace" in traced.stderr and "Traceback" not in traced.stderr


def _signal_once_serving(tmp_path: Path, sig: int) -> tuple[int, str, str]:
    """Runs ``server.py`` in ``tmp_path`` under aiotrace, sends ``sig`` once
    it has printed "serving", and returns (status, stdout, stderr)."""
    proc = subprocess.Popen(
        [*RUN, "server.py"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "serving\n"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        # Reaped, its pipes closed (an unclosed pipe warns, an error, in
        # whichever later test the garbage collector finds it).
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    return proc.returncode, stdout, stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT")
def test_ctrl_c_leaves_a_complete_trace_and_dies_of_sigint(tmp_path: Path) -> None:
    """Interrupting a running asyncio program (SIGINT, as Ctrl-C sends)
    prints python's KeyboardInterrupt traceback, dies of SIGINT as under
    python (130 in a shell), and leaves a complete trace in which the
    interrupted coroutine ended cancelled."""
    _write(
        tmp_path / "server.py",
        """
        import asyncio

        async def serve():
            # "serving" is printed once this step has ended and the coroutine
            # waits, so the signal finds it waiting, as a server mostly is.
            asyncio.get_running_loop().call_soon(print, "serving")
            await asyncio.sleep(60)

        asyncio.run(serve())
        """,
    )
    returncode, _, stderr = _signal_once_serving(tmp_path, signal.SIGINT)
    assert returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in stderr
    assert _summary_lines(stderr)[0].startswith(
        "aiotrace: trace written to server.trace"
    )
    events = _valid_events(tmp_path / "server.trace")
    ends = [
        ev.state_transition.reason
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.new is CoroState.NOT_EXIST
    ]
    assert "cancelled" in ends


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGTERM")
def test_sigterm_finishes_the_trace_then_dies_of_it(tmp_path: Path) -> None:
    """SIGTERM (as `timeout` or a process manager sends) to a program with
    no handler of its own: aiotrace finishes the trace and says so, then the
    process dies of SIGTERM, as under python (no `finally` runs)."""
    _write(
        tmp_path / "server.py",
        """
        import asyncio

        async def serve():
            try:
                asyncio.get_running_loop().call_soon(print, "serving")
                await asyncio.sleep(60)
            finally:
                print("cleaned up")

        asyncio.run(serve())
        """,
    )
    returncode, stdout, stderr = _signal_once_serving(tmp_path, signal.SIGTERM)
    assert returncode == -signal.SIGTERM, stderr
    assert stdout == ""
    assert stderr == "aiotrace: terminated by SIGTERM; trace written to server.trace\n"
    _valid_events(tmp_path / "server.trace")


def test_a_program_s_own_sigterm_handler_is_kept(tmp_path: Path) -> None:
    """A program that handles SIGTERM itself keeps its handler."""
    _write(
        tmp_path / "own.py",
        """
        import os, signal, sys
        signal.signal(signal.SIGTERM, lambda *a: print("handled", flush=True))
        os.kill(os.getpid(), signal.SIGTERM)
        sys.exit(5)
        """,
    )
    traced = _run([*RUN, "-q", "own.py"], tmp_path)
    assert traced.returncode == 5, traced.stderr
    assert traced.stdout == "handled\n"


def test_a_missing_script_is_python_s_error_and_no_trace(tmp_path: Path) -> None:
    """A script that does not exist: python's message, status 2, no file."""
    python = _run([sys.executable, "nope.py"], tmp_path)
    traced = _run([*RUN, "nope.py"], tmp_path)
    assert traced.returncode == python.returncode == 2
    assert "can't open file" in traced.stderr and "nope.py" in traced.stderr
    assert "Traceback" not in traced.stderr
    assert os.listdir(tmp_path) == []


def test_a_missing_module_is_one_line_and_status_1(tmp_path: Path) -> None:
    """`-m` of a module that does not exist: one line naming it, status 1."""
    traced = _run([*RUN, "-q", "-m", "no_such_module_here"], tmp_path)
    assert traced.returncode == 1
    assert traced.stderr == "aiotrace run: No module named no_such_module_here\n"


def test_an_import_error_inside_the_module_is_a_traceback(tmp_path: Path) -> None:
    """An ImportError raised by the module's own code is the program's
    uncaught exception, printed with its traceback, not mistaken for a
    missing module."""
    _write(tmp_path / "imp.py", "import no_such_dependency_here\n")
    python = _run([sys.executable, "-m", "imp"], tmp_path)
    traced = _run([*RUN, "-q", "-m", "imp"], tmp_path)
    assert traced.returncode == python.returncode == 1
    assert "Traceback" in traced.stderr
    assert traced.stderr.splitlines()[-1] == python.stderr.splitlines()[-1]


@pytest.mark.parametrize("argv", [[], ["-o", "x.trace"], ["-m"]])
def test_nothing_to_run_is_a_usage_error(tmp_path: Path, argv: list[str]) -> None:
    """Without a script or module, `aiotrace run` prints its usage, status 2."""
    traced = _run([*RUN, *argv], tmp_path)
    assert traced.returncode == 2
    assert "usage: aiotrace run" in traced.stderr


def test_a_truncated_trace_is_still_summarised(tmp_path: Path) -> None:
    """The traced program may cut its own trace short (here it stops tracing
    and truncates the file); the summary says so instead of failing."""
    _write(
        tmp_path / "cut.py",
        """
        import os, aiotrace
        for i in range(100):
            aiotrace.log("x", str(i))
        aiotrace.stop()
        size = os.path.getsize("cut.trace")
        with open("cut.trace", "r+b") as f:
            f.truncate(size - 3)
        """,
    )
    traced = _run([*RUN, "cut.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    summary = "\n".join(_summary_lines(traced.stderr))
    assert "truncated" in summary
    with pytest.raises(TraceError):
        read_events(tmp_path / "cut.trace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT")
@pytest.mark.parametrize("runner", ["python", "aiotrace run"])
def test_an_uncaught_sigint_kills_by_the_signal_as_under_python(
    tmp_path: Path, runner: str
) -> None:
    """SIGINT to a program that does not catch it: under python the process
    dies of SIGINT after printing the traceback (-2 here, 130 in a shell),
    and `aiotrace run` ends the same way, with the trace whole."""
    _write(
        tmp_path / "server.py",
        """
        import asyncio

        async def serve():
            asyncio.get_running_loop().call_soon(print, "serving")
            await asyncio.sleep(60)

        asyncio.run(serve())
        """,
    )
    argv = [sys.executable, "server.py"] if runner == "python" else [*RUN, "server.py"]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "serving\n"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        # Reaped, its pipes closed (an unclosed pipe warns, an error, in
        # whichever later test the garbage collector finds it).
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGINT
    assert stderr.splitlines()[stderr.splitlines().index("KeyboardInterrupt") - 1]
    if runner != "python":
        assert _summary_lines(stderr)[0].startswith(
            "aiotrace: trace written to server.trace"
        )
        _valid_events(tmp_path / "server.trace")


def test_a_missing_module_writes_no_trace_and_no_summary(tmp_path: Path) -> None:
    """`aiotrace run -m nope_mod`, without -q: one line, as python's, status
    1 as python's, no trace file and no summary."""
    python = _run([sys.executable, "-m", "nope_mod"], tmp_path)
    traced = _run([*RUN, "-m", "nope_mod"], tmp_path)
    assert traced.returncode == python.returncode == 1
    assert traced.stderr == "aiotrace run: No module named nope_mod\n"
    assert python.stderr.endswith(": No module named nope_mod\n")
    assert os.listdir(tmp_path) == []


def test_a_program_with_no_event_loop_is_said_so(tmp_path: Path) -> None:
    """A trace that ends with no event loop seen says so plainly, instead of
    an all-clear about stalls it could not have seen."""
    _write(tmp_path / "plain.py", "import time\ntime.sleep(0.01)\n")
    traced = _run([*RUN, "plain.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    summary = _summary_lines(traced.stderr)
    assert summary[1] == (
        "aiotrace: no event loop was seen: nothing ran on asyncio, uvloop or "
        "trio while tracing, so the trace has no coroutines and no stalls"
    )
    assert not any("no loop stalls" in line for line in summary)
    events = _valid_events(tmp_path / "plain.trace")
    assert not [
        ev
        for ev in events
        if ev.kind is EventKind.LABEL and ev.label.resource.kind is ResourceKind.LOOP
    ]


def test_the_summary_built_while_tracing_is_what_the_file_says(
    tmp_path: Path,
) -> None:
    """The summary is built from the events as they are encoded, not read
    back; its stalls and task types are exactly what analysing the file
    gives (durations, where, holder, quantiles). Each of the 4 hogs blocks
    until the watchdog sampled it 3 times, so each is named at its line."""
    from aiotrace import analysis
    from aiotrace._run_summary import _stall_lines
    from aiotrace.analysis import format_duration

    _write(
        tmp_path / "busy.py",
        """
        import asyncio, threading, time
        import aiotrace
        from aiotrace import _session

        def sampled():  # white-box: the watchdog's samples of this stall
            watchdog = _session.current().runtime._watchdog
            return watchdog._samples.get(threading.get_ident(), 0) > 3

        def hog(s):
            for _ in range(100):
                time.sleep(s)  # the hog
                if sampled():
                    break

        async def handler(i):
            async with aiotrace.new_task("request"):
                await asyncio.sleep(0.001 * i)
                if i % 10 == 0:
                    hog(0.12 + i / 1000)

        async def main():
            await asyncio.gather(*(handler(i) for i in range(40)))

        asyncio.run(main())
        """,
    )
    traced = _run([*RUN, "busy.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    summary = _summary_lines(traced.stderr)
    s = analysis.analyze(str(tmp_path / "busy.trace"))
    expected = _stall_lines(s.stalls, 0.1)
    # The findings open the summary (the hogs' blocking call), then the stalls.
    assert summary[1] == "aiotrace: Findings (by time lost)", summary
    assert "blocking call in hog (" in summary[2], summary
    first = summary.index(expected[0])
    assert summary[first : first + len(expected)] == expected
    line = (
        (tmp_path / "busy.py")
        .read_text()
        .splitlines()
        .index("        time.sleep(s)  # the hog")
    )
    # The 4 hogs (a loaded machine may add stalls of its own, also listed).
    hogs = [st for st in s.stalls if st.coroutine_name == "handler"]
    assert len(hogs) == 4, s.stalls
    # The summary lists the 3 longest: each hog among them named at its line.
    top = sorted(s.stalls, key=lambda st: -st.duration_ns)[:3]
    shown = sum(1 for st in top if st.coroutine_name == "handler")
    named = [
        t for t in expected if f"hog (busy.py:{line + 1}) in coroutine handler" in t
    ]
    assert len(named) == shown >= 1, expected
    d = s.tasks["request"]
    assert d.count == 40
    assert (
        f"  request: 40 done, p50 {format_duration(d.p50)}, "
        f"p90 {format_duration(d.p90)}, max {format_duration(d.max_ns)}"
    ) in summary


@pytest.mark.parametrize(
    ("flags", "check"),
    [
        (["--block-stacks"], "block_stacks"),
        (["--no-block-stacks"], "no_block_stacks"),
        (["--no-runtime-events"], "no_runtime"),
        (["--metrics-interval", "off"], "no_metrics"),
        (["--annotation-stacks"], "annotation_stacks"),
        (["--max-buffer-mib", "1"], "plain"),
        (["--flight", "30", "--block-stacks", "--metrics-interval", "off"], "flight"),
    ],
)
def test_every_start_option_is_a_flag(
    tmp_path: Path, flags: list[str], check: str
) -> None:
    """Each option of aiotrace.start is a flag of `aiotrace run`, and the
    trace shows it took effect."""
    _write(
        tmp_path / "waits.py",
        """
        import asyncio
        import aiotrace

        async def waiter(ev):
            await ev.wait()

        async def deeper(ev):
            await waiter(ev)

        async def main():
            ev = asyncio.Event()
            t = asyncio.create_task(deeper(ev))
            await asyncio.sleep(0.25)
            aiotrace.log("note", "set")
            ev.set()
            await t

        asyncio.run(main())
        """,
    )
    traced = _run([*RUN, *flags, "waits.py"], tmp_path)
    assert traced.returncode == 0, traced.stderr
    events = _valid_events(tmp_path / "waits.trace")
    blocks = [
        ev.state_transition
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.new is CoroState.WAITING
    ]
    metrics = [ev for ev in events if ev.kind is EventKind.METRIC]
    logs = [ev for ev in events if ev.kind is EventKind.LOG]
    assert len(logs) == 1
    funcs = [[f.func for f in b.stack.frames] for b in blocks]
    if check in ("block_stacks", "flight"):
        assert ["Event.wait", "waiter", "deeper"] in funcs, funcs
    if check == "no_block_stacks":
        # Without block stacks a wait records its site only: the library
        # function and the program's frame that awaits it.
        assert ["Event.wait", "waiter"] in funcs, funcs
        assert all(len(f) <= 2 for f in funcs), funcs
    if check == "no_runtime":
        assert blocks == [] and metrics == []
        assert "runtime events were off" in traced.stderr
    else:
        assert blocks
    if check in ("no_metrics", "flight"):
        assert not [m for m in metrics if m.metric.name.startswith("/memory")]
    if check == "plain":
        assert [m for m in metrics if m.metric.name.startswith("/memory")]
    assert bool(logs[0].stack) == (check == "annotation_stacks")


def test_max_buffer_goes_without_flight(tmp_path: Path) -> None:
    """--max-buffer-mib bounds a trace written as it goes; with --flight the
    bound is --flight-max-mib: a usage error names it."""
    _write(tmp_path / "p.py", "pass\n")
    traced = _run([*RUN, "--flight", "5", "--max-buffer-mib", "8", "p.py"], tmp_path)
    assert traced.returncode == 2
    assert "--flight-max-mib" in traced.stderr
    assert os.listdir(tmp_path) == ["p.py"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO and SIGINT")
def test_a_second_ctrl_c_while_finishing_says_what_it_left(tmp_path: Path) -> None:
    """The trace goes to a FIFO that nobody reads, so finishing it blocks
    once the pipe is full. Ctrl-C then (after the program's last line ran)
    leaves at once: aiotrace says the trace is cut short, and the process
    dies of SIGINT."""
    _write(
        tmp_path / "chatty.py",
        """
        import aiotrace
        for i in range(20000):
            aiotrace.log("chat", "x" * 100)
        print("done", flush=True)
        """,
    )
    fifo = tmp_path / "t.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with subprocess.Popen(
            [*RUN, "-o", "t.fifo", "chatty.py"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                assert proc.stdout is not None and proc.stderr is not None
                assert proc.stdout.readline() == "done\n"
                # Until the process is gone: a signal that lands before the
                # finishing began interrupts what is left of the program.
                while proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=1)
                stderr = proc.stderr.read()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()  # and closes its pipes
    finally:
        os.close(reader)
    assert proc.returncode == -signal.SIGINT
    assert (
        "aiotrace: interrupted while finishing the trace; t.fifo is cut short "
        "(aiotrace reads it up to the cut, with a warning)\n"
    ) in stderr
    assert "aiotrace: trace written to" not in stderr
