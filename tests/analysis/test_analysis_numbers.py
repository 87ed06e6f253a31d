"""Numbers that do not mislead: loop CPU beside wall-clock busy time, stalls
that are GC's or the OS's, aiotrace's own frames never blamed, and mean
scheduler wait, on real traced programs."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import aiotrace_cli

import aiotrace
from aiotrace import analysis, reader
from aiotrace.analysis._stalls import is_own_frame, program_frames
from aiotrace.reader import Stack, StackFrame

HAS_SCHEDSTAT = os.path.exists(f"/proc/self/task/{os.getpid()}/schedstat")


def check(path: Path) -> analysis.Summary:
    """Validates the trace at ``path`` and analyzes it."""
    with path.open("rb") as f:
        assert reader.validate(reader.Reader(f)) == []
    return analysis.analyze(path)


class Cycle:
    """An object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_a_stall_that_is_a_collection_is_called_gcs(tmp_path: Path) -> None:
    """A step that runs a full collection over a million cyclic objects
    stalls the loop; the stall's GC time covers most of it, it is GC's
    (by_gc), and `stats` and `stalls` say so."""
    path = tmp_path / "gc.trace"

    async def main() -> None:
        junk = [Cycle() for _ in range(1_000_000)]
        await asyncio.sleep(0)
        del junk
        gc.collect()  # frees the million cycles: a long gen2 collection

    with aiotrace.tracing(path, stall_threshold=0.02, metrics_interval=None):
        asyncio.run(main())
    s = check(path)
    gcs = [x for x in s.stalls if x.gc_ns]
    assert gcs, [(x.duration_ns, x.gc) for x in s.stalls]
    last = gcs[-1]
    assert "GC gen2" in last.gc
    assert last.by_gc
    assert 0 < last.gc_ns <= last.duration_ns
    stats = aiotrace_cli("stats", str(path))
    assert stats.returncode == 0, stats.stderr
    assert re.search(r"garbage collection \([^)]*gen2", stats.stdout), stats.stdout
    stalls = aiotrace_cli("stalls", str(path))
    assert "the stall is GC's" in stalls.stdout
    assert "install_gc" not in stats.stdout + stalls.stdout


def test_a_loop_blocked_off_cpu_is_busy_but_not_on_cpu(tmp_path: Path) -> None:
    """A loop whose steps block in time.sleep is busy by the wall clock but
    hardly uses a CPU: its utilisation is high and its CPU utilisation (from
    the loop thread's CPU-time metric) low, and `stats` shows both."""
    path = tmp_path / "sleepy.trace"

    async def main() -> None:
        for _ in range(40):
            time.sleep(0.01)  # blocking: the loop is busy, the CPU idle
            await asyncio.sleep(0)

    with aiotrace.tracing(path, stall_threshold=None, metrics_interval=0.02):
        asyncio.run(main())
    s = check(path)
    (u,) = s.loops
    cpu = u.cpu_utilisation
    assert cpu is not None
    assert u.cpu_span_ns > 0
    assert u.utilisation > 0.8
    assert cpu < 0.5 * u.utilisation
    d = u.to_dict()
    assert d["cpu_ns"] == u.cpu_ns and d["cpu_utilisation"] == round(cpu, 6)
    text = analysis.format_summary(s)
    assert "on CPU" in text
    assert f"{100 * cpu:.1f}%" in text


def test_no_cpu_figures_without_metrics(tmp_path: Path) -> None:
    """With metrics off, the trace does not measure the loop's CPU: the
    figure is None, and `stats` shows "-" rather than a made-up 0%."""
    path = tmp_path / "nometrics.trace"

    async def main() -> None:
        await asyncio.sleep(0.01)

    with aiotrace.tracing(path, metrics_interval=None):
        asyncio.run(main())
    (u,) = check(path).loops
    assert u.cpu_utilisation is None
    assert u.to_dict()["cpu_utilisation"] is None


def test_mean_sched_wait_beside_its_sum(tmp_path: Path) -> None:
    """Each coroutine group has its scheduler wait per coroutine
    (mean_sched_wait_ns = sched_wait_ns / count), in --json and in the text."""
    path = tmp_path / "sched.trace"

    async def child() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(child() for _ in range(50)))

    with aiotrace.tracing(path, metrics_interval=None):
        asyncio.run(main())
    s = check(path)
    g = next(g for g in s.coroutines if g.name.endswith("child"))
    assert g.count == 50
    assert g.sched_wait_ns > 0
    assert g.mean_sched_wait_ns == g.sched_wait_ns / 50
    assert g.to_dict()["mean_sched_wait_ns"] == round(g.sched_wait_ns / 50)
    text = analysis.format_summary(s, top=50)
    assert "mean wait" in text
    row = next(line for line in text.splitlines() if line.strip().startswith(g.name))
    assert analysis.format_duration(g.mean_sched_wait_ns) in row


def test_aiotraces_own_frames_are_never_the_programs() -> None:
    """Frames of aiotrace's modules (its GC callback, hooks, watchdog) are
    taken out of a sampled stack; the program's frames, and the demo program
    shipped inside the package, stay."""
    root = os.path.dirname(aiotrace.__file__)
    on_gc = StackFrame(
        "install_gc.<locals>.on_gc", os.path.join(root, "_runtime.py"), 40
    )
    hook = StackFrame("_run", os.path.join(root, "_loop", "_asyncio.py"), 170)
    demo = StackFrame("blocking", os.path.join(root, "_demo.py"), 12)
    mine = StackFrame("handler", "/srv/app/aiotrace_app.py", 7)
    assert is_own_frame(on_gc) and is_own_frame(hook)
    assert not is_own_frame(demo) and not is_own_frame(mine)
    stack = Stack((on_gc, mine, hook, demo))
    assert program_frames(stack).frames == (mine, demo)
    clean = Stack((mine, demo))
    assert program_frames(clean) is clean


@pytest.mark.skipif(not HAS_SCHEDSTAT, reason="needs Linux schedstat")
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs affinity")
@pytest.mark.parametrize(
    ("work", "sampled"),
    [
        ("for _ in range(1_000_000): n += 1", True),  # Python: sampled
        ("n = sum(range(2_000_000))", False),  # holds the GIL: no sample
    ],
)
def test_a_stall_the_os_caused_says_so(
    tmp_path: Path, work: str, sampled: bool
) -> None:
    """A loop thread that the OS hardly runs (niced to 19 and pinned to the
    CPU a busy child process at nice 0 is pinned to) stalls on work that
    takes some 0.03 s alone: the stall's run-queue wait is most of the time
    measured, it is `descheduled`, and `stalls` says the OS did not run the
    loop thread rather than blaming the program; also when the work holds
    the GIL, so that the watchdog cannot run during it: the reading it took
    before the step then covers the stall."""
    path = tmp_path / "desched.trace"
    program = tmp_path / "desched.py"
    program.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os, subprocess, sys
            import aiotrace

            cpu = min(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {{cpu}})
            hog = subprocess.Popen(
                [sys.executable, "-c", "while True: pass"],
                preexec_fn=lambda: os.sched_setaffinity(0, {{cpu}}),
            )

            async def spin():
                await asyncio.sleep(0)
                os.setpriority(os.PRIO_PROCESS, 0, 19)  # this thread only
                n = 0
                {work}
                assert n

            async def main():
                await asyncio.sleep(0.2)  # the watchdog reads the thread's CPU
                await asyncio.create_task(spin())

            try:
                with aiotrace.tracing({str(path)!r}, stall_threshold=0.05):
                    asyncio.run(main())
            finally:
                hog.kill()
                hog.wait()
            """
        )
    )
    r = subprocess.run(
        [sys.executable, str(program)],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert r.returncode == 0, r.stderr
    s = check(path)
    stalls = [x for x in s.stalls if x.measured_ns]
    assert stalls, [(x.duration_ns, x.measured_ns) for x in s.stalls]
    x = max(stalls, key=lambda x: x.duration_ns)
    assert x.descheduled, (x.cpu_ns, x.runqueue_ns, x.measured_ns)
    assert x.runqueue_ns is not None and x.measured_ns is not None
    assert x.runqueue_ns <= x.measured_ns  # a wait going on at the first reading is cut
    assert x.measured_ns >= 0.5 * x.duration_ns
    out = aiotrace_cli("stalls", str(path)).stdout
    assert "the OS did not run it" in out


def test_aiotrace_runs_exit_summary_calls_a_gc_stall_gcs(tmp_path: Path) -> None:
    """`aiotrace run`'s exit summary (built while tracing) names a stall
    that was a collection as garbage collection, not the line that
    happened to be running, and shows none of aiotrace's own frames."""
    program = tmp_path / "gcstall.py"
    program.write_text(
        textwrap.dedent(
            """
            import asyncio, gc

            class Cycle:
                def __init__(self):
                    self.me = self

            async def main():
                junk = [Cycle() for _ in range(1_000_000)]
                await asyncio.sleep(0)
                del junk
                gc.collect()

            asyncio.run(main())
            """
        )
    )
    out = tmp_path / "gcstall.trace"
    r = aiotrace_cli("run", "-o", str(out), "--stall-threshold", "0.02", str(program))
    assert r.returncode == 0, r.stderr
    assert re.search(r"garbage collection \([^)]*gen2", r.stderr), r.stderr
    assert "on_gc" not in r.stderr and "_runtime.py" not in r.stderr
    check(out)
