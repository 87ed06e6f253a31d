"""The GC rule on a real program: one coroutine makes heaps of cyclic
garbage beside an innocent heartbeat; and a program that makes little."""

from __future__ import annotations

from pathlib import Path

import pytest
from findings_cli import PACKAGE, PROGRAMS, cli

from aiotrace.analysis._diagnose import diagnose


def _trace(tmp: pytest.TempPathFactory, program: str) -> Path:
    out = tmp.mktemp(program) / "prog.trace"
    run = cli("run", "-o", str(out), str(PROGRAMS / f"{program}.py"))
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trace(tmp_path_factory, "gc_cycles")


def test_gc_pressure_names_the_allocating_coroutine(trace: Path) -> None:
    """The GC finding names the coroutine that allocated when the longest
    pauses began (ingest, at a line of the program), never the innocent
    heartbeat nor aiotrace's own code."""
    d = diagnose(trace)
    gc = [f for f in d.findings if f.kind == "gc"]
    assert len(gc) == 1, [f.summary for f in d.findings]
    f = gc[0]
    assert "ingest" in f.summary
    assert "gc_cycles.py:" in f.where
    text = f"{f.summary}\n{f.detail}"
    assert "heartbeat" not in text
    assert PACKAGE not in text
    assert f.evidence["generation"] in ("gen0", "gen1", "gen2")
    assert f.cost_ns <= f.evidence["busy_ns"]


def test_the_section_gives_each_generation(trace: Path) -> None:
    """The GC section gives, per generation, the collections, the total
    pause and the longest pause."""
    d = diagnose(trace)
    sec = next(s for s in d.sections if s.title == "GC")
    gens = {k: v for k, v in sec.data.items() if k.startswith("gen")}
    assert gens["gen0"]["collections"] > gens["gen2"]["collections"] >= 1
    for g in gens.values():
        assert g["total_ns"] >= g["longest_ns"] > 0
        assert g["total_ns"] >= g["in_loop_ns"]
    assert any(line.startswith("gen2: ") for line in sec.lines)


def test_aiotrace_stats_names_the_culprit(trace: Path) -> None:
    """``aiotrace stats`` shows the GC finding and the GC section."""
    stats = cli("stats", str(trace))
    assert stats.returncode == 0, stats.stderr
    text = stats.stdout
    block = text[text.index("Findings") :].split("\n\n", 1)[0]
    assert "GC pressure" in block and "ingest" in block, text
    assert "heartbeat" not in block
    assert "\nGC\n" in text


def test_little_garbage_is_no_finding(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A program that makes little garbage has a GC section but no GC
    finding."""
    d = diagnose(_trace(tmp_path_factory, "executor_starved"))
    assert not [f for f in d.findings if f.kind == "gc"]
    assert any(s.title == "GC" for s in d.sections)
