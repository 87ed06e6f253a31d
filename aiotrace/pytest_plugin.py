"""pytest plugin: an execution trace of each test, as ``go test -trace`` writes.

``pytest --aiotrace=DIR`` traces each test (its setup, call and teardown)
into ``DIR/<test id>.trace``; ``--aiotrace-keep=failed`` keeps only the
failing tests' traces. A failing test's report names its trace and the loop
stalls in it. The ``aiotrace_events`` fixture traces a test in memory and
gives it its own events back. ``@pytest.mark.aiotrace(off=True)`` leaves a
test untraced; other keyword arguments of the marker are ``aiotrace.start``
options for that test's trace. Every ``aiotrace.start`` option is also an
``--aiotrace-...`` command-line option, for every test's trace. Under
pytest-xdist the workers trace their tests; the controller adds up their
counts and gives failing tests' reports their sections.

pytest finds the plugin through the ``pytest11`` entry point. Without
``--aiotrace`` and the fixture it traces nothing and reads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any, Final

import pytest

from ._errors import TracingError
from ._pytest_capture import CapturedTrace as CapturedTrace

__all__ = ("CapturedTrace", "trace_name")

FIXTURE: Final = "aiotrace_events"
KEEP: Final = ("all", "failed")
MAX_NAME: Final = 120
"""Longest trace file name, without ``.trace``; longer test ids are cut and
end with a hash of the whole id."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_CAPTURE = pytest.StashKey[CapturedTrace]()
_REPORTS = pytest.StashKey[list[pytest.TestReport]]()


class _Session:
    """The plugin's state for one session under ``--aiotrace``."""

    def __init__(self, directory: Path, keep: str) -> None:
        self.directory = directory
        self.keep = keep
        self.traced = 0
        self.kept = 0
        self.untraced: list[str] = []
        self.failures: list[tuple[str, str]] = []  # (test id, the error)

        self._names: dict[str, str] = {}

    def path_for(self, nodeid: str) -> str:
        """Returns the trace file of test ``nodeid``: unique in this session."""
        name = trace_name(nodeid)
        if self._names.setdefault(name, nodeid) != nodeid:
            name = f"{name[: MAX_NAME - 9]}-{_digest(nodeid)}"
            self._names[name] = nodeid
        return str(self.directory / f"{name}.trace")


_SESSION = pytest.StashKey[_Session]()
_XDIST_SECTION: Final = "aiotrace-section"
"""The user property by which a pytest-xdist worker sends a failing test's
aiotrace section to the controller."""
_XDIST_COUNTS: Final = "aiotrace"
"""The key of a worker's counts in pytest-xdist's ``workeroutput``."""


class _XdistController:
    """Under pytest-xdist, the controller's side of the plugin: it runs no
    test, so it adds up the workers' counts and gives failing tests' reports
    the aiotrace sections their workers sent."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        # Each test's failed reports, until its teardown report arrives.
        self.failed: dict[str, list[pytest.TestReport]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Gives the test's failed reports the section its worker sent with
        the teardown report."""
        if report.failed and report.when != "teardown":
            self.failed.setdefault(report.nodeid, []).append(report)
        if report.when != "teardown":
            return
        earlier = self.failed.pop(report.nodeid, [])
        for name, text in report.user_properties:
            if name == _XDIST_SECTION and isinstance(text, str):
                for r in earlier:
                    if ("aiotrace", text) not in r.sections:
                        r.sections.append(("aiotrace", text))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Adds up a worker's counts."""
        output = getattr(node, "workeroutput", None) or {}
        counts = output.get(_XDIST_COUNTS)
        if counts is None:
            return
        state = self.session
        state.traced += counts["traced"]
        state.kept += counts["kept"]
        state.untraced += counts["untraced"]
        state.failures += [(str(n), str(e)) for n, e in counts["failures"]]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands the tests to pytest-xdist workers."""
    if _xdist_worker(config) or not config.pluginmanager.hasplugin("xdist"):
        return False
    return bool(getattr(config.option, "numprocesses", None)) or bool(
        getattr(config.option, "tx", None)
    )


def trace_name(nodeid: str) -> str:
    """Returns the file name (without ``.trace``) for a test id.

    Characters other than letters, digits and ``._=+-`` become ``_``; a name
    longer than ``MAX_NAME`` is cut and ends with a hash of the whole id.
    """
    name = _UNSAFE.sub("_", nodeid).strip("._-") or "test"
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}-{_digest(nodeid)}"
    return name


def _digest(nodeid: str) -> str:
    return hashlib.sha1(nodeid.encode(), usedforsecurity=False).hexdigest()[:8]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds ``--aiotrace=DIR``, ``--aiotrace-keep=all|failed`` and one
    ``--aiotrace-...`` option per ``aiotrace.start`` option."""
    group = parser.getgroup("aiotrace", "execution traces of tests (aiotrace)")
    group.addoption(
        "--aiotrace",
        metavar="DIR",
        dest="aiotrace_dir",
        default=None,
        help="write an execution trace of each test to DIR/<test id>.trace",
    )
    group.addoption(
        "--aiotrace-keep",
        choices=KEEP,
        dest="aiotrace_keep",
        default=None,
        help="keep the traces of all tests (default) or only of failed ones",
    )
    from ._cli.run import _positive, _threshold

    d = _start_defaults()
    group.addoption(
        "--aiotrace-stall-threshold",
        metavar="S",
        type=_threshold,
        dest="aiotrace_stall_threshold",
        default=d["stall_threshold"],
        help="seconds a step may hold its loop before it is a stall "
        f"(default {d['stall_threshold']}; 'off' turns stall detection off)",
    )
    group.addoption(
        "--aiotrace-metrics-interval",
        metavar="S",
        type=_threshold,
        dest="aiotrace_metrics_interval",
        default=d["metrics_interval"],
        help=f"seconds between metric samples (default {d['metrics_interval']}; "
        "'off' records none)",
    )
    for name, what in (
        ("block_stacks", "record a coroutine's await stack each time it blocks"),
        ("annotation_stacks", "record the caller's stack on each annotation"),
        ("runtime_events", "record coroutines, loops, stalls, GC and metrics"),
    ):
        flag = name.replace("_", "-")
        group.addoption(
            f"--aiotrace-{flag}",
            action="store_true",
            dest=f"aiotrace_{name}",
            default=d[name],
            help=f"{what} (default: {'on' if d[name] else 'off'})",
        )
        group.addoption(
            f"--aiotrace-no-{flag}",
            action="store_false",
            dest=f"aiotrace_{name}",
            help=f"do not {what}",
        )
    group.addoption(
        "--aiotrace-max-buffer-mib",
        metavar="M",
        type=_positive,
        dest="aiotrace_max_buffer_mib",
        default=None,
        help="the most trace held in memory while a file falls behind, in MiB "
        f"(default {int(d['max_buffer_bytes']) / (1 << 20):g})",
    )


def _start_defaults() -> dict[str, Any]:
    from ._cli.run import _defaults

    return _defaults()


def start_options(config: pytest.Config) -> dict[str, Any]:
    """The ``aiotrace.start`` options that the command line gives every
    test's trace (a test's marker may override them)."""
    options: dict[str, Any] = {
        name: config.getoption(f"aiotrace_{name}")
        for name in (
            "stall_threshold",
            "metrics_interval",
            "block_stacks",
            "annotation_stacks",
            "runtime_events",
        )
    }
    mib = config.getoption("aiotrace_max_buffer_mib")
    if mib is not None:
        options["max_buffer_bytes"] = int(mib * (1 << 20))
    return options


def pytest_configure(config: pytest.Config) -> None:
    """Registers the marker, and checks that DIR is writable."""
    config.addinivalue_line(
        "markers",
        "aiotrace(off=False, **options): off=True leaves the test untraced by "
        "--aiotrace; other options go to aiotrace.start for its trace",
    )
    directory = config.getoption("aiotrace_dir")
    keep = config.getoption("aiotrace_keep")
    if directory is None:
        if keep is not None:
            raise pytest.UsageError("--aiotrace-keep needs --aiotrace=DIR")
        return
    if not directory:
        raise pytest.UsageError("--aiotrace needs a directory: --aiotrace=DIR")
    path = config.invocation_params.dir / directory
    _check_writable(path)
    session = config.stash[_SESSION] = _Session(path, keep or "all")
    if _xdist_controller(config):
        config.pluginmanager.register(_XdistController(session), "aiotrace-xdist")


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".aiotrace-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise pytest.UsageError(
            f"--aiotrace: cannot write traces to {directory}: "
            f"{exc.strerror or exc} ({type(exc).__name__})"
        ) from None


def _options(item: pytest.Item) -> tuple[bool, dict[str, Any]]:
    """Returns (off, aiotrace.start options) from the test's marker."""
    marker = item.get_closest_marker("aiotrace")
    if marker is None:
        return False, {}
    if marker.args:
        raise TypeError(
            "@pytest.mark.aiotrace takes keyword arguments only "
            f"(off=True, or aiotrace.start options), got {marker.args!r}"
        )
    options = dict(marker.kwargs)
    off = options.pop("off", False)
    if not isinstance(off, bool):
        raise TypeError(
            f"@pytest.mark.aiotrace: off must be True or False, got {off!r}"
        )
    return off, options


def _begin(
    item: pytest.Item, *, for_fixture: bool, strict: bool
) -> CapturedTrace | None:
    """Starts tracing the test, if ``--aiotrace`` or the fixture asks to.

    If tracing is already on, the test stays untraced; with ``strict``, the
    fixture fails saying so.
    """
    session = item.config.stash.get(_SESSION, None)
    if session is None and not for_fixture:
        return None  # the plugin is idle: nothing more to look at
    off, marked = _options(item)
    options = {**start_options(item.config), **marked}
    to_file = session is not None and not off
    if not (to_file or for_fixture):
        return None
    from ._tracer import is_enabled

    if is_enabled():
        if strict:
            raise TracingError(
                f"aiotrace: {FIXTURE}: tracing is already on (the test, a fixture "
                "or an earlier test started it), so this test cannot get a trace "
                "of its own"
            )
        if session is not None:
            session.untraced.append(item.nodeid)
        return None
    path = None
    if to_file:
        assert session is not None
        path = session.path_for(item.nodeid)
    capture = CapturedTrace(path, options)
    try:
        capture._start()
    except (TypeError, ValueError) as exc:
        what = str(exc).removeprefix("aiotrace: ")
        raise type(exc)(f"@pytest.mark.aiotrace: {what}") from None
    except (OSError, TracingError) as exc:
        if strict or session is None:
            raise
        # The test runs untraced: a trace that cannot start must not fail it.
        session.failures.append((item.nodeid, _describe(exc)))
        return None
    if session is not None and path is not None:
        session.traced += 1
    item.stash[_CAPTURE] = capture
    item.stash[_REPORTS] = []
    return capture


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Starts the test's trace before its fixtures are set up."""
    error = None
    try:
        _begin(
            item,
            for_fixture=FIXTURE in getattr(item, "fixturenames", ()),
            strict=False,
        )
    except Exception as exc:
        # Raised after the other plugins' setup, whose teardown relies on it.
        error = exc
    result = yield
    if error is not None:
        raise error
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Collects the test's reports; after teardown, stops its trace, drops
    it if unwanted, and tells a failing test's report about it."""
    report = yield
    capture = item.stash.get(_CAPTURE, None)
    if capture is None:
        return report
    reports = item.stash[_REPORTS]
    reports.append(report)
    if call.when == "teardown":
        del item.stash[_CAPTURE]
        del item.stash[_REPORTS]
        _finish(item, capture, reports)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Stops the test's trace if the run was cut short before its teardown."""
    try:
        return (yield)
    finally:
        capture = item.stash.get(_CAPTURE, None)
        if capture is not None:
            capture._close()


def _finish(
    item: pytest.Item, capture: CapturedTrace, reports: list[pytest.TestReport]
) -> None:
    capture._close()
    session = item.config.stash.get(_SESSION, None)
    failed = [r for r in reports if r.failed]
    if capture.path is not None and session is not None:
        if capture.error is not None:
            session.failures.append((item.nodeid, _describe(capture.error)))
        if failed or session.keep == "all":
            session.kept += 1
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(capture.path)
    if failed:
        text = _section(capture, failed)
        for r in failed:
            r.sections.append(("aiotrace", text))
        if _xdist_worker(item.config):
            # The setup and call reports already went to the controller: the
            # teardown report (not yet sent) carries the section to them.
            reports[-1].user_properties.append((_XDIST_SECTION, text))


def _section(capture: CapturedTrace, failed: list[pytest.TestReport]) -> str:
    """Returns what a failing test's report says about its trace; never raises."""
    where = capture.path or f"in memory ({FIXTURE})"
    try:
        from ._pytest_stalls import report_section

        text = report_section(
            where, capture.stalls(), threshold=capture.stall_threshold
        )
        text = _findings(capture) + text
    except Exception as exc:
        text = f"trace: {where}\ncould not read it: {type(exc).__name__}: {exc}"
    if any("tracing is already on" in r.longreprtext for r in failed):
        text += (
            "\nthis test starts a trace of its own, which cannot run inside the "
            "one aiotrace records for it: mark it @pytest.mark.aiotrace(off=True)"
        )
    return text


def _findings(capture: CapturedTrace) -> str:
    """The trace's findings, for a failing test's section."""
    from .analysis import diagnose, format_findings

    return format_findings(diagnose(capture.events()), top=5)


@pytest.fixture
def aiotrace_events(request: pytest.FixtureRequest) -> CapturedTrace:
    """Traces the test and reads its events back for it.

    The trace covers the test's setup and body: ``aiotrace_events.events()``
    stops it and returns the events; ``block_reasons(name)``,
    ``coroutines(name)``, ``transitions(name)`` and ``stalls()`` answer the
    common questions about scheduling. Under ``--aiotrace`` the trace is the
    test's trace file, else it is kept in memory.
    """
    item: pytest.Item = request.node
    capture = item.stash.get(_CAPTURE, None)
    if capture is None:  # requested late (getfixturevalue), or tracing was on
        capture = _begin(item, for_fixture=True, strict=True)
        assert capture is not None
    return capture


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, on a worker: sends its counts to the controller."""
    config = session.config
    state = config.stash.get(_SESSION, None)
    if state is None or not _xdist_worker(config):
        return
    config.workeroutput[_XDIST_COUNTS] = {  # type: ignore[attr-defined]
        "traced": state.traced,
        "kept": state.kept,
        "untraced": state.untraced,
        "failures": state.failures,
    }


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Says where the traces went."""
    session = config.stash.get(_SESSION, None)
    if session is None:
        return
    write = terminalreporter.write_line
    if session.keep == "all":
        what = f"{session.kept} test trace{'s' if session.kept != 1 else ''}"
    else:
        what = (
            f"{session.kept} trace{'s' if session.kept != 1 else ''} of failed "
            f"tests (of {session.traced} traced)"
        )
    write(f"aiotrace: {what} in {session.directory}")
    if session.untraced:
        write(
            f"aiotrace: {len(session.untraced)} test(s) not traced, because "
            f"tracing was already on when they began: {session.untraced[0]}"
            + (", ..." if len(session.untraced) > 1 else "")
        )
    for nodeid, error in session.failures:
        write(f"aiotrace: tracing {nodeid} failed: {error}")
