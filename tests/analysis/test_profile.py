"""Profiles (``analysis.profile`` and ``aiotrace profile``) of real traced programs."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path

import pytest
from helpers import aiotrace_cli

import aiotrace
from aiotrace import analysis, reader

WAITERS = 3
HOLD = 0.05  # the first holder keeps the lock this long
SHORT_HOLD = 0.01  # each waiter then keeps it this long
SPIN = 0.05  # a CPU-bound step holds the loop this long
OFFLOAD = 0.05
STALL = 0.25
PUTS = 2


async def holder(lock: asyncio.Lock, held: asyncio.Event) -> None:
    async with lock:
        held.set()
        await asyncio.sleep(HOLD)


async def contender(lock: asyncio.Lock, held: asyncio.Event) -> None:
    await held.wait()
    async with lock:  # LOCK LINE
        await asyncio.sleep(SHORT_HOLD)


async def consumer(q: asyncio.Queue[int]) -> None:
    for _ in range(PUTS):
        await q.get()


async def producer(q: asyncio.Queue[int]) -> None:
    for i in range(PUTS):
        await asyncio.sleep(0.01)
        q.put_nowait(i)


def cpu(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


async def sleeper_woken(go: asyncio.Event) -> None:
    await go.wait()


async def spinner(go: asyncio.Event) -> None:
    await asyncio.sleep(0.005)
    go.set()  # wakes every sleeper_woken, then holds the loop
    cpu(SPIN)


def offloaded() -> None:
    time.sleep(OFFLOAD)


async def offloader() -> None:
    await asyncio.to_thread(offloaded)


def blocking() -> None:
    time.sleep(STALL)


async def staller() -> None:
    await asyncio.sleep(0.001)
    blocking()


async def main() -> None:
    lock, held, go = asyncio.Lock(), asyncio.Event(), asyncio.Event()
    q: asyncio.Queue[int] = asyncio.Queue()
    await asyncio.gather(
        holder(lock, held),
        *(contender(lock, held) for _ in range(WAITERS)),
        consumer(q),
        producer(q),
    )
    await asyncio.gather(spinner(go), *(sleeper_woken(go) for _ in range(WAITERS)))
    await asyncio.gather(offloader(), staller())


def _trace(path: Path, *, block_stacks: bool) -> Path:
    with aiotrace.tracing(str(path), block_stacks=block_stacks):
        asyncio.run(main())
    return path


@pytest.fixture(scope="module", params=[False, True], ids=["default", "block_stacks"])
def traced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, bool]:
    bs: bool = request.param
    path = tmp_path_factory.mktemp("profile") / f"prog-{bs}.trace"
    return _trace(path, block_stacks=bs), bs


def _names(s: analysis.ProfileStack) -> list[str]:
    return [f.func for f in s.frames]


def _stacks_with(p: analysis.Profile, *funcs: str) -> list[analysis.ProfileStack]:
    return [s for s in p.stacks if all(f in _names(s) for f in funcs)]


def _this_line(marker: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if marker in text)


def test_totals_agree_with_analyze(traced: tuple[Path, bool]) -> None:
    """Block, sched and exec totals equal analyze()'s block, scheduler wait
    and execution time; stall time equals the stalls' durations."""
    path, _ = traced
    s = analysis.analyze(path)
    block, sched, exe, stall = (
        analysis.profile(path, k) for k in analysis.Profile.KINDS
    )
    assert block.total_ns == sum(g.blocked_ns for g in s.coroutines) > 0
    assert sched.total_ns == sum(g.sched_wait_ns for g in s.coroutines) > 0
    assert exe.total_ns == sum(g.exec_ns for g in s.coroutines) > 0
    assert stall.total_ns == sum(st.duration_ns for st in s.stalls) > 0
    for p in (block, sched, exe, stall):
        assert p.events == s.events
        assert p.truncated is None
        assert p.stacks == sorted(p.stacks, key=lambda x: -x.value_ns)


def test_lock_wait_lands_under_the_contender(traced: tuple[Path, bool]) -> None:
    """The lock's block time is under contender, with a [lock] leaf, at least
    the holder's hold time for each waiter; with block_stacks the stack is
    the await chain down to Lock.acquire at the `async with` line."""
    path, block_stacks = traced
    p = analysis.profile(path, "block")
    lock = [s for s in p.stacks if s.frames[-1].func == "[lock]"]
    assert lock, p.folded()
    assert all("contender" in _names(s) for s in lock)
    assert sum(s.count for s in lock) == WAITERS
    waited = sum(s.value_ns for s in lock)
    # Each waiter waits for the holder's HOLD, and the later ones for the
    # earlier waiters' holds too.
    assert waited >= WAITERS * HOLD * 1e9
    groups = {g.name: g for g in analysis.analyze(path).coroutines}
    assert waited == groups["contender"].block_ns["lock"]
    (stack,) = lock
    # The creation stack comes first: main, at the gather line.
    assert stack.frames[0].func == "main"
    assert stack.frames[0].file == __file__
    if block_stacks:
        assert p.stacks_recorded > 0
        funcs = _names(stack)
        # Outermost first: the coroutine, then what it awaited, then the leaf.
        assert funcs.index("main") < funcs.index("contender")
        assert funcs.index("contender") < funcs.index("Lock.acquire")
        assert funcs[-2:] == ["Lock.acquire", "[lock]"]
        (frame,) = [f for f in stack.frames if f.func == "contender"]
        assert frame.line == _this_line("# LOCK LINE")
        assert frame.file == __file__
    else:
        # Without block stacks each wait records its site: the program's
        # line that awaits the library function naming the reason.
        assert _names(stack)[-3:] == ["contender", "Lock.acquire", "[lock]"]
        (frame,) = [f for f in stack.frames if f.func == "contender"]
        assert frame.line == _this_line("# LOCK LINE")


def test_queue_executor_and_sleep_reasons(traced: tuple[Path, bool]) -> None:
    """Queue waits are under consumer, to_thread under offloader (at least
    the offloaded time), sleeps under their sleepers."""
    path, _ = traced
    p = analysis.profile(path, "block")
    by_leaf: dict[str, set[str]] = {}
    for s in p.stacks:
        funcs = _names(s)
        by_leaf.setdefault(funcs[-1], set()).update(funcs)
    assert "consumer" in by_leaf["[queue]"]
    assert "offloader" in by_leaf["[executor]"]
    assert {"producer", "holder", "contender"} <= by_leaf["[sleep]"]
    offload = sum(s.value_ns for s in _stacks_with(p, "offloader", "[executor]"))
    assert offload >= OFFLOAD * 1e9


def test_sched_latency_when_the_loop_is_busy(traced: tuple[Path, bool]) -> None:
    """Coroutines woken just before a CPU-bound step wait for it to end: each
    sleeper_woken has at least SPIN of scheduler latency after its event."""
    path, _ = traced
    p = analysis.profile(path, "sched")
    woken = [
        s for s in _stacks_with(p, "sleeper_woken") if s.frames[-1].func == "[event]"
    ]
    assert sum(s.count for s in woken) == WAITERS
    assert sum(s.value_ns for s in woken) >= WAITERS * SPIN * 1e9
    # Nothing else in this program waits that long to run.
    rest = p.total_ns - sum(s.value_ns for s in woken)
    assert rest < sum(s.value_ns for s in woken)
    assert any(s.frames[-1].func == "[created]" for s in p.stacks)


def test_exec_time_by_function(traced: tuple[Path, bool]) -> None:
    """The spinner's CPU-bound step and the staller's blocking call are
    execution time under their functions, without a reason leaf."""
    path, _ = traced
    p = analysis.profile(path, "exec")
    spin = sum(s.value_ns for s in _stacks_with(p, "spinner"))
    stall = sum(s.value_ns for s in _stacks_with(p, "staller"))
    assert spin >= SPIN * 1e9
    assert stall >= STALL * 1e9
    assert not any(f.func.startswith("[") for s in p.stacks for f in s.frames)


def test_stall_profile_names_the_blocking_call(traced: tuple[Path, bool]) -> None:
    """Stall time is split over the sampled stacks: the heaviest names
    `blocking` called from `staller`, outermost first."""
    path, _ = traced
    p = analysis.profile(path, "stall")
    top = p.stacks[0]
    funcs = _names(top)
    assert "blocking" in funcs and "staller" in funcs
    assert funcs.index("staller") < funcs.index("blocking")
    assert p.total_ns >= STALL * 1e9
    assert p.stacks_recorded == sum(s.count for s in p.stacks) > 0


def test_folded_parses_and_sums(traced: tuple[Path, bool]) -> None:
    """Folded output is `frame;frame value` lines, summing to the total;
    --functions merges stacks differing only by line."""
    path, _ = traced
    for kind in analysis.Profile.KINDS:
        p = analysis.profile(path, kind)
        for lines in (True, False):
            text = p.folded(lines=lines)
            total = 0
            keys = set()
            for line in text.splitlines():
                stack, value = line.rsplit(" ", 1)
                assert int(value) > 0
                assert all(stack.split(";"))
                assert stack not in keys
                keys.add(stack)
                total += int(value)
            assert total == p.total_ns
        assert len(p.folded(lines=False).splitlines()) <= len(p.folded().splitlines())


def test_text_format(traced: tuple[Path, bool]) -> None:
    """The text output has the total, the top frames and the heaviest stacks."""
    path, _ = traced
    p = analysis.profile(path, "block")
    text = analysis.format_profile(p, top=100, stacks=2)
    assert text.startswith("Block profile: ")
    assert analysis.format_duration(p.total_ns) in text.splitlines()[0]
    assert f"Top frames ({len(p.top())} of {len(p.top())}," in text
    assert "Heaviest stacks (2 of" in text
    assert "[lock]" in text
    # The hint to record block stacks comes only with synthesised stacks.
    assert ("block_stacks=True" in text) is (p.stacks_synthesised > 0)


def test_events_iterable_and_progress(traced: tuple[Path, bool]) -> None:
    """An iterable of events gives the same profile; progress is called."""
    path, _ = traced
    calls: list[tuple[int, int | None]] = []
    a = analysis.profile(path, "block", progress=lambda d, t: calls.append((d, t)))
    b = analysis.profile(reader.read_events(path), "block")
    assert a.stacks == b.stacks
    assert calls and calls[-1] == (path.stat().st_size, path.stat().st_size)


def test_bad_kind_and_bad_input(tmp_path: Path) -> None:
    """An unknown kind is a ValueError naming the kinds; bytes a TypeError;
    a foreign file a TraceError."""
    with pytest.raises(ValueError, match=r"unknown profile kind 'cpu'.*block"):
        analysis.profile(tmp_path / "nope", "cpu")
    with pytest.raises(TypeError, match="not the bytes"):
        analysis.profile(b"AIOTRACE", "block")  # type: ignore[arg-type]
    bad = tmp_path / "bad.trace"
    bad.write_bytes(b"NOTATRACE!" * 3)
    with pytest.raises(reader.TraceError):
        analysis.profile(bad, "block")


@pytest.fixture(scope="module")
def default_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trace(tmp_path_factory.mktemp("cli") / "p.trace", block_stacks=False)


def test_cli_text_and_folded(default_trace: Path, tmp_path: Path) -> None:
    """`aiotrace profile` prints the table; --folded -o writes folded stacks
    equal to the library's; stdin works."""
    r = aiotrace_cli("profile", str(default_trace))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("Block profile: ")
    assert "contender" in r.stdout and "[lock]" in r.stdout
    out = tmp_path / "sched.folded"
    r = aiotrace_cli(
        "profile", str(default_trace), "--kind", "sched", "--folded", "-o", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert out.read_text() == analysis.profile(default_trace, "sched").folded()
    r = aiotrace_cli(
        "profile", "-", "--kind", "stall", "--folded", "--functions",
        stdin=default_trace.read_bytes(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    p = analysis.profile(default_trace, "stall")
    assert r.stdout == p.folded(lines=False)
    assert "blocking" in r.stdout
    r = aiotrace_cli("profile", str(default_trace), "--kind", "exec", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    exe = analysis.profile(default_trace, "exec")
    assert doc["total_ns"] == exe.total_ns == sum(s["value_ns"] for s in doc["stacks"])
    assert len(doc["stacks"]) == len(exe.stacks)


def test_cli_errors(default_trace: Path, tmp_path: Path) -> None:
    """A bad kind is a usage error (2); a malformed trace, a missing file
    and an unwritable output are errors (1) saying where."""
    from aiotrace._cli import profile as command

    assert command._KINDS == analysis.Profile.KINDS
    r = aiotrace_cli("profile", str(default_trace), "--kind", "cpu")
    assert r.returncode == 2
    assert "invalid choice: 'cpu'" in r.stderr
    r = aiotrace_cli("profile", str(default_trace), "--json", "--folded")
    assert r.returncode == 2
    assert "--folded and --json" in r.stderr
    bad = tmp_path / "bad.trace"
    bad.write_bytes(b"NOTATRACE!" * 3)
    r = aiotrace_cli("profile", str(bad))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"aiotrace: {bad}: at byte 0")
    r = aiotrace_cli("profile", str(tmp_path / "missing.trace"))
    assert r.returncode == 1
    assert "No such file" in r.stderr
    r = aiotrace_cli("profile", str(default_trace), "-o", str(tmp_path / "no" / "x"))
    assert r.returncode == 1
    assert "No such file" in r.stderr


def test_cli_truncated(default_trace: Path, tmp_path: Path) -> None:
    """A trace without its end: the profile of what was read, then the
    reader's error on stderr, exit 1."""
    data = default_trace.read_bytes()
    at, last = 10, 10
    while at < len(data):
        last = at
        at += 9 + struct.unpack_from("<I", data, at + 1)[0]
    cut = tmp_path / "cut.trace"
    cut.write_bytes(data[:last])
    r = aiotrace_cli("profile", str(cut))
    assert r.returncode == 1
    assert "truncated" in r.stdout
    assert r.stderr.startswith(f"aiotrace: {cut}: ")
    p = analysis.profile(cut, "block")
    assert p.truncated is not None and p.total_ns > 0
