"""tracetest's runs: one run with a deadlock watchdog, and verify's N+1 runs."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._tracetest import Failure, T

Body = Callable[[T], Awaitable[None]]
"""A tracetest body: an async function of the run's ``T``."""

DEFAULT_TIMEOUT = 3.0
"""Seconds without any event sent or received before a run is a deadlock."""
DEFAULT_DELAY = 0.1
"""Seconds verify holds back the delayed event of each run."""


@dataclass
class _Outcome:
    problems: list[str] = field(default_factory=list)
    events: int = 0
    delayed: str | None = None
    error: BaseException | None = None  # what the body raised, if anything


async def run(body: Body, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Runs a tracetest once: ``await body(t)`` with a fresh ``T``.

    The body builds the system under test, attaches its tracepoints with
    ``t.attach``, starts it, and ``await t.expect(stream, event)`` for each
    event in turn. It should wait for what it started (a ``TaskGroup``,
    joined threads) before it returns.

    Raises:
        Failure: the body raised (an ``expect`` mismatch, an ``assert``), a
            deadlock (nothing sent or received for ``timeout`` seconds), a
            producer could not pause, or events were left unconsumed. The
            message lists each problem; what the body raised is the cause.
    """
    _check_args(timeout, 0.0)
    outcome = await _run_once(body, timeout=timeout, delay_at=None, delay=0.0)
    if outcome.problems:
        raise Failure(
            _join("tracetest: the run failed", outcome.problems), outcome.problems
        ) from outcome.error


async def verify(
    body: Body, *, timeout: float = DEFAULT_TIMEOUT, delay: float = DEFAULT_DELAY
) -> None:
    """Runs a tracetest once as ``run`` does, then once per event with that
    event delayed, to find races (go123's ``tracetest.Verify``).

    If the first run fires N events, N more runs follow. Run k holds event
    k (in firing order, from 0) back for ``delay`` seconds before it
    reaches its stream, so that every other coroutine and thread goes first
    as far as it can. A correct system passes every run; a race shows up as
    a failing run, and the failure says which event's delay caused it.

    Raises:
        Failure: the first run failed (then no delayed run is made), or
            some delayed runs failed; the message lists each with its
            problems.
    """
    _check_args(timeout, delay)
    first = await _run_once(body, timeout=timeout, delay_at=None, delay=delay)
    if first.problems:
        raise Failure(
            _join("tracetest.verify: the run without delays failed", first.problems),
            first.problems,
        ) from first.error
    failed: list[tuple[int, _Outcome]] = []
    for k in range(first.events):
        outcome = await _run_once(body, timeout=timeout, delay_at=k, delay=delay)
        if outcome.problems:
            failed.append((k, outcome))
    if not failed:
        return
    lines = [
        f"tracetest.verify: {len(failed)} of {first.events} runs with one event "
        f"delayed by {delay:g} s failed (the run without delays passed; "
        f"{first.events + 1} runs in all)."
    ]
    problems: list[str] = []
    for k, outcome in failed:
        what = outcome.delayed or "it did not fire in this run"
        lines.append(f"delay@{k}: delaying event #{k} ({what}) made the run fail:")
        lines.extend(_indent(p) for p in outcome.problems)
        problems.extend(f"delay@{k}: {p}" for p in outcome.problems)
    raise Failure("\n".join(lines), problems) from failed[0][1].error


def _check_args(timeout: float, delay: float) -> None:
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    if not 0 <= delay < timeout:
        raise ValueError(
            f"delay must be at least 0 and less than the timeout "
            f"({timeout:g} s), not {delay!r}"
        )


async def _run_once(
    body: Body, *, timeout: float, delay_at: int | None, delay: float
) -> _Outcome:
    t = T(timeout=timeout, delay_at=delay_at, delay=delay)
    task = asyncio.create_task(_call(body, t), name="tracetest body")
    outcome = _Outcome()
    try:
        while not task.done():
            left = t._last_progress + timeout - time.monotonic()
            if left <= 0:
                outcome.problems.append(t._deadlock())
                break
            await asyncio.wait([task], timeout=left)
        if task.done() and not task.cancelled() and task.exception() is None:
            # The body passed: what producers are still paused is left over.
            outcome.problems.extend(t.problems)
            left_over = t._unconsumed()
            if left_over is not None:
                outcome.problems.append(left_over)
    finally:
        t._close()
        if not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=timeout)
    if not task.done():
        outcome.problems.append(
            f"the test body did not stop within {timeout:g} s of being cancelled"
        )
    elif task.cancelled():
        if not outcome.problems:  # not by the watchdog
            outcome.problems.append("the test body was cancelled")
    elif (error := task.exception()) is not None:
        outcome.error = error
        outcome.problems[:0] = _problems(error, t)
    outcome.events = len(t.messages)
    if t.delayed is not None:
        outcome.delayed = t.delayed.describe()
    return outcome


async def _call(body: Body, t: T) -> None:
    await body(t)


def _problems(error: BaseException, t: T) -> list[str]:
    """Returns the problems behind what the body raised, groups flattened.

    A Failure that ``expect`` or ``receive`` raised is already among
    ``t.problems``; those come first, in the order found.
    """
    out: list[str] = list(t.problems)
    for exc in _leaves(error):
        if isinstance(exc, Failure) and all(p in out for p in exc.problems):
            continue
        text = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
        out.append(f"the test body raised {text}")
    return out


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in _leaves(sub)]
    return [error]


def _join(head: str, problems: list[str]) -> str:
    return "\n".join([f"{head}:"] + [_indent(p) for p in problems])


def _indent(text: str) -> str:
    lines = text.splitlines() or [""]
    return "\n".join(["  - " + lines[0]] + ["    " + ln for ln in lines[1:]])
