"""The fault programs of examples/faults/, end to end through the real CLI.

Each program hides one classic fault among innocent coroutines. Traced with
``aiotrace run`` (default options) and read with ``aiotrace stats``, its
trace must validate, and the "Findings" block of the stats text must name
the culprit in a finding's summary (where the program's fault has a line,
with a ``file:line`` inside the culprit's code) and never name an innocent
look-alike, nor a frame of aiotrace's own.

The culprit is looked for in the Findings block, not anywhere in the text:
the rest of ``aiotrace stats`` (coroutines by function, longest waits)
lists every function, the innocents' too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from findings_cli import PACKAGE, cli

FAULTS = Path(__file__).resolve().parent.parent.parent / "examples" / "faults"


@dataclass(frozen=True)
class Case:
    """One fault program and what its findings must (not) name."""

    program: str
    culprits: tuple[tuple[str, ...], ...]
    """Each group: a finding's summary names one of these."""
    innocents: tuple[str, ...]
    """Names the Findings block never holds."""
    lines_in: tuple[str, ...] = ()
    """Functions of the program: the block gives ``program:N`` with N in one."""
    needs: str | None = None
    """A module the program imports that may not be installed."""


CASES = [
    Case(
        "blocking.py",
        culprits=(("export_report",),),
        innocents=("poll_status", "refresh_quotes"),
        lines_in=("export_report",),
    ),
    Case(
        "lock.py",
        culprits=(("refresh_orders",),),
        innocents=("bump_stats",),
        lines_in=("refresh_orders", "fetch_remote"),
    ),
    Case(
        "backpressure.py",
        culprits=(("slow_consumer",),),
        innocents=("idle_consumer", "log_events"),
        lines_in=("slow_consumer",),
    ),
    Case(
        "pending.py",
        culprits=(("wait_for_ready",), ("await_reply",)),
        innocents=("load_settings", "send_ping", "heartbeat"),
        lines_in=("wait_for_ready", "await_reply"),
    ),
    Case(
        "lost_wakeup.py",
        culprits=(("publish_batch",),),
        innocents=("watch_shutdown",),
        lines_in=("publish_batch",),
    ),
    Case(
        "executor.py",
        culprits=(("render_pdf",),),
        innocents=("hash_chunk", "checksum_worker"),
    ),
    Case(
        "gc_pressure.py",
        culprits=(("index_documents", "link_nodes"),),
        innocents=("serve_health", "count_clicks"),
    ),
    Case(
        "slow_route.py",
        culprits=(("/report",),),
        innocents=("/health", "get_health"),
        needs="aiohttp",
    ),
]


def findings_block(text: str) -> list[str]:
    """The lines of the Findings block: from the line that starts with
    "Findings" to the first blank line."""
    lines = text.splitlines()
    start = next(
        (i for i, ln in enumerate(lines) if ln.lstrip().startswith("Findings")), None
    )
    if start is None:
        return []
    block: list[str] = []
    for ln in lines[start:]:
        if not ln.strip():
            break
        block.append(ln)
    return block


def summaries(block: list[str]) -> list[str]:
    """The findings' one-line summaries (``  1. ...``) of a Findings block."""
    return [ln for ln in block if re.match(r"\s*\d+\. ", ln)]


def spans(program: Path, names: tuple[str, ...]) -> set[int]:
    """The line numbers of the functions ``names`` of ``program``."""
    tree = ast.parse(program.read_text())
    lines: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name in names
        ):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    assert lines, f"{program.name} has none of {names}"
    return lines


def problems(case: Case, findings: str) -> list[str]:
    """What is wrong with the Findings block of ``aiotrace stats`` text
    ``findings`` for ``case``, in words; empty when it names the culprit
    and no innocent."""
    block = findings_block(findings)
    if not block:
        return ["no Findings block"]
    shown = "\n".join(block)
    said = "\n".join(summaries(block))
    out: list[str] = []
    for group in case.culprits:
        if not any(name in said for name in group):
            where = " (only in a detail line)" if any(n in shown for n in group) else ""
            out.append(f"no finding's summary names {' or '.join(group)}{where}")
    if case.lines_in:
        want = spans(FAULTS / case.program, case.lines_in)
        line = rf"(?<![\w.-]){re.escape(case.program)}:(\d+)"
        found = {int(n) for n in re.findall(line, shown)}
        if not found & want:
            out.append(
                f"no {case.program}:N inside {', '.join(case.lines_in)} "
                f"(lines {min(want)}-{max(want)}); given: {sorted(found)}"
            )
    out += [f"the findings name innocent {n}" for n in case.innocents if n in shown]
    if PACKAGE in shown:
        out.append("the findings name aiotrace's own code")
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.program.removesuffix(".py"))
def test_the_findings_name_the_culprit(case: Case, tmp_path: Path) -> None:
    """The program runs traced and its trace validates; the Findings block
    of ``aiotrace stats`` names the culprit in a summary (with a line of
    the culprit's code where the fault has one), and neither an innocent
    look-alike nor aiotrace's own code. Every problem is reported at once."""
    if case.needs:
        pytest.importorskip(case.needs)
    trace = tmp_path / "prog.trace"
    run = cli("run", "-o", str(trace), str(FAULTS / case.program))
    assert run.returncode == 0, run.stderr
    stats = cli("stats", str(trace))
    assert stats.returncode == 0, stats.stderr
    found = problems(case, stats.stdout)
    if not (case.program == "slow_route.py" and EAGER_AIOHTTP):
        # (On 3.12+ that trace's validity is test_slow_route_trace_validates's.)
        found += _invalid(trace)
    shown = "\n".join(findings_block(stats.stdout))
    assert not found, (
        "\n".join(found)
        + f"\n--- Findings block of {case.program}:\n{shown}"
        + f"\n--- aiotrace run, then aiotrace stats:\n{run.stderr}{stats.stdout}"
    )


EAGER_AIOHTTP = sys.version_info >= (3, 12)
"""aiohttp starts each request's task eagerly on 3.12+, which the execution
tracer does not see (the strict xfails of tests/contrib)."""


def _invalid(trace: Path) -> list[str]:
    """What ``aiotrace dump --validate`` finds wrong with ``trace``."""
    check = subprocess.run(
        [sys.executable, "-m", "aiotrace", "dump", "--validate", str(trace)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=90,
        check=False,
    )
    if check.returncode == 0:
        return []
    invalid = check.stderr.splitlines()
    return [f"the trace is invalid ({len(invalid)} problems): {invalid[0]}"]


@pytest.mark.xfail(
    EAGER_AIOHTTP,
    strict=True,
    reason="the execution tracer does not see asyncio.Task(coro, "
    "eager_start=True), which aiohttp uses for each request on 3.12+: the "
    "middleware's regions begin on the connection's coroutine",
)
def test_slow_route_trace_validates(tmp_path: Path) -> None:
    """The aiohttp fault program's trace validates."""
    pytest.importorskip("aiohttp")
    trace = tmp_path / "prog.trace"
    run = cli("run", "-q", "-o", str(trace), str(FAULTS / "slow_route.py"))
    assert run.returncode == 0, run.stderr
    assert _invalid(trace) == []


UVLOOP = """
import runpy, sys
import uvloop

uvloop.install()
sys.argv = [{program!r}]
runpy.run_path({program!r}, run_name="__main__")
"""


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.needs is None],
    ids=lambda c: c.program.removesuffix(".py"),
)
def test_the_findings_name_the_culprit_on_uvloop(case: Case, tmp_path: Path) -> None:
    """The same, with each program run on uvloop (``uvloop.install()``)."""
    pytest.importorskip("uvloop")
    trace = tmp_path / "prog.trace"
    script = tmp_path / "on_uvloop.py"
    script.write_text(UVLOOP.format(program=str(FAULTS / case.program)))
    run = cli("run", "-o", str(trace), str(script))
    assert run.returncode == 0, run.stderr
    stats = cli("stats", str(trace))
    assert stats.returncode == 0, stats.stderr
    found = problems(case, stats.stdout) + _invalid(trace)
    shown = "\n".join(findings_block(stats.stdout))
    assert not found, (
        "\n".join(found) + f"\n--- Findings block of {case.program}:\n{shown}"
    )
