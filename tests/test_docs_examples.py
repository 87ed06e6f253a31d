"""Every ```python block of README.md and docs/*.md runs, so that the docs
stay true.

Each block runs as written, in a fresh interpreter with warnings as errors,
in a directory that holds a real trace as ``app.trace``, ``out.trace`` and
``live.trace`` (a program with a "job" task, a log and a loop stall); the
blocks of one file share that directory, in order. A block that defines
``test_`` functions is a test file: it runs under pytest.

A block that cannot run on its own (an excerpt of a larger program) says so
on the line before it, ``<!-- not run: why -->``; NOT_RUN lists them, so
that a new one is a deliberate choice.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import aiotrace
from aiotrace import reader

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")

NOT_RUN = {
    ("README.md", "test_handler_never_waits_on_the_lock"),
    ("README.md", "anyio.connect_tcp"),
    ("docs/probes.md", "_point.fire(who)"),
    ("docs/tracetest.md", "cache_type(Database())"),
}
"""(file, a string of the block) of each block marked ``not run``."""


@dataclass(frozen=True)
class Block:
    """One fenced python block: where it is, its code, and its mark."""

    doc: str
    line: int
    code: str
    not_run: str | None


def _blocks() -> list[Block]:
    out: list[Block] = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        rel = path.relative_to(ROOT).as_posix()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```python":
                start = i
                body: list[str] = []
                i += 1
                while lines[i].strip() != "```":
                    body.append(lines[i])
                    i += 1
                before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
                m = MARK.search(before)
                code = textwrap.dedent("\n".join(body)) + "\n"  # a block in a list
                out.append(Block(rel, start + 1, code, m and m.group(1)))
            i += 1
    return out


BLOCKS = _blocks()


async def _seed_program() -> None:
    async with aiotrace.new_task("job"):
        aiotrace.log("orderID", "42")
        await asyncio.sleep(0.01)
        time.sleep(0.15)  # holds the loop past the 0.1 s threshold: a stall
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trace with a task, a log and a stall."""
    path = tmp_path_factory.mktemp("seed") / "seed.trace"
    with aiotrace.tracing(path, stall_threshold=0.1):
        asyncio.run(_seed_program())
    assert not reader.validate(reader.read_events(path))
    return path


_dirs: dict[str, Path] = {}


def _workdir(doc: str, seed: Path, factory: pytest.TempPathFactory) -> Path:
    if doc not in _dirs:
        d = factory.mktemp(re.sub(r"\W", "_", doc))
        for name in ("app.trace", "out.trace", "live.trace"):
            shutil.copy(seed, d / name)
        _dirs[doc] = d
    return _dirs[doc]


@pytest.mark.parametrize(
    "block",
    [b for b in BLOCKS if b.not_run is None],
    ids=lambda b: f"{b.doc}:{b.line}",
)
def test_a_docs_example_runs(
    block: Block, seed: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The block runs to the end, with status 0, as written (a test file
    under pytest, with every test passing)."""
    cwd = _workdir(block.doc, seed, tmp_path_factory)
    if re.search(r"^(async )?def test_", block.code, re.M):
        script = cwd / f"test_block_{block.line}.py"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["-W", "error", "-o", "asyncio_default_fixture_loop_scope=function"]
        cmd.append(str(script))
    else:
        script = cwd / f"block_{block.line}.py"
        cmd = [sys.executable, "-W", "error", str(script)]
    script.write_text(block.code)
    r = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=90, check=False
    )
    assert r.returncode == 0, (
        f"{block.doc}:{block.line} failed ({r.returncode}):\n{block.code}\n"
        f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    )


def test_only_the_listed_blocks_are_not_run() -> None:
    """Every block marked ``not run`` gives its reason and is one NOT_RUN
    lists; every NOT_RUN entry matches one marked block."""
    marked = [b for b in BLOCKS if b.not_run is not None]
    assert all(b.not_run for b in marked)
    found = {
        (doc, needle)
        for doc, needle in NOT_RUN
        for b in marked
        if b.doc == doc and needle in b.code
    }
    assert found == NOT_RUN
    assert len(marked) == len(NOT_RUN), [f"{b.doc}:{b.line}" for b in marked]


def test_the_examples_are_found() -> None:
    """The extraction sees the README's and the docs' blocks (a broken
    fence would silently run nothing)."""
    docs = {b.doc for b in BLOCKS}
    assert {"README.md", "docs/writer.md", "docs/analysis.md"} <= docs
    assert len(BLOCKS) >= 25
