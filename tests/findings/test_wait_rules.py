"""The rules over waits name their culprit: lock contention, queue
backpressure, lost wakeups and pending work, on real programs under
``tests/findings/programs/`` traced with ``aiotrace run`` (default options),
each with an innocent look-alike that must not be named."""

from __future__ import annotations

from pathlib import Path

from findings_cli import PROGRAMS, marked_line, run_traced

from aiotrace.analysis import diagnose
from aiotrace.analysis._findings import Finding
from aiotrace.reader import Reader, validate


def _found(program: str, tmp_path: Path, kind: str) -> list[Finding]:
    out = run_traced(PROGRAMS / program, tmp_path / (Path(program).stem + ".trace"))
    with open(out, "rb") as f:
        assert validate(Reader(f)) == []
    return [f for f in diagnose(out).findings if f.kind == kind]


def _text(found: list[Finding]) -> str:
    return "\n".join(f"{f.summary}\n{f.detail}" for f in found)


def test_lock_contention_names_the_lock_its_holder_and_what_it_awaited(
    tmp_path: Path,
) -> None:
    """One finding: the lock acquired at ``worker``'s ``async with``, held
    by workers while they awaited ``fetch``'s sleep; ``tidy``'s own lock,
    held for a moment, is not named."""
    program = "lock_held_over_fetch.py"
    found = _found(program, tmp_path, "lock")
    assert len(found) == 1, _text(found)
    (f,) = found
    acquire = f"{program}:{marked_line(program, 'acquire')}"
    assert f.where.startswith("worker (") and f.where.endswith(f"{acquire})"), f
    assert f.summary.startswith("lock contention: worker (coroutines"), f.summary
    assert f"fetch ({PROGRAMS / program}:{marked_line(program, 'fetch')})" in f.detail
    assert f.evidence["waits"] >= 4 and len(f.evidence["waiters"]) >= 4
    # Four waiters queued 100-400 ms each behind 100 ms holds.
    assert f.cost_ns >= 4 * 100_000_000 * 0.9, f.cost_ns
    assert "tidy" not in _text(found)


def test_queue_backpressure_names_the_slow_consumer(tmp_path: Path) -> None:
    """One finding: producers blocked in ``put`` at their line, woken by
    ``slow_consumer``'s ``get``, which between gets awaits its work; the
    idle consumer waiting in ``get`` on an empty queue is not named."""
    program = "queue_slow_consumer.py"
    found = _found(program, tmp_path, "queue")
    assert len(found) == 1, _text(found)
    (f,) = found
    assert "the slow consumer is slow_consumer" in f.summary, f.summary
    assert f.where.endswith(f"{program}:{marked_line(program, 'put')})"), f.where
    assert f"{program}:{marked_line(program, 'get')}" in f.detail, f.detail
    assert f"{program}:{marked_line(program, 'work')}" in f.detail, f.detail
    assert f.evidence["consumer_names"] == ["slow_consumer"]
    assert "idle_consumer" not in _text(found)
    # Nor is the idle consumer pending work: main cancels it itself.
    pending = _text(_found(program, tmp_path, "pending"))
    assert "idle_consumer" not in pending, pending


def test_lost_wakeup_names_the_condition_and_the_notifier(tmp_path: Path) -> None:
    """One finding: two of the three listeners ran into their timeout while
    ``notify()`` woke the third; the Event waited on with a periodic
    timeout, and set once, is not named."""
    program = "wakeup_notify_one.py"
    found = _found(program, tmp_path, "lost-wakeup")
    assert len(found) == 1, _text(found)
    (f,) = found
    assert f.where.endswith(f"{program}:{marked_line(program, 'wait')})"), f.where
    assert f.evidence["timed_out"] == 2, f.evidence
    assert "Condition.wait" in f.summary and "notify_all()" in f.detail
    assert "notify() by announcer" in f.summary, f.summary
    assert "ticker" not in _text(found)


def test_pending_work_names_what_was_left_waiting(tmp_path: Path) -> None:
    """Two findings: ``orphan`` (on its Event) and ``lingering`` (in its
    sleep), cancelled at shutdown, each with its line; the finishers are
    not named."""
    program = "pending_left_behind.py"
    found = _found(program, tmp_path, "pending")
    text = _text(found)
    assert len(found) == 2, text
    by_name = {f.evidence["function"]: f for f in found}
    assert set(by_name) == {"orphan", "lingering"}, text
    for name, f in by_name.items():
        assert f.evidence["state"] == "cancelled", f
        assert f.where.endswith(f"{program}:{marked_line(program, name)})"), f.where
        assert "cancelled at shutdown" in f.summary
        assert f.evidence["waited_ns"] >= 300_000_000 * 0.9
    assert "Event.wait" in by_name["orphan"].summary
    assert "finisher" not in text
