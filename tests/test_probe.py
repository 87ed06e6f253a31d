"""Tracepoints and probes (aiotrace.probe), and `aiotrace probes MODULE`."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aiotrace
from aiotrace import probe
from aiotrace._cli import main as cli_main
from aiotrace.reader import EventKind, read_events
from aiotrace.sinks import MemorySink

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request")


@probe.tracepoint
def trace_hello(who: str) -> None:
    """Someone is greeted."""
    raise AssertionError("a tracepoint's stub never runs")


@probe.tracepoint
def trace_shape(
    a: int, b: int = 2, /, c: int = 3, *rest: int, d: int = 4, **kw: int
) -> None:
    """Every kind of parameter, with defaults."""


@probe.tracepoint
async def trace_fill(key: str) -> None:
    """An async tracepoint."""
    raise AssertionError("a tracepoint's stub never runs")


@probe.tracepoint(record=True)
def trace_recorded(who: str, n: int) -> None:
    """A tracepoint recorded in the trace while tracing."""


@probe.tracepoint(record=True)
async def trace_recorded_async(key: str) -> None:
    """An async tracepoint recorded in the trace."""


@probe.tracepoint
def trace_clash(_point: int, _recorder: int, _done: int) -> None:
    """Parameters named like the tracepoint function's own closure."""


@pytest.fixture
def group() -> Iterator[probe.ProbeGroup]:
    """A ProbeGroup whose probes are detached after the test."""
    g = probe.ProbeGroup()
    yield g
    g.done()


def test_tracepoint_keeps_the_stub_signature_and_never_runs_it() -> None:
    """The tracepoint has the stub's name, docstring and signature; calling
    it with nothing attached does nothing (the stub's body never runs)."""
    assert trace_hello.__name__ == "trace_hello"
    assert trace_hello.__qualname__ == "trace_hello"
    assert trace_hello.__module__ == __name__
    assert trace_hello.__doc__ == "Someone is greeted."
    assert trace_hello.name == f"{__name__}.trace_hello"
    assert str(inspect.signature(trace_hello)) == "(who: 'str') -> 'None'"
    assert str(inspect.signature(trace_shape)) == str(
        inspect.signature(inspect.unwrap(trace_shape))
    )
    assert trace_hello("bob") is None
    assert trace_hello.probes() == ()


def test_probes_run_in_attach_order_with_the_full_payload(
    group: probe.ProbeGroup,
) -> None:
    """Probes get every argument, defaults filled in, keyword-only ones as
    keywords; they run in attach order."""
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def first(*args: Any, **kwargs: Any) -> None:
        calls.append(("first", args, kwargs))

    def second(*args: Any, **kwargs: Any) -> None:
        calls.append(("second", args, kwargs))

    p1 = trace_shape.attach(first, group=group)
    p2 = trace_shape.attach(second, group=group)
    assert trace_shape.probes() == (p1, p2)
    trace_shape(1)
    trace_shape(1, 5, 6, 7, 8, d=9, e=10)
    assert calls == [
        ("first", (1, 2, 3), {"d": 4}),
        ("second", (1, 2, 3), {"d": 4}),
        ("first", (1, 5, 6, 7, 8), {"d": 9, "e": 10}),
        ("second", (1, 5, 6, 7, 8), {"d": 9, "e": 10}),
    ]
    with pytest.raises(TypeError):
        trace_shape(a=1)  # type: ignore[call-arg]  # positional-only, as declared


def test_parameters_named_like_the_closure_are_passed_on(
    group: probe.ProbeGroup,
) -> None:
    """A payload may use any parameter names, even the generated code's."""
    seen: list[tuple[int, int, int]] = []
    trace_clash.attach(lambda a, b, c: seen.append((a, b, c)), group=group)
    trace_clash(1, 2, 3)
    assert seen == [(1, 2, 3)]


def test_detach_stops_the_probe_and_is_idempotent() -> None:
    """After detach the probe is not called; detaching twice is harmless."""
    seen: list[str] = []
    p = trace_hello.attach(seen.append)
    trace_hello("a")
    assert p.attached
    assert f"on {__name__}.trace_hello" in repr(p)
    p.detach()
    p.detach()
    trace_hello("b")
    assert seen == ["a"]
    assert not p.attached
    assert "detached" in repr(p)
    assert trace_hello.probes() == ()


def test_probe_group_detaches_all_its_probes() -> None:
    """done() detaches the probes attached with group= and those added;
    the group can be used again, also as a `with` block."""
    seen: list[str] = []
    g = probe.ProbeGroup()
    trace_hello.attach(lambda who: seen.append(f"1:{who}"), group=g)
    g.add(trace_hello.attach(lambda who: seen.append(f"2:{who}")))
    outside = trace_hello.attach(lambda who: seen.append(f"3:{who}"))
    assert len(g) == 2
    trace_hello("a")
    g.done()
    assert len(g) == 0
    trace_hello("b")
    outside.detach()
    with g:
        trace_hello.attach(lambda who: seen.append(f"4:{who}"), group=g)
        trace_hello("c")
    trace_hello("d")
    assert seen == ["1:a", "2:a", "3:a", "3:b", "4:c"]


def test_a_probe_detached_by_an_earlier_probe_does_not_run(
    group: probe.ProbeGroup,
) -> None:
    """Within one firing, a probe detached by an earlier one is skipped, and
    one attached by an earlier one runs from the next firing on."""
    seen: list[str] = []
    later: list[probe.Probe] = []

    def first(who: str) -> None:
        seen.append(f"first:{who}")
        later[0].detach()
        if who == "a":
            trace_hello.attach(lambda w: seen.append(f"new:{w}"), group=group)

    trace_hello.attach(first, group=group)
    later.append(trace_hello.attach(lambda w: seen.append(f"second:{w}")))
    trace_hello("a")
    trace_hello("b")
    assert seen == ["first:a", "first:b", "new:b"]


@pytest.mark.asyncio
async def test_probes_run_in_the_firing_coroutine(group: probe.ProbeGroup) -> None:
    """A probe runs synchronously in the firing coroutine: same asyncio task,
    same contextvars, before the tracepoint call returns."""
    seen: list[tuple[str, asyncio.Task[Any] | None, str]] = []

    def record(who: str) -> None:
        seen.append((who, asyncio.current_task(), request_var.get()))

    trace_hello.attach(record, group=group)

    async def handler(request: str) -> asyncio.Task[Any] | None:
        request_var.set(request)
        trace_hello(request)
        assert seen[-1][0] == request  # already ran
        return asyncio.current_task()

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(handler(r)) for r in ("r1", "r2")]
    assert sorted((who, req) for who, _, req in seen) == [("r1", "r1"), ("r2", "r2")]
    by_request = {who: task for who, task, _ in seen}
    assert by_request == {"r1": tasks[0].result(), "r2": tasks[1].result()}


def test_probes_run_in_the_firing_thread(group: probe.ProbeGroup) -> None:
    """A probe fired from another thread runs in that thread."""
    seen: list[int] = []
    trace_hello.attach(lambda who: seen.append(threading.get_ident()), group=group)
    th = threading.Thread(target=trace_hello, args=("t",))
    th.start()
    th.join()
    assert seen == [th.ident]


def test_a_raising_probe_is_detached_and_reported(group: probe.ProbeGroup) -> None:
    """A probe that raises is detached and reported with a TracingWarning
    that names it, the tracepoint and the error; the other probes of the
    same firing still run, and the traced code goes on."""
    seen: list[str] = []

    def broken(who: str) -> None:
        raise ValueError(f"cannot greet {who}")

    bad = trace_hello.attach(broken, group=group)
    trace_hello.attach(seen.append, group=group)
    with pytest.warns(aiotrace.TracingWarning) as record:
        trace_hello("bob")
    (w,) = record.list
    message = str(w.message)
    assert "broken" in message
    assert "trace_hello" in message
    assert "ValueError: cannot greet bob" in message
    assert "detached" in message
    assert w.filename == __file__  # points at the firing line
    assert not bad.attached
    trace_hello("carol")
    assert seen == ["bob", "carol"]


def test_a_raising_probe_with_warnings_as_errors_does_not_raise(
    group: probe.ProbeGroup,
) -> None:
    """Under warnings-as-errors (this suite's setting) a failing probe still
    does not raise into the traced code; it is detached."""
    bad = trace_hello.attach(lambda who: 1 / 0, group=group)
    trace_hello("x")
    assert not bad.attached


@pytest.mark.asyncio
async def test_async_tracepoint_without_probes_does_not_suspend() -> None:
    """With nothing attached, awaiting an async tracepoint completes at once."""
    assert trace_fill.probes() == ()

    async def fire() -> str:
        await trace_fill("k")
        return "done"

    coro = fire()
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    assert stop.value.value == "done"


@pytest.mark.asyncio
async def test_async_probes_may_suspend_the_firing_coroutine(
    group: probe.ProbeGroup,
) -> None:
    """An async tracepoint runs sync and async probes in attach order; an
    async probe suspends the firing coroutine while others run."""
    seen: list[str] = []
    gate = asyncio.Event()

    async def wait_for_gate(key: str) -> None:
        seen.append(f"waiting:{key}")
        await gate.wait()
        seen.append(f"released:{key}")

    trace_fill.attach(lambda key: seen.append(f"sync:{key}"), group=group)
    trace_fill.attach(wait_for_gate, group=group)
    trace_fill.attach(lambda key: seen.append(f"last:{key}"), group=group)

    async def producer() -> None:
        await trace_fill("k")
        seen.append("after")

    task = asyncio.create_task(producer())
    await asyncio.sleep(0.01)
    assert seen == ["sync:k", "waiting:k"]
    assert not task.done()
    gate.set()
    await task
    assert seen == ["sync:k", "waiting:k", "released:k", "last:k", "after"]


@pytest.mark.asyncio
async def test_cancelling_a_coroutine_paused_in_a_probe(
    group: probe.ProbeGroup,
) -> None:
    """Cancellation is not a probe failure: it propagates to the firing
    coroutine, and the probe stays attached."""
    entered = asyncio.Event()

    async def forever(key: str) -> None:
        entered.set()
        await asyncio.Event().wait()

    p = trace_fill.attach(forever, group=group)
    task = asyncio.create_task(trace_fill("k"))  # type: ignore[arg-type]
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.attached


@pytest.mark.asyncio
async def test_a_raising_async_probe_is_detached_and_reported(
    group: probe.ProbeGroup,
) -> None:
    """An async probe that raises is detached and reported at the firing
    line; the firing coroutine goes on."""

    async def broken(key: str) -> None:
        await asyncio.sleep(0)
        raise KeyError(key)

    bad = trace_fill.attach(broken, group=group)
    with pytest.warns(aiotrace.TracingWarning, match="KeyError: 'k'") as record:
        await trace_fill("k")
    assert not bad.attached
    assert record[0].filename == __file__  # points at the firing line


def test_attach_checks_its_arguments() -> None:
    """Coroutine functions do not attach to sync tracepoints (nothing would
    await them); non-callables attach nowhere; only functions declare."""

    async def coro_probe(who: str) -> None:
        pass

    with pytest.raises(TypeError, match="sync tracepoint"):
        trace_hello.attach(coro_probe)
    with pytest.raises(TypeError, match="callable"):
        trace_hello.attach("not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="def or async def"):
        probe.tracepoint(print)  # type: ignore[call-overload]
    assert trace_hello.probes() == ()


def test_attach_and_detach_are_safe_while_threads_fire() -> None:
    """Threads fire a tracepoint flat out while the main thread attaches and
    detaches probes: nothing fails, a probe attached throughout sees every
    firing, and detached probes see none afterwards."""
    threads, firings = 4, 5_000
    total = 0
    lock = threading.Lock()

    def count(who: str) -> None:
        nonlocal total
        with lock:
            total += 1

    steady = trace_hello.attach(count)
    churned: list[probe.Probe] = []
    churn_calls = [0]

    def churn_probe(who: str) -> None:
        churn_calls[0] += 1

    start = threading.Barrier(threads + 1)

    def fire() -> None:
        start.wait()
        for _ in range(firings):
            trace_hello("t")

    workers = [threading.Thread(target=fire) for _ in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    with probe.ProbeGroup() as g:
        for i in range(300):
            churned.append(trace_hello.attach(churn_probe, group=g))
            if i % 3 == 0:
                churned[i // 2].detach()
    for w in workers:
        w.join()
    steady.detach()
    assert total == threads * firings
    assert not any(p.attached for p in churned)
    before = churn_calls[0]
    trace_hello("after")
    assert churn_calls[0] == before
    assert trace_hello.probes() == ()


def _logs(sink: MemorySink) -> list[tuple[str, str, int]]:
    return [
        (e.log.category, e.log.message, e.log.task)
        for e in sink.events()
        if e.kind is EventKind.LOG
    ]


@pytest.mark.asyncio
async def test_record_true_logs_each_firing_while_tracing() -> None:
    """A tracepoint declared record=True is a LOG while tracing is on:
    category its name, message its arguments, task the current one. It
    records nothing while tracing is off, and others never record."""
    trace_recorded("off", 0)
    sink = MemorySink()
    async with aiotrace.tracing(sink), aiotrace.new_task("order") as task:
        trace_recorded("bob", 2)
        await trace_recorded_async(key="k")
        trace_hello("not recorded")
    trace_recorded("off again", 0)
    assert _logs(sink) == [
        (f"{__name__}.trace_recorded", "who='bob', n=2", task.id),
        (f"{__name__}.trace_recorded_async", "key='k'", task.id),
    ]


def test_record_survives_a_broken_repr() -> None:
    """An argument whose repr raises is recorded as such, without raising."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    sink = MemorySink()
    with aiotrace.tracing(sink):
        trace_recorded(Broken(), 1)  # type: ignore[arg-type]
    ((_, message, _),) = _logs(sink)
    assert message == "who=<Broken: repr failed: RuntimeError>, n=1"


def test_record_stacks_name_the_firing_line(tmp_path: Path) -> None:
    """With annotation stacks on, a recorded firing's stack starts at the
    line that fired the tracepoint, for sync and async tracepoints."""
    trace = tmp_path / "t.trace"

    async def fire_async() -> None:
        await trace_recorded_async("k")  # the async firing line

    with aiotrace.tracing(trace, annotation_stacks=True):
        trace_recorded("bob", 1)  # the sync firing line
        asyncio.run(fire_async())
    logs = [e for e in read_events(trace) if e.kind is EventKind.LOG]
    assert [e.log.category.rsplit(".", 1)[1] for e in logs] == [
        "trace_recorded",
        "trace_recorded_async",
    ]
    lines = Path(__file__).read_text().splitlines()
    for ev, marker in zip(
        logs, ("the sync firing line", "the async firing line"), strict=True
    ):
        frame = ev.stack.frames[0]
        assert frame.file == __file__
        assert marker in lines[frame.line - 1]


def test_a_failing_probe_is_recorded_while_tracing(group: probe.ProbeGroup) -> None:
    """While tracing, a failing probe is also a LOG under PROBE_ERROR."""
    trace_hello.attach(lambda who: {}[who], group=group)
    sink = MemorySink()
    with aiotrace.tracing(sink):
        trace_hello("x")
    ((category, message, _),) = _logs(sink)
    assert category == probe.PROBE_ERROR
    assert "KeyError" in message and "trace_hello" in message


def test_tracepoints_lists_what_a_module_declares() -> None:
    """tracepoints(module) lists the module's own tracepoints in declaration
    order; describe gives each one's name, payload and options."""
    found = probe.tracepoints(sys.modules[__name__])
    assert [tp.name.rsplit(".", 1)[1] for tp in found] == [
        "trace_hello",
        "trace_shape",
        "trace_fill",
        "trace_recorded",
        "trace_recorded_async",
        "trace_clash",
    ]
    assert probe.describe(trace_hello) == f"{__name__}.trace_hello(who: str)"
    assert probe.describe(trace_fill) == f"{__name__}.trace_fill(key: str)  [async]"
    assert probe.describe(trace_recorded_async).endswith("[async, record]")
    assert probe.tracepoints("json") == []
    with pytest.raises(TypeError, match="not a tracepoint"):
        probe.describe(print)


def test_cli_lists_a_modules_tracepoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aiotrace probes MODULE` prints one line per declared tracepoint, not
    the ones the module imports; a module with none says so on stderr."""
    (tmp_path / "hello_pkg_for_probes.py").write_text(
        textwrap.dedent(
            """
            from aiotrace import probe
            from aiotrace.probe import tracepoint

            @probe.tracepoint
            def trace_hello_pre(who: str) -> None: ...

            @tracepoint(record=True)
            async def trace_hello(who: str, times: int = 1) -> None: ...
            """
        )
    )
    (tmp_path / "user_of_hello.py").write_text(
        "from hello_pkg_for_probes import trace_hello\n"
    )
    assert cli_main(["probes", str(tmp_path / "hello_pkg_for_probes.py")]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "hello_pkg_for_probes.trace_hello_pre(who: str)",
        "hello_pkg_for_probes.trace_hello(who: str, times: int = 1)  [async, record]",
    ]
    assert cli_main(["probes", str(tmp_path / "user_of_hello.py")]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert "declares no tracepoints" in out.err
    assert cli_main(["probes", "no_such_module_for_probes"]) == 1
    assert "ModuleNotFoundError" in capsys.readouterr().err


def test_cli_probes_by_module_name_in_a_subprocess() -> None:
    """`python -m aiotrace probes NAME` imports NAME from the current
    directory, as `python -m` would."""
    proc = subprocess.run(
        [sys.executable, "-m", "aiotrace", "probes", "tracetest_example"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=EXAMPLES,
    )
    assert proc.stdout.splitlines() == [
        "tracetest_example.trace_load(key: str)  [async]",
        "tracetest_example.trace_served(client: str, key: str, value: str)  [async]",
    ]


def test_public_surface_of_probe_and_tracetest() -> None:
    """probe and tracetest export sorted, unique, existing names; their
    classes and functions have docstrings; and importing them loads
    neither the reader nor each other."""
    from aiotrace import tracetest

    for module in (probe, tracetest):
        names = list(module.__all__)
        assert len(names) == len(set(names))
        # ruff's order (RUF022): constants, then classes, then the rest;
        # a one-letter name such as T counts as a class.
        key = lambda n: (not (n.isupper() and len(n) > 1), n)  # noqa: E731
        assert names == sorted(names, key=key)
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"
    code = (
        "import sys, aiotrace.probe; "
        "print(sorted(m for m in sys.modules if m.startswith('aiotrace')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "aiotrace.probe" in out
    assert "aiotrace.reader" not in out
    assert "aiotrace.tracetest" not in out
