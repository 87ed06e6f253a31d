"""The executors rule on a real program: a 2-thread pool held by slow
reports while quick lookups queue, beside a busy but never full pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from findings_cli import PACKAGE, PROGRAMS, cli

from aiotrace.analysis._diagnose import diagnose
from aiotrace.analysis._findings import Diagnosis
from aiotrace.reader import EventKind, read_events

QUEUED = "/executor/queued:seconds"


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("executor") / "prog.trace"
    run = cli("run", "-o", str(out), str(PROGRAMS / "executor_starved.py"))
    assert run.returncode == 0, run.stderr
    return out


def _texts(d: Diagnosis, kind: str) -> list[str]:
    return [f"{f.summary}\n{f.detail}" for f in d.findings if f.kind == kind]


def test_the_starved_function_and_the_holder_are_named(trace: Path) -> None:
    """One finding names the function that queued (fetch_rate) and the one
    that held the workers (build_report); nothing names the busy pool's
    function, nor aiotrace's code."""
    d = diagnose(trace)
    found = _texts(d, "executor")
    assert any(
        "fetch_rate" in t.splitlines()[0] and "build_report" in t.splitlines()[0]
        for t in found
    ), found
    everything = "\n".join(f"{f.summary}\n{f.detail}" for f in d.findings)
    assert "make_thumb" not in everything
    assert PACKAGE not in "\n".join(found)
    starved = next(f for f in d.findings if "fetch_rate" in f.where)
    assert starved.evidence["workers"] == 2
    assert starved.cost_ns >= 10 * starved.evidence["ran_ns"]


def test_the_section_measures_each_executor(trace: Path) -> None:
    """The Executors section gives each pool its workers and busy share,
    and each function its calls, time queued and time run."""
    d = diagnose(trace)
    sec = next(s for s in d.sections if s.title == "Executors")
    reports, thumbs = sec.data["reports"], sec.data["thumbs"]
    assert reports["workers"] == 2
    assert reports["busy"] > thumbs["busy"]
    funcs = {k.split(" ")[0]: v for k, v in reports["functions"].items()}
    rate, build = funcs["fetch_rate"], funcs["build_report"]
    assert rate["calls"] == rate["queued_calls"] == 6
    assert build["calls"] == 6
    assert rate["queued_ns"] > 10 * rate["ran_ns"]
    assert rate["queued_max_ns"] >= rate["queued_mean_ns"] > 0
    thumb = next(v for k, v in thumbs["functions"].items() if "make_thumb" in k)
    assert thumb["calls"] == 20
    assert thumb["queued_ns"] < thumb["ran_ns"]
    assert any("reports: 2 workers" in line for line in sec.lines)


def test_queue_times_are_inferred_without_the_metric(trace: Path) -> None:
    """A trace without the queue-time metric (an older recorder) still
    names the starved function and the holder, from the awaiting
    coroutines' executor waits."""
    events = [
        ev
        for ev in read_events(trace)
        if not (ev[0] is EventKind.METRIC and ev[6][0] == QUEUED)
    ]
    d = diagnose(events)
    found = [f.summary for f in d.findings if f.kind == "executor"]
    assert any("fetch_rate" in s and "build_report" in s for s in found), found
    assert not any("make_thumb" in s for s in found)


def test_aiotrace_stats_names_the_culprit(trace: Path) -> None:
    """``aiotrace stats`` shows the finding and the Executors section."""
    stats = cli("stats", str(trace))
    assert stats.returncode == 0, stats.stderr
    text = stats.stdout
    block = text[text.index("Findings") :].split("\n\n", 1)[0]
    assert "fetch_rate" in block and "build_report" in block, text
    assert "make_thumb" not in block
    assert "\nExecutors\n" in text
