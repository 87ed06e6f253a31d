"""Following child processes: `aiotrace run` and `aiotrace.follow_children`
make every child Python process write its own trace, and stats, stalls and
export read them together on one timeline. Real child processes, each of
the three start methods, a Pool and a ProcessPoolExecutor."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aiotrace import reader
from aiotrace._follow import child_path, child_traces
from aiotrace.analysis import analyze, analyze_processes

RUN = [sys.executable, "-m", "aiotrace", "run"]
CLI = [sys.executable, "-m", "aiotrace"]

PROGRAM = """\
import asyncio, multiprocessing as mp, os, sys
from concurrent.futures import ProcessPoolExecutor

async def child_work(n):
    await asyncio.sleep(0)
    return os.getpid()

def child(n):
    return asyncio.run(child_work(n))

if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    pids = set()
    with ctx.Pool(2) as pool:
        pids.update(pool.map(child, range(4)))
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        pids.update(ex.map(child, range(4)))
    print(" ".join(map(str, sorted(pids))))
"""

PROCESS = """\
import asyncio, multiprocessing as mp, os, sys

async def child_work(n):
    await asyncio.sleep(0)

def child(n):
    asyncio.run(child_work(n))

if __name__ == "__main__":
    p = mp.get_context(sys.argv[1]).Process(target=child, args=(1,))
    p.start()
    p.join()
    print(p.pid, p.exitcode)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("AIOTRACE_PYTEST", None)
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=100,
        env=_env(),
    )


def _valid(path: Path) -> list[reader.Event]:
    events = reader.read_events(path)
    assert reader.validate(events) == [], path
    return events


def _groups(path: Path) -> set[str]:
    return {g.name for g in analyze(path).coroutines}


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_every_child_writes_its_own_trace(tmp_path: Path, method: str) -> None:
    """Under `aiotrace run`, each worker of a Pool and of a
    ProcessPoolExecutor writes app.<pid>.trace, whole and valid, with the
    coroutines it ran; the summary lists the files."""
    (tmp_path / "app.py").write_text(PROGRAM)
    done = _run([*RUN, "-o", "app.trace", "app.py", method], tmp_path)
    assert done.returncode == 0, done.stderr
    workers = {int(p) for p in done.stdout.split()}
    assert workers
    files = {Path(f).name for f in child_traces(str(tmp_path / "app.trace"))}
    for pid in workers:
        name = f"app.{pid}.trace"
        assert name in files, (name, files)
        assert "child_work" in _groups(tmp_path / name)
    for name in files:
        _valid(tmp_path / name)  # every child, also one that did no work
    _valid(tmp_path / "app.trace")
    listed = re.search(r"aiotrace: (\d+) child process traces?: (.*)", done.stderr)
    assert listed is not None, done.stderr
    assert set(listed.group(2).split(", ")) == files
    assert "aiotrace stats app.trace app.*.trace" in done.stderr


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_process_is_followed_and_no_follow_turns_it_off(
    tmp_path: Path, method: str
) -> None:
    """A multiprocessing.Process child is traced into app.<its pid>.trace;
    with --no-follow it is not, and the summary lists no child."""
    (tmp_path / "one.py").write_text(PROCESS)
    done = _run([*RUN, "-o", "app.trace", "one.py", method], tmp_path)
    assert done.returncode == 0, done.stderr
    pid, status = map(int, done.stdout.split())
    assert status == 0
    events = _valid(tmp_path / f"app.{pid}.trace")
    assert any(ev.kind == reader.EventKind.SYNC for ev in events)
    assert "child_work" in _groups(tmp_path / f"app.{pid}.trace")

    done = _run([*RUN, "--no-follow", "-o", "off.trace", "one.py", method], tmp_path)
    assert done.returncode == 0, done.stderr
    assert child_traces(str(tmp_path / "off.trace")) == []
    assert "child process" not in done.stderr


def test_the_library_follows_children(tmp_path: Path) -> None:
    """A program that traces itself follows its children with
    aiotrace.follow_children(path, **options): the child traces with the
    options given (here, no runtime events: annotations only)."""
    (tmp_path / "lib.py").write_text(
        "import multiprocessing as mp, aiotrace\n"
        "def child():\n"
        "    aiotrace.log('in', 'child')\n"
        "if __name__ == '__main__':\n"
        "    aiotrace.follow_children('lib.trace', runtime_events=False)\n"
        "    with aiotrace.tracing('lib.trace'):\n"
        "        p = mp.get_context('spawn').Process(target=child)\n"
        "        p.start(); p.join()\n"
        "    aiotrace.unfollow_children()\n"
        "    q = mp.get_context('spawn').Process(target=child)\n"
        "    q.start(); q.join()\n"
        "    print(p.pid, q.pid)\n"
    )
    done = _run([sys.executable, "lib.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    followed, unfollowed = map(int, done.stdout.split())
    events = _valid(tmp_path / f"lib.{followed}.trace")
    logs = [ev.log for ev in events if ev.kind == reader.EventKind.LOG]
    assert [(lg.category, lg.message) for lg in logs] == [("in", "child")]
    assert not any(ev.kind == reader.EventKind.STATE_TRANSITION for ev in events)
    assert not (tmp_path / f"lib.{unfollowed}.trace").exists()


def test_a_bad_option_is_refused_in_the_parent() -> None:
    """follow_children checks its options at once, not in each child."""
    import aiotrace

    with pytest.raises(ValueError, match="stall_threshold"):
        aiotrace.follow_children("x.trace", stall_threshold=-1)
    with pytest.raises(TypeError, match="nope"):
        aiotrace.follow_children("x.trace", nope=1)


def test_child_path_names() -> None:
    """app.trace gives app.<pid>.trace; a name without suffix gets .<pid>."""
    assert child_path("/d/app.trace", 42) == "/d/app.42.trace"
    assert child_path("/d/app", 42) == "/d/app.42"
    assert child_path("/d.x/app.v1.trace", 7) == "/d.x/app.v1.7.trace"


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A parent trace and its children's (spawn: a Pool, an executor)."""
    tmp = tmp_path_factory.mktemp("family")
    (tmp / "app.py").write_text(PROGRAM)
    done = _run([*RUN, "-q", "-o", "app.trace", "app.py", "spawn"], tmp)
    assert done.returncode == 0, done.stderr
    children = [tmp / Path(f).name for f in child_traces(str(tmp / "app.trace"))]
    assert children
    return tmp / "app.trace", children


def test_stats_of_several_traces(family: tuple[Path, list[Path]]) -> None:
    """`aiotrace stats` of a parent and its children: one process each, in
    the order they started, children after the parent, and a total that
    sums the coroutines of every process."""
    parent, children = family
    files = [str(parent), *map(str, children)]
    done = _run([*CLI, "stats", "--json", *files], parent.parent)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    procs = doc["processes"]
    assert sorted(p["file"] for p in procs) == sorted(files)
    assert procs[0]["file"] == str(parent)  # the parent's trace began first
    starts = [p["wall_start_ns"] for p in procs]
    assert starts == sorted(starts)
    assert all(p["offset_ns"] is not None and p["syncs"] >= 1 for p in procs)
    for p in procs[1:]:
        assert p["pid"] == int(Path(p["file"]).name.split(".")[1])
    per = sum(
        g["count"]
        for p in procs
        for g in p["summary"]["coroutines"]
        if g["name"] == "child_work"
    )
    total = {g["name"]: g["count"] for g in doc["total"]["coroutines"]}
    assert per == total["child_work"] == 8
    assert doc["total"]["events"] == sum(p["summary"]["events"] for p in procs)
    assert doc["unaligned"] == []

    text = _run([*CLI, "stats", *files], parent.parent)
    assert text.returncode == 0, text.stderr
    assert f"{len(files)} processes, on one timeline" in text.stdout
    assert f"=== all {len(files)} processes ===" in text.stdout
    for child in children:
        assert f"=== pid {child.name.split('.')[1]} ({child}) ===" in text.stdout


def test_analyze_processes_matches_each_analysis(
    family: tuple[Path, list[Path]],
) -> None:
    """Each process's figures are those of analysing its trace alone; its
    offset is its first sync's wall clock minus its trace clock."""
    parent, children = family
    many = analyze_processes([parent, *children])
    for p in many.processes:
        alone = analyze(p.file)
        assert p.summary.to_dict() == alone.to_dict()
        sync = next(
            ev for ev in reader.read_events(p.file) if ev.kind == reader.EventKind.SYNC
        )
        assert p.offset_ns == sync.sync.wall_time_ns - sync.time


def test_stalls_of_several_traces(tmp_path: Path) -> None:
    """`aiotrace stalls` of a parent and a child that stalls: the child's
    stall is listed, naming its process and its line. (The child blocks
    until the watchdog sampled it 3 times, however loaded the machine.)"""
    (tmp_path / "st.py").write_text(
        "import asyncio, multiprocessing as mp, threading, time\n"
        "from aiotrace import _session\n"
        "def sampled():  # white-box: the watchdog's samples of this stall\n"
        "    watchdog = _session.current().runtime._watchdog\n"
        "    return watchdog._samples.get(threading.get_ident(), 0) > 3\n"
        "async def hog():\n"
        "    for _ in range(100):\n"
        "        time.sleep(0.3)  # the stall\n"
        "        if sampled():\n"
        "            break\n"
        "def child():\n"
        "    asyncio.run(hog())\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=child)\n"
        "    p.start(); p.join()\n"
        "    print(p.pid)\n"
    )
    done = _run([*RUN, "-q", "-o", "st.trace", "st.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    out = _run([*CLI, "stalls", "st.trace", f"st.{pid}.trace"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"[pid {pid}] hog" in out.stdout
    assert "st.py:8" in out.stdout


def test_export_of_several_traces(
    family: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """`aiotrace export` of several traces: each trace is its own pair of
    processes, named by its pid, shifted to where its sync puts it."""
    parent, children = family
    files = [str(parent), *map(str, children)]
    out = tmp_path / "all.json"
    done = _run([*CLI, "export", "-o", str(out), *files], parent.parent)
    assert done.returncode == 0, done.stderr
    assert f"{len(files)} processes" in done.stdout
    doc = json.loads(out.read_text())
    names = {
        e["pid"]: e["args"]["name"]
        for e in doc["traceEvents"]
        if e.get("name") == "process_name"
    }
    assert len(names) == 2 * len(files)
    many = analyze_processes(files)
    shifts = {p["name"]: p["shift_ns"] for p in doc["otherData"]["processes"]}
    origin = many.processes[0].wall_start_ns
    for p in many.processes:
        assert f"{p.name}: aiotrace" in names.values()
        assert f"{p.name}: coroutines" in names.values()
        assert p.wall_start_ns is not None and origin is not None
        assert shifts[p.name] == p.wall_start_ns - origin
    steps = {}
    for e in doc["traceEvents"]:
        if e.get("cat") == "step" and e.get("name", "").startswith("child_work"):
            steps.setdefault(names[e["pid"]], []).append(e["ts"] * 1000)
    assert len(steps) >= 1
    for name, ts in steps.items():
        assert min(ts) >= shifts[name.split(":")[0]]

    proto = tmp_path / "all.pftrace"
    done = _run([*CLI, "export", "-o", str(proto), *files], parent.parent)
    assert done.returncode == 0, done.stderr
    assert proto.stat().st_size > 0


def test_a_child_sees_sigterm_as_python_gives_it(tmp_path: Path) -> None:
    """In a followed child, SIGTERM still reads as SIG_DFL, also after the
    program sets it so (as gunicorn's uvicorn worker does); a SIGTERM the
    child raises then kills it as the default would (status -SIGTERM), and
    its trace is whole first, with the event logged before the signal."""
    (tmp_path / "term.py").write_text(
        "import multiprocessing as mp, os, signal, aiotrace\n"
        "def child():\n"
        "    first = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "    again = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n"
        "    aiotrace.log('sigdfl', f'{first} {again}')\n"
        "    signal.raise_signal(signal.SIGTERM)\n"
        "    aiotrace.log('never', 'reached')\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=child)\n"
        "    p.start(); p.join()\n"
        "    print(p.pid, p.exitcode)\n"
    )
    done = _run([*RUN, "-q", "-o", "term.trace", "term.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    pid, status = map(int, done.stdout.split())
    assert status == -15
    events = _valid(tmp_path / f"term.{pid}.trace")
    logs = [
        (ev.log.category, ev.log.message)
        for ev in events
        if ev.kind == reader.EventKind.LOG
    ]
    assert logs == [("sigdfl", "True True")]


def test_stats_of_several_traces_with_one_cut_short(
    family: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """A child trace cut short (a SIGKILLed worker) is still analysed up to
    the cut; stats says which file, and exits 1; a file that is not a trace
    is an error naming it (exit 1, nothing printed)."""
    parent, children = family
    cut = tmp_path / children[0].name
    data = children[0].read_bytes()
    cut.write_bytes(data[: len(data) - 7])
    done = _run([*CLI, "stats", "--json", str(parent), str(cut)], tmp_path)
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc["processes"][1]["summary"]["truncated"]
    assert f"aiotrace: {cut}: " in done.stderr
    assert "truncated" in done.stderr

    junk = tmp_path / "junk.trace"
    junk.write_bytes(b"not a trace at all")
    done = _run([*CLI, "stats", str(parent), str(junk)], tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert str(junk) in done.stderr


def test_a_forked_child_that_execs_leaves_an_empty_file_left_out(
    tmp_path: Path,
) -> None:
    """A child of os.fork() that runs another program (os.execv) leaves an
    empty trace: the summary lists no child but says so, and stats of
    app.trace and the empty file reads the parent's, leaving the empty one
    out with a note."""
    (tmp_path / "ex.py").write_text(
        "import os, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execv(sys.executable, [sys.executable, '-c', 'pass'])\n"
        "os.waitpid(pid, 0)\n"
        "print(pid)\n"
    )
    done = _run([*RUN, "-o", "ex.trace", "ex.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    empty = tmp_path / f"ex.{pid}.trace"
    assert empty.stat().st_size == 0
    assert "aiotrace: no child process trace\n  and 1 empty" in done.stderr
    out = _run([*CLI, "stats", "ex.trace", empty.name], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 process, on one timeline")
    assert f"aiotrace: {empty.name}: empty; left out" in out.stderr


def test_an_os_fork_child_that_returns_through_main(tmp_path: Path) -> None:
    """A child of a plain os.fork() that ends by leaving the script (as a
    gunicorn worker does, by sys.exit) finishes its own trace and prints
    no summary: the parent's summary is printed once, by the parent."""
    (tmp_path / "fk.py").write_text(
        "import asyncio, os, sys\n"
        "async def forked_work():\n"
        "    await asyncio.sleep(0)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    asyncio.run(forked_work())\n"
        "    sys.exit(3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(pid, os.waitstatus_to_exitcode(status))\n"
    )
    done = _run([*RUN, "-o", "fk.trace", "fk.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    pid, status = map(int, done.stdout.split())
    assert status == 3
    assert done.stderr.count("aiotrace: trace written to") == 1
    assert "forked_work" in _groups(tmp_path / f"fk.{pid}.trace")
    _valid(tmp_path / f"fk.{pid}.trace")
    _valid(tmp_path / "fk.trace")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_grandchildren_are_followed(tmp_path: Path, method: str) -> None:
    """A child's own child writes its trace too, beside the first one's,
    with its own pid: each of the three traces is whole and holds its own
    process's coroutine."""
    (tmp_path / "gc.py").write_text(
        "import asyncio, multiprocessing as mp, sys\n"
        "async def grandchild_work():\n"
        "    await asyncio.sleep(0)\n"
        "async def child_work():\n"
        "    await asyncio.sleep(0)\n"
        "def grandchild():\n"
        "    asyncio.run(grandchild_work())\n"
        "def child(method, q):\n"
        "    asyncio.run(child_work())\n"
        "    p = mp.get_context(method).Process(target=grandchild)\n"
        "    p.start(); p.join()\n"
        "    q.put(p.pid)\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context(sys.argv[1])\n"
        "    q = ctx.Queue()\n"
        "    p = ctx.Process(target=child, args=(sys.argv[1], q))\n"
        "    p.start(); grand = q.get(); p.join()\n"
        "    print(p.pid, grand)\n"
    )
    done = _run([*RUN, "-q", "-o", "gc.trace", "gc.py", method], tmp_path)
    assert done.returncode == 0, done.stderr
    child, grand = map(int, done.stdout.split())
    for pid, work in ((child, "child_work"), (grand, "grandchild_work")):
        path = tmp_path / f"gc.{pid}.trace"
        _valid(path)
        groups = _groups(path)
        assert work in groups
        other = ({"child_work", "grandchild_work"} - {work}).pop()
        assert other not in groups


def test_report_of_several_traces(
    family: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """`aiotrace report` of a parent and its children: one page, every
    process's loops labelled with its pid, every child's coroutines in it;
    the merged stream validates (ids kept apart) and has every event; a
    child cut short is said on stderr, and the others are still whole."""
    from aiotrace.export import build_report_data
    from aiotrace.export._processes import merged_events

    parent, children = family
    files = [parent, *children]
    merged = list(merged_events(files))
    assert reader.validate(merged) == []
    assert len(merged) == sum(len(reader.read_events(f)) for f in files)
    times = [ev.time for ev in merged]
    assert times == sorted(times)
    data = build_report_data(iter(merged), title="family")
    labels = {u["label"] for u in data["loops"]}
    for child in children:
        pid = child.name.split(".")[1]
        if analyze(child).loops:
            assert any(lb.startswith(f"pid {pid}: ") for lb in labels), labels
    work = {g["name"]: g["count"] for g in data["coroutines"]}
    assert work["child_work"] == 8

    cut = tmp_path / children[0].name
    raw = children[0].read_bytes()
    cut.write_bytes(raw[: len(raw) - 7])
    out = tmp_path / "all.html"
    args = [*CLI, "report", "-o", str(out), str(parent), str(cut)]
    done = _run([*args, *map(str, children[1:])], tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"aiotrace: {cut}: " in done.stderr
    assert f"wrote {out}: {len(files)} processes" in done.stdout
    assert out.read_text().count("child_work") >= 1
