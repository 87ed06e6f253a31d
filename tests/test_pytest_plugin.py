"""The pytest plugin, run the way users run it: pytest in a subprocess, with
the plugin found through its ``pytest11`` entry point."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from aiotrace import analysis, reader
from aiotrace.pytest_plugin import MAX_NAME, trace_name

pytest_plugins = ["pytester"]

INI = """\
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A test project with the suite's own strict settings."""
    pytester.makefile(".ini", pytest=INI)
    return pytester


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_it=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def labels(events: list[reader.Event]) -> dict[str, reader.Event]:
    """Returns each label with the event that gave it."""
    return {ev.label.label: ev for ev in events if ev.kind is reader.EventKind.LABEL}


def logs(events: list[reader.Event]) -> list[str]:
    return [ev.log.message for ev in events if ev.kind is reader.EventKind.LOG]


def traces(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(directory.glob("*.trace"))}


def read_valid(path: Path) -> list[reader.Event]:
    events = reader.read_events(str(path))
    assert reader.validate(events) == []
    return events


def test_inactive_without_the_option(project: pytest.Pytester) -> None:
    """Without --aiotrace and the fixture, the plugin is loaded but traces
    nothing, writes nothing and does not import the reader."""
    result = run(
        project,
        """
        import sys
        import aiotrace

        def test_untraced():
            assert not aiotrace.is_enabled()
            assert "aiotrace.reader" not in sys.modules
            assert "aiotrace._pytest_stalls" not in sys.modules
        """,
        "--trace-config",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*aiotrace.pytest_plugin*"])
    assert not list(project.path.rglob("*.trace"))
    assert "aiotrace:" not in result.stdout.str()


def test_sync_test_with_a_thread_running_a_loop(project: pytest.Pytester) -> None:
    """A sync test's thread and the loop it runs are in the test's trace,
    named after the test id."""
    result = run(
        project,
        """
        import asyncio
        import threading

        def test_thread():
            async def worker_main():
                await asyncio.sleep(0.001)

            t = threading.Thread(target=asyncio.run, args=(worker_main(),), name="looper")
            t.start()
            t.join()
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(passed=1)
    files = traces(project.path / "out")
    assert list(files) == ["test_it.py__test_thread.trace"]
    found = labels(read_valid(files["test_it.py__test_thread.trace"]))
    thread = found["looper"].label.resource.id
    assert found["test_thread.<locals>.worker_main"].thread == thread
    assert "_UnixSelectorEventLoop in looper" in found
    result.stdout.fnmatch_lines([f"aiotrace: 1 test trace in {project.path / 'out'}"])


def test_pytest_asyncio_test_and_its_async_fixture(project: pytest.Pytester) -> None:
    """A pytest-asyncio test is traced with its async fixture's setup and
    teardown."""
    result = run(
        project,
        """
        import asyncio
        import pytest
        import pytest_asyncio

        @pytest_asyncio.fixture
        async def resource():
            async def fixture_setup_work():
                await asyncio.sleep(0)

            async def fixture_teardown_work():
                await asyncio.sleep(0)

            await asyncio.create_task(fixture_setup_work())
            yield
            await asyncio.create_task(fixture_teardown_work())

        @pytest.mark.asyncio
        async def test_aio(resource):
            async def helper():
                await asyncio.sleep(0.001)

            await asyncio.gather(helper())
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(passed=1)
    found = labels(read_valid(project.path / "out" / "test_it.py__test_aio.trace"))
    for name in (
        "resource.<locals>.fixture_setup_work",
        "test_aio",
        "test_aio.<locals>.helper",
        "resource.<locals>.fixture_teardown_work",
    ):
        assert name in found, sorted(found)
    order = [found[name].time for name in found if "work" in name or "helper" in name]
    assert order == sorted(order)


def test_anyio_tests_on_asyncio_and_trio(project: pytest.Pytester) -> None:
    """anyio's plugin runs the test in the traced window, on both backends,
    one trace per parametrised id."""
    result = run(
        project,
        """
        import anyio
        import pytest
        import aiotrace

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_any(anyio_backend):
            async def child():
                await anyio.sleep(0.001)

            aiotrace.log("backend", anyio_backend)
            async with anyio.create_task_group() as tg:
                tg.start_soon(child)

        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["asyncio"])
        async def test_fixture(anyio_backend, aiotrace_events):
            async def child():
                await anyio.sleep(0.001)

            async with anyio.create_task_group() as tg:
                tg.start_soon(child)
            assert aiotrace_events.block_reasons("child") == ["sleep"]
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(passed=3)
    files = traces(project.path / "out")
    assert sorted(files) == [
        "test_it.py__test_any_asyncio.trace",
        "test_it.py__test_any_trio.trace",
        "test_it.py__test_fixture_asyncio.trace",
    ]
    on_asyncio = read_valid(files["test_it.py__test_any_asyncio.trace"])
    assert logs(on_asyncio) == ["asyncio"]
    assert any(label.endswith(".child") for label in labels(on_asyncio))
    on_trio = read_valid(files["test_it.py__test_any_trio.trace"])
    assert logs(on_trio) == ["trio"]
    # anyio runs trio tests as a guest run: its tasks are traced too.
    assert any(label.endswith(".child") for label in labels(on_trio))


def test_parametrised_and_long_ids_get_distinct_files(
    project: pytest.Pytester,
) -> None:
    """Ids that read the same once made safe for a file name, and ids too long
    for one, still get a file each, and each file holds its own test."""
    long_id = "x" * 300
    result = run(
        project,
        f"""
        import pytest
        import aiotrace

        @pytest.mark.parametrize("x", ["a/b", "a_b", "a:b", "{long_id}"],
                                 ids=["a/b", "a_b", "a:b", "{long_id}"])
        def test_param(x):
            aiotrace.log("param", x)
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(passed=4)
    files = traces(project.path / "out")
    assert len(files) == 4
    assert all(len(name) <= MAX_NAME + len(".trace") for name in files)
    assert "test_it.py__test_param_a_b.trace" in files
    found = sorted(logs(read_valid(p))[0] for p in files.values())
    assert found == sorted(["a/b", "a_b", "a:b", long_id])


def test_trace_name() -> None:
    """trace_name keeps safe characters, replaces the rest, and cuts long ids
    with a hash that tells them apart."""
    assert trace_name("tests/test_x.py::TestA::test_b[1-2]") == (
        "tests_test_x.py__TestA__test_b_1-2"
    )
    assert trace_name("../.hidden") == "hidden"
    a, b = trace_name("t::" + "a" * 200), trace_name("t::" + "a" * 199 + "b")
    assert len(a) == len(b) == MAX_NAME
    assert a != b


def test_keep_failed_keeps_only_the_failed_trace(project: pytest.Pytester) -> None:
    """--aiotrace-keep=failed deletes the traces of tests that passed, were
    skipped or failed as expected."""
    result = run(
        project,
        """
        import pytest

        def test_pass():
            pass

        def test_fail():
            assert 1 == 2

        @pytest.mark.xfail(strict=True)
        def test_xfail():
            assert 1 == 2

        def test_skip():
            pytest.skip("no")
        """,
        "--aiotrace=out",
        "--aiotrace-keep=failed",
    )
    result.assert_outcomes(passed=1, failed=1, xfailed=1, skipped=1)
    assert list(traces(project.path / "out")) == ["test_it.py__test_fail.trace"]
    result.stdout.fnmatch_lines(
        ["aiotrace: 1 trace of failed tests (of 4 traced) in *"]
    )


def test_failing_report_names_the_trace_and_its_stall(
    project: pytest.Pytester,
) -> None:
    """A failing test's report opens with the trace's findings, then names
    its trace file and each stall in it: the coroutine, the line that held
    the loop, and the program's frames that called it."""
    result = run(
        project,
        """
        import asyncio
        import threading
        import time
        import pytest
        from aiotrace import _session

        def load_all():
            # 0.3 s, and again until the watchdog sampled it 3 times (a
            # loaded machine may starve it), in one line of C calls.
            counts = _session.current().runtime._watchdog._samples
            me = threading.get_ident()
            while time.sleep(0.3) or counts.get(me, 0) <= 3:  # the stall
                pass

        async def slow_handler():
            load_all()  # the call

        @pytest.mark.aiotrace(stall_threshold=0.05)
        def test_slow():
            async def main():
                await asyncio.create_task(slow_handler(), name="handler-1")

            asyncio.run(main())
            assert False, "too slow"
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(failed=1)
    path = project.path / "out" / "test_it.py__test_slow.trace"
    source = project.path / "test_it.py"
    lines = source.read_text().splitlines()
    stall = lines.index(STALL_LINE) + 1
    call = lines.index("    load_all()  # the call") + 1
    events = reader.read_events(str(path))
    assert reader.validate(events) == []
    # The report lists the trace's stalls, longest first: the 0.3 s sleep,
    # and any slow step a loaded machine adds (each a real stall, counted).
    stalls = sorted(
        analysis.analyze(events).stalls, key=lambda st: st.duration_ns, reverse=True
    )
    ours = [st for st in stalls if st.coroutine_name == "slow_handler handler-1"]
    assert len(ours) == 1 and ours[0].duration_ns >= 300_000_000
    n = len(stalls)
    header = "1 loop stall" if n == 1 else f"{n} loop stalls"
    rank = stalls.index(ours[0])
    result.stdout.fnmatch_lines(
        [
            "*- aiotrace -*",
            # The findings come first, the blocking call at the top.
            "Findings (by time lost)",
            f"  1. blocking call in load_all ({source}:{stall})*",
            f"trace: {path}",
            f"{header} (steps over 0.05 s):",
            *["  *.??? s on loop 1 *"] * rank,
            f"  *.??? s on loop 1 in coroutine 'slow_handler handler-1': "
            f"load_all at {source}:{stall}",
            f"      called from slow_handler at {source}:{call}",
            "*short test summary info*",
        ],
        consecutive=False,
    )


def test_many_stalls_are_cut_to_the_longest(project: pytest.Pytester) -> None:
    """A report lists at most the ten longest stalls, and says how many more
    there were."""
    result = run(
        project,
        """
        import asyncio
        import threading
        import time
        import pytest
        from aiotrace import _session

        async def tick():
            # 0.1 s, and again until the watchdog sampled it 3 times (a
            # loaded machine may starve it): each stall names its line.
            counts = _session.current().runtime._watchdog._samples
            me = threading.get_ident()
            while time.sleep(0.1) or counts.get(me, 0) <= 3:
                pass

        @pytest.mark.aiotrace(stall_threshold=0.05)
        def test_ticks():
            async def main():
                for _ in range(12):
                    await asyncio.create_task(tick())

            asyncio.run(main())
            assert False
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # The report counts exactly the trace's stalls: the 12 ticks, and any
    # slow step a loaded machine adds (a real stall too, in the trace).
    events = reader.read_events(
        str(project.path / "out" / "test_it.py__test_ticks.trace")
    )
    assert reader.validate(events) == []
    stalls = analysis.analyze(events).stalls
    assert sum(1 for st in stalls if st.coroutine_name == "tick") == 12
    n = len(stalls)
    found = re.search(r"^(\d+) loop stalls \(steps over 0.05 s\):$", out, re.M)
    assert found is not None
    assert int(found[1]) == n
    assert out.count(" s on loop ") == 10
    # The ten longest are listed: ticks (0.1 s each), unless slow steps of
    # the machine's were longer.
    top = sorted(stalls, key=lambda st: st.duration_ns, reverse=True)[:10]
    ticks = sum(1 for st in top if st.coroutine_name == "tick")
    assert out.count("in coroutine 'tick': tick at ") == ticks
    assert f"  ... and {n - 10} shorter ones" in out


def test_passing_report_has_no_section(project: pytest.Pytester) -> None:
    """Only failing tests get the aiotrace section; passing ones say nothing."""
    result = run(project, "def test_ok():\n    pass\n", "--aiotrace=out", "-rA")
    result.assert_outcomes(passed=1)
    assert "- aiotrace -" not in result.stdout.str()


LOCK_TESTS = """
import asyncio
import pytest

class Cache:
    def __init__(self):
        self.lock = asyncio.Lock()
        self.data = {"hot": "H"}

    async def get(self, key):
        if key in self.data:  # the fast path: no lock
            return self.data[key]
        async with self.lock:  # the slow path loads, one key at a time
            await asyncio.sleep(0.01)
            self.data[key] = key.upper()
            return self.data[key]

async def serve(cache):
    async def handler():
        return await cache.get("hot")

    async def loader(key):
        return await cache.get(key)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(loader("a"))
        tg.create_task(loader("b"))  # waits for the lock loader("a") holds
        tg.create_task(handler())

def test_handler_never_waits_on_the_lock(aiotrace_events):
    asyncio.run(serve(Cache()))
    assert "lock" in aiotrace_events.block_reasons("loader")
    assert "lock" not in aiotrace_events.block_reasons("handler")
    assert len(aiotrace_events.coroutines("loader")) == 2

@pytest.mark.asyncio
async def test_inside_pytest_asyncio(aiotrace_events):
    await serve(Cache())
    assert aiotrace_events.block_reasons("loader").count("lock") == 1
    assert "lock" not in aiotrace_events.block_reasons("handler")

def test_wrong_claim_fails(aiotrace_events):
    asyncio.run(serve(Cache()))
    assert "lock" not in aiotrace_events.block_reasons("loader")

def test_unknown_name(aiotrace_events):
    asyncio.run(serve(Cache()))
    with pytest.raises(LookupError, match=r"no coroutine called 'handlr'.*'serve'"):
        aiotrace_events.block_reasons("handlr")
"""


@pytest.mark.parametrize("option", [[], ["--aiotrace=out", "--aiotrace-keep=failed"]])
def test_fixture_answers_scheduling_questions(
    project: pytest.Pytester, option: list[str]
) -> None:
    """The aiotrace_events fixture reads the test's events back, in memory or
    from its trace file, and its block reasons tell a coroutine that waited
    on a lock from one that never did."""
    result = run(project, LOCK_TESTS, *option)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_it.py::test_wrong_claim_fails - *"])
    expected = "trace: in memory (aiotrace_events)" if not option else "trace: */out/*"
    result.stdout.fnmatch_lines(["*- aiotrace -*", expected])
    if option:
        files = traces(project.path / "out")
        assert list(files) == ["test_it.py__test_wrong_claim_fails.trace"]
    else:
        assert not list(project.path.rglob("*.trace"))


def test_fixture_events_stop_tracing(project: pytest.Pytester) -> None:
    """events() stops tracing: what the test does after it is not traced."""
    result = run(
        project,
        """
        import aiotrace

        def test_it(aiotrace_events):
            aiotrace.log("before", "1")
            events = aiotrace_events.events()
            assert not aiotrace.is_enabled()
            aiotrace.log("after", "2")
            assert [e.log.category for e in events if e.kind.name == "LOG"] == ["before"]
        """,
    )
    result.assert_outcomes(passed=1)


def test_test_that_traces_itself(project: pytest.Pytester) -> None:
    """A test that starts its own trace fails under --aiotrace with a hint;
    marked aiotrace(off=True) it runs untraced and passes."""
    result = run(
        project,
        """
        import aiotrace
        import pytest

        def test_own(tmp_path):
            with aiotrace.tracing(tmp_path / "own.trace"):
                pass

        @pytest.mark.aiotrace(off=True)
        def test_own_off(tmp_path):
            with aiotrace.tracing(tmp_path / "own.trace"):
                pass
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["this test starts a trace of its own*mark it @pytest.mark.aiotrace(off=True)"]
    )
    assert list(traces(project.path / "out")) == ["test_it.py__test_own.trace"]


def test_tracing_already_on(project: pytest.Pytester) -> None:
    """When tracing is already on as a test begins, --aiotrace leaves the test
    untraced and says so; the fixture fails with a clear error."""
    result = run(
        project,
        """
        import aiotrace
        import pytest

        @pytest.mark.aiotrace(off=True)
        def test_1_leaves_tracing_on(tmp_path):
            aiotrace.start(tmp_path / "own.trace")

        def test_2_plain():
            assert aiotrace.is_enabled()

        def test_3_fixture(aiotrace_events):
            pass

        @pytest.mark.aiotrace(off=True)
        def test_4_stops():
            aiotrace.stop()
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*TracingError: aiotrace: aiotrace_events: tracing is already on*",
            "aiotrace: 2 test(s) not traced, because tracing was already on when "
            "they began: test_it.py::test_2_plain, ...",
        ]
    )
    assert not list(traces(project.path / "out"))


def test_bad_marker_arguments(project: pytest.Pytester) -> None:
    """Bad marker arguments fail the test's setup with a clear error."""
    result = run(
        project,
        """
        import pytest

        @pytest.mark.aiotrace(stall_treshold=0.1)
        def test_typo():
            pass

        @pytest.mark.aiotrace(off="yes")
        def test_off_not_bool():
            pass

        @pytest.mark.aiotrace(stall_threshold=-1)
        def test_bad_value():
            pass
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*TypeError: @pytest.mark.aiotrace: *unexpected keyword argument "
            "'stall_treshold'*",
            "*TypeError: @pytest.mark.aiotrace: off must be True or False, got 'yes'",
            "*ValueError: @pytest.mark.aiotrace: stall_threshold must be a "
            "positive number of seconds, got -1",
        ],
        consecutive=False,
    )


def test_a_trace_that_cannot_start_leaves_the_test_untraced(
    project: pytest.Pytester,
) -> None:
    """If a test's trace file cannot be made (DIR vanished mid-run), the test
    runs untraced and passes, and the summary says why."""
    result = run(
        project,
        """
        import shutil
        import aiotrace

        def test_1_removes_dir():
            shutil.rmtree("out")

        def test_2_runs_untraced():
            assert not aiotrace.is_enabled()
        """,
        "--aiotrace=out",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "aiotrace: 1 test trace in *",
            "aiotrace: tracing test_it.py::test_2_runs_untraced failed: "
            "FileNotFoundError: *test_it.py__test_2_runs_untraced.trace*",
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aiotrace=out", "--aiotrace-keep=some"], "*invalid choice: 'some'*"),
        (["--aiotrace-keep=failed"], "ERROR: --aiotrace-keep needs --aiotrace=DIR"),
        (["--aiotrace="], "ERROR: --aiotrace needs a directory: --aiotrace=DIR"),
    ],
)
def test_bad_option_values(
    project: pytest.Pytester, args: list[str], message: str
) -> None:
    """Bad option values are usage errors that say what was wrong."""
    result = run(project, "def test_ok():\n    pass\n", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_unwritable_directory(project: pytest.Pytester, where: str) -> None:
    """A DIR that cannot hold traces is a usage error naming it, before any
    test runs."""
    (project.path / "file").write_text("not a directory")
    target = project.path / ("file" if where == "file" else "file/sub")
    result = run(project, "def test_ok():\n    pass\n", f"--aiotrace={target}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: --aiotrace: cannot write traces to {target}: *"]
    )
    assert re.search(r"passed|failed", result.stdout.str()) is None


STALL_LINE = "    while time.sleep(0.3) or counts.get(me, 0) <= 3:  # the stall"
"""The planted stall's line in the inner tests: 0.3 s, and again until the
watchdog sampled it 3 times (a loaded machine may starve it), in one line
of C calls that every sample names."""

XDIST_TESTS = """
import asyncio
import threading
import time
from aiotrace import _session

def hold():
    counts = _session.current().runtime._watchdog._samples
    me = threading.get_ident()
    while time.sleep(0.3) or counts.get(me, 0) <= 3:  # the stall
        pass

async def handler():
    hold()

def test_pass_one():
    pass

def test_pass_two():
    pass

def test_slow():
    asyncio.run(handler())
    assert False, "too slow"
"""


@pytest.mark.parametrize("keep", ["all", "failed"])
def test_under_xdist_counts_and_sections_come_from_the_workers(
    project: pytest.Pytester, keep: str
) -> None:
    """`pytest -n 2 --aiotrace=DIR`: the workers write the traces; the
    controller's summary counts them, and the failing test's report has its
    aiotrace section, naming its trace and its stall."""
    result = run(
        project, XDIST_TESTS, "-n", "2", "--aiotrace=out", f"--aiotrace-keep={keep}"
    )
    result.assert_outcomes(passed=2, failed=1)
    files = traces(project.path / "out")
    path = project.path / "out" / "test_it.py__test_slow.trace"
    if keep == "all":
        assert len(files) == 3
        result.stdout.fnmatch_lines(
            [f"aiotrace: 3 test traces in {project.path / 'out'}"]
        )
    else:
        assert list(files) == [path.name]
        result.stdout.fnmatch_lines(
            ["aiotrace: 1 trace of failed tests (of 3 traced) in *"]
        )
    source = (project.path / "test_it.py").read_text().splitlines()
    line = source.index(STALL_LINE) + 1
    result.stdout.fnmatch_lines(
        [
            "*- aiotrace -*",
            f"trace: {path}",
            "1 loop stall (steps over 0.1 s):",
            f"  *.??? s on loop 1 in coroutine 'handler': "
            f"hold at {project.path / 'test_it.py'}:{line}",
            "*short test summary info*",
        ]
    )
    assert result.stdout.str().count("- aiotrace -") == 1
    for p in files.values():
        read_valid(p)


FIRST_IMPORT = """
import sys

BEFORE = {name: name in sys.modules for name in ("trio", "uvloop")}

def test_first_imports_{flavour}():
    assert not BEFORE["{flavour}"], "imported before the first test"
{body}
"""

FLAVOUR_BODIES = {
    "trio": """
    import trio

    async def child():
        await trio.sleep(0.001)

    async def main():
        async with trio.open_nursery() as n:
            n.start_soon(child)

    trio.run(main)
""",
    "uvloop": """
    import asyncio
    import uvloop

    async def child():
        await asyncio.sleep(0.001)

    async def main():
        await asyncio.create_task(child())

    uvloop.run(main())
""",
}


@pytest.mark.parametrize("flavour", ["trio", "uvloop"])
def test_the_first_test_to_import_a_flavour_is_traced(
    project: pytest.Pytester, flavour: str
) -> None:
    """The session's first test imports trio (or uvloop) itself, after its
    trace started: its loop and coroutines are in its trace."""
    source = FIRST_IMPORT.replace("{flavour}", flavour).replace(
        "{body}", textwrap.indent(textwrap.dedent(FLAVOUR_BODIES[flavour]), "    ")
    )
    result = run(project, source, "--aiotrace=out", "-p", "no:anyio")
    result.assert_outcomes(passed=1)
    (path,) = traces(project.path / "out").values()
    events = read_valid(path)
    names = labels(events)
    loop = "trio run in MainThread" if flavour == "trio" else "Loop in MainThread"
    assert names[loop].label.resource.kind is reader.ResourceKind.LOOP
    assert any(name.endswith("child") for name in names), sorted(names)


OPTIONS_TEST = """
import asyncio
import pytest

async def waiter(ev):
    await ev.wait()

async def deeper(ev):
    await waiter(ev)

async def main():
    ev = asyncio.Event()
    t = asyncio.create_task(deeper(ev))
    await asyncio.sleep(0.01)
    ev.set()
    await t

def test_flags():
    asyncio.run(main())

@pytest.mark.aiotrace(block_stacks=False)
def test_marked():
    asyncio.run(main())
"""


def _waits(path: Path) -> list[reader.StateTransition]:
    return [
        ev.state_transition
        for ev in read_valid(path)
        if ev.kind is reader.EventKind.STATE_TRANSITION
        and ev.state_transition.new is reader.CoroState.WAITING
    ]


def test_start_options_are_command_line_options(project: pytest.Pytester) -> None:
    """Each aiotrace.start option is an --aiotrace-... option for every
    test's trace; a test's marker overrides it."""
    result = run(
        project,
        OPTIONS_TEST,
        "--aiotrace=out",
        "--aiotrace-block-stacks",
        "--aiotrace-metrics-interval=off",
        "--aiotrace-stall-threshold=0.5",
        "--aiotrace-max-buffer-mib=2",
        "--aiotrace-annotation-stacks",
    )
    result.assert_outcomes(passed=2)
    out = project.path / "out"
    flags = _waits(out / "test_it.py__test_flags.trace")
    funcs = [[f.func for f in w.stack.frames] for w in flags]
    assert ["Event.wait", "waiter", "deeper"] in funcs, funcs
    marked = _waits(out / "test_it.py__test_marked.trace")
    # Without block stacks a wait records only its site: the library
    # function and the program's frame that awaits it.
    sites = [[f.func for f in w.stack.frames] for w in marked]
    assert ["Event.wait", "waiter"] in sites, sites
    assert all(len(s) <= 2 for s in sites), sites
    events = read_valid(out / "test_it.py__test_flags.trace")
    assert not [
        ev
        for ev in events
        if ev.kind is reader.EventKind.METRIC and ev.metric.name.startswith("/memory")
    ]


def test_runtime_events_off_from_the_command_line(project: pytest.Pytester) -> None:
    """--aiotrace-no-runtime-events records annotations only."""
    result = run(
        project, OPTIONS_TEST, "--aiotrace=out", "--aiotrace-no-runtime-events"
    )
    result.assert_outcomes(passed=2)
    assert _waits(project.path / "out" / "test_it.py__test_flags.trace") == []


@pytest.mark.parametrize(
    "bad", ["--aiotrace-stall-threshold=-1", "--aiotrace-max-buffer-mib=0"]
)
def test_bad_start_option_values_are_usage_errors(
    project: pytest.Pytester, bad: str
) -> None:
    """A bad value of an --aiotrace-... start option is a usage error."""
    result = run(project, "def test_x():\n    pass\n", "--aiotrace=out", bad)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{bad.split('=', maxsplit=1)[0]}*"])
