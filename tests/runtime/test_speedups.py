"""The C step hook (aiotrace._speedups) records what the Python hook does."""

from __future__ import annotations

import asyncio
import importlib.util
from asyncio import events
from pathlib import Path
from typing import Any

import pytest

import aiotrace
from aiotrace import reader
from aiotrace.reader import EventKind, ResourceKind

BUILT = importlib.util.find_spec("aiotrace._speedups") is not None
needs_c = pytest.mark.skipif(not BUILT, reason="the C speedups are not built here")


async def program() -> list[Any]:
    """Queues, sleeps, a lock, awaited tasks, an exception and a cancel."""
    q: asyncio.Queue[int] = asyncio.Queue()
    lock = asyncio.Lock()
    out: list[Any] = []

    async def producer() -> None:
        for i in range(20):
            await q.put(i)
            await asyncio.sleep(0)

    async def consumer() -> None:
        for _ in range(20):
            async with lock:
                out.append(await q.get())

    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("burnt")

    async def forever() -> None:
        await asyncio.sleep(10)

    await asyncio.gather(producer(), consumer())
    for _ in range(10):
        out.append(await asyncio.create_task(asyncio.sleep(0, "slept")))
    try:
        await asyncio.create_task(boom())
    except ValueError as exc:
        out.append(str(exc))
    f = asyncio.create_task(forever())
    await asyncio.sleep(0.001)
    f.cancel()
    (cancelled,) = await asyncio.gather(f, return_exceptions=True)
    out.append(type(cancelled).__name__)
    return out


def shape(path: Path) -> list[tuple[str, str, str, str]]:
    """Each coroutine transition as (label, old, new, reason), in order."""
    events_ = reader.read_events(path)
    assert reader.validate(events_) == []
    labels = {
        ev.label.resource.id: ev.label.label
        for ev in events_
        if ev.kind is EventKind.LABEL
        and ev.label.resource.kind is ResourceKind.COROUTINE
    }
    return [
        (
            labels[st.resource.id],
            st.old.name,
            st.new.name,
            st.reason,
        )
        for ev in events_
        if ev.kind is EventKind.STATE_TRANSITION
        and (st := ev.state_transition).resource.kind is ResourceKind.COROUTINE
    ]


def traced(path: Path, monkeypatch: pytest.MonkeyPatch, pure: bool) -> list[Any]:
    if pure:
        monkeypatch.setenv("AIOTRACE_PURE_PYTHON", "1")
    else:
        monkeypatch.delenv("AIOTRACE_PURE_PYTHON", raising=False)
    with aiotrace.tracing(path, metrics_interval=None):
        hook = events.Handle.__dict__["_run"]
        assert (type(hook).__name__ == "StepHook") is (BUILT and not pure)
        return asyncio.run(program())


@needs_c
def test_c_and_python_hooks_record_the_same_transitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same program traced with the C step hook and with the pure-Python
    one (AIOTRACE_PURE_PYTHON=1) gives the same result and the same
    sequence of coroutine transitions, labels and reasons."""
    c_path, py_path = tmp_path / "c.trace", tmp_path / "py.trace"
    c_result = traced(c_path, monkeypatch, pure=False)
    py_result = traced(py_path, monkeypatch, pure=True)
    assert c_result == py_result
    c_shape, py_shape = shape(c_path), shape(py_path)
    assert len(c_shape) > 100
    assert c_shape == py_shape
