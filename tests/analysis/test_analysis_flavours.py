"""analysis.analyze on trio and uvloop programs: same answers as on asyncio."""

from __future__ import annotations

from pathlib import Path

import analysis_scenario as sc
import pytest

import aiotrace
from aiotrace import analysis


@pytest.mark.parametrize("flavour", ["trio", "uvloop"])
def test_sleeper_and_stall(flavour: str, tmp_path: Path) -> None:
    """On trio and uvloop too, the sleeper's four sleeps are its block time
    for reason "sleep", and the stall is held by the staller with blocking()
    innermost in its most common stack."""
    pytest.importorskip(flavour)
    path = tmp_path / "t.trace"
    sc.trace_flavour(str(path), flavour)
    s = analysis.analyze(path)
    (sleeper,) = [g for g in s.coroutines if g.name.endswith("sleeper")]
    assert sleeper.block_ns["sleep"] >= sc.SLEEPS * sc.SLEEP * 1e9
    (stall,) = s.stalls
    assert stall.duration_ns >= sc.STALL * 1e9
    assert stall.coroutine_name.endswith("staller")
    assert stall.folded()[0][0].frames[0].func == "blocking"
    (loop,) = s.loops
    assert loop.busy_ns >= sc.STALL * 1e9
    if flavour == "trio":
        # trio's own tasks keep their bracketed names whole.
        assert all(g.name.count("<") == g.name.count(">") for g in s.coroutines)


def test_a_callback_stall_has_no_coroutine(tmp_path: Path) -> None:
    """A stall in a plain loop callback (not a coroutine step) is held by no
    coroutine, and its samples still name the blocking function."""
    import asyncio

    from aiotrace.reader import NO_COROUTINE

    async def main() -> None:
        done = asyncio.Event()

        def callback() -> None:
            sc.blocking()
            done.set()

        asyncio.get_running_loop().call_soon(callback)
        await done.wait()

    path = tmp_path / "t.trace"
    with aiotrace.tracing(path):
        asyncio.run(main())
    s = analysis.analyze(path)
    (stall,) = s.stalls
    assert stall.coroutine == NO_COROUTINE and stall.coroutine_name == ""
    assert stall.duration_ns >= sc.STALL * 1e9
    assert [f.func for f in stall.folded()[0][0].frames[:2]] == [
        "blocking",
        "test_a_callback_stall_has_no_coroutine.<locals>.main.<locals>.callback",
    ]
    assert "held by (a callback)" in analysis.format_stalls(s)
