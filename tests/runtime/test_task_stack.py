"""``Task.get_stack()`` and ``print_stack()`` show the program's frames, not
aiotrace's hooks: the same frames traced as untraced."""

from __future__ import annotations

import asyncio
import io
from asyncio import base_tasks
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from programs import FLAVOURS, read_trace, run

import aiotrace

uvloop = pytest.importorskip("uvloop")


def _names(frames: list[Any]) -> list[str]:
    return [f"{f.f_code.co_filename}:{f.f_code.co_qualname}" for f in frames]


async def _report(out: dict[str, Any], key: str) -> None:
    task = asyncio.current_task()
    assert task is not None
    out[key] = _names(task.get_stack())
    out[key + " limit 2"] = _names(task.get_stack(limit=2))
    printed = io.StringIO()
    task.print_stack(file=printed)
    out[key + " printed"] = printed.getvalue().count('File "')
    await asyncio.sleep(0)


async def _program(out: dict[str, Any]) -> None:
    await _report(out, "main")
    await asyncio.create_task(_report(out, "child"))
    waiting = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    out["suspended"] = _names(waiting.get_stack())
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


def _stacks(
    runner: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runner(lambda: _program(out))
    return out


@pytest.mark.parametrize("flavour", [*FLAVOURS, "uvloop"])
def test_task_stack_hides_hook_frames(tmp_path: Path, flavour: str) -> None:
    """Inside a running task (the main one, a child, an eager child) and for
    a suspended one, get_stack(), get_stack(limit=2) and print_stack() give
    the same frames traced as untraced: none of aiotrace's."""

    def runner(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if flavour == "uvloop":
            uvloop.run(main())
        else:
            run(main, flavour)

    untraced = _stacks(runner)
    path = tmp_path / "stack.trace"
    with aiotrace.tracing(path):
        traced = _stacks(runner)
    read_trace(path).check()
    assert traced == untraced
    assert len(untraced["main"]) >= 3, untraced
    assert len(untraced["main limit 2"]) == 2
    assert untraced["main printed"] == len(untraced["main"])


def test_get_stack_restored_after_stop(tmp_path: Path) -> None:
    """Stopping the trace puts asyncio's own get_stack code back."""
    code = base_tasks._task_get_stack.__code__
    with aiotrace.tracing(tmp_path / "t.trace"):
        assert base_tasks._task_get_stack.__code__ is not code
    assert base_tasks._task_get_stack.__code__ is code
    assert not hasattr(base_tasks, "_aiotrace_task_get_stack")
