"""``aiotrace stats`` and ``aiotrace stalls``, run as users run them."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import analysis_scenario as sc
import pytest
from helpers import MIN_BUFFER, StuckFile, aiotrace_cli, wait_until

import aiotrace
from aiotrace import analysis
from aiotrace.analysis import format_duration


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "scenario.trace"
    sc.trace(str(path))
    return path


def frames(data: bytes) -> list[tuple[int, int, int]]:
    """Returns (kind, start, end) of each frame after the 10-byte header."""
    out, at = [], 10
    while at < len(data):
        kind, length = data[at], struct.unpack_from("<I", data, at + 1)[0]
        out.append((kind, at, at + 9 + length))
        at += 9 + length
    return out


def test_stats_text(trace: Path) -> None:
    """`aiotrace stats FILE` prints every section, exits 0, and writes nothing
    on stderr (no progress when stderr is not a terminal)."""
    r = aiotrace_cli("stats", str(trace))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    for word in ("Loops", "User tasks", "job", "orphan", "Regions", "handle"):
        assert word in r.stdout
    assert "sleeper" in r.stdout and "Stalls: 1," in r.stdout
    assert "blocking (" in r.stdout


def test_stats_json_agrees_with_text(trace: Path) -> None:
    """`--json` parses, agrees with the library and with the text: the same
    task counts and quantiles, the same groups in the same order."""
    r = aiotrace_cli("stats", "--json", str(trace))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    findings = {"findings": doc.pop("findings"), "sections": doc.pop("sections")}
    assert doc == json.loads(json.dumps(analysis.analyze(trace).to_dict()))
    assert findings == json.loads(json.dumps(analysis.diagnose(trace).to_dict()))
    job = doc["tasks"]["job"]
    assert job["count"] == sc.JOBS
    text = aiotrace_cli("stats", "--top", "50", str(trace)).stdout
    row = next(line for line in text.splitlines() if line.strip().startswith("job "))
    assert row.split()[1:3] == [str(job["count"]), str(job["unfinished"])]
    assert format_duration(job["p50_ns"]) in row
    assert format_duration(job["p99_ns"]) in row
    names = [g["name"] for g in doc["coroutines"]]
    shown = [n for n in names if f"\n  {n} " in text]
    assert shown == names
    sleeper = next(g for g in doc["coroutines"] if g["name"] == "sleeper")
    assert sleeper["block_ns"]["sleep"] >= sc.SLEEPS * sc.SLEEP * 1e9


def test_stats_top_limits_groups(trace: Path) -> None:
    """`--top 2` lists only the two groups with the most execution time."""
    r = aiotrace_cli("stats", "--top", "2", str(trace))
    assert r.returncode == 0
    assert "(2 of " in r.stdout
    assert "\n  sleeper " not in r.stdout


def test_stalls_text_and_json(trace: Path) -> None:
    """`aiotrace stalls FILE` shows the stall's duration, loop, holder and
    its folded stack with blocking() innermost; `--json` says the same."""
    r = aiotrace_cli("stalls", "--frames", "2", str(trace))
    assert r.returncode == 0, r.stderr
    assert "held by coroutine" in r.stdout and "staller" in r.stdout
    lines = r.stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if "samples (" in line)
    assert lines[i + 1].strip().startswith("blocking (")
    assert lines[i + 2].strip().startswith("staller (")
    doc = json.loads(aiotrace_cli("stalls", "--json", str(trace)).stdout)
    (stall,) = doc["stalls"]
    assert stall["coroutine_name"] == "staller"
    assert stall["duration_ns"] >= sc.STALL * 1e9
    assert format_duration(stall["duration_ns"]) in r.stdout
    assert stall["stacks"][0]["frames"][0][0] == "blocking"
    assert sum(s["count"] for s in stall["stacks"]) == stall["samples"]


def test_stalls_min_filters(trace: Path) -> None:
    """`--min MS` leaves out shorter stalls."""
    r = aiotrace_cli("stalls", "--json", "--min", str(sc.STALL * 1000 * 10), str(trace))
    assert r.returncode == 0
    assert json.loads(r.stdout)["stalls"] == []


def test_stdin(trace: Path) -> None:
    """`-` reads the trace from stdin."""
    r = aiotrace_cli("stats", "--json", "-", stdin=trace.read_bytes())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tasks"]["job"]["count"] == sc.JOBS


@pytest.mark.parametrize("command", ["stats", "stalls"])
def test_corrupt_trace_is_an_error(command: str, trace: Path, tmp_path: Path) -> None:
    """A flipped byte inside a frame: a clear error naming the file and the
    byte, exit 1, and no summary on stdout."""
    data = bytearray(trace.read_bytes())
    _, start, end = frames(bytes(data))[2]
    data[(start + end) // 2] ^= 0xFF
    bad = tmp_path / "bad.trace"
    bad.write_bytes(bytes(data))
    r = aiotrace_cli(command, str(bad))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"aiotrace: {bad}: at byte {start}")
    assert "CRC" in r.stderr


@pytest.mark.parametrize("command", ["stats", "stalls"])
def test_truncated_trace_prints_what_was_read(
    command: str, trace: Path, tmp_path: Path
) -> None:
    """A trace without its end: the summary of what was read, marked as
    truncated, then the error on stderr, exit 1."""
    data = trace.read_bytes()
    kind, start, _ = frames(data)[-1]
    assert kind == 6  # TRACE_END
    cut = tmp_path / "cut.trace"
    cut.write_bytes(data[:start])
    r = aiotrace_cli(command, str(cut))
    assert r.returncode == 1
    assert "truncated" in r.stdout
    assert "Stalls: 1," in r.stdout
    assert r.stderr.startswith(f"aiotrace: {cut}: ")
    assert "truncated" in r.stderr
    s = analysis.analyze(cut)
    assert s.truncated is not None and "truncated" in s.truncated
    assert s.tasks["job"].count == sc.JOBS


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "the trace is empty"), (b"NOTATRACE!" * 3, "")],
)
def test_not_a_trace(content: bytes, message: str, tmp_path: Path) -> None:
    """An empty or foreign file is an error, exit 1; the library raises
    TraceError for it."""
    path = tmp_path / "x.trace"
    path.write_bytes(content)
    r = aiotrace_cli("stats", str(path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"aiotrace: {path}: ")
    assert message in r.stderr
    with pytest.raises(aiotrace.reader.TraceError):
        analysis.analyze(path)


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    """A missing file and a bad option value are errors with exit 1 / 2."""
    r = aiotrace_cli("stats", str(tmp_path / "nope.trace"))
    assert r.returncode == 1
    assert "No such file" in r.stderr
    r = aiotrace_cli("stats", "--top", "0", str(tmp_path / "nope.trace"))
    assert r.returncode == 2
    assert "at least 1" in r.stderr


def test_lost_events_are_reported(tmp_path: Path) -> None:
    """Events the writer dropped (its sink stuck, its buffer full) are
    counted by analyze() and reported by the text and the JSON."""
    sink = StuckFile()
    tracer = aiotrace.start(sink, max_buffer_bytes=MIN_BUFFER, runtime_events=False)
    try:
        assert sink.writing.wait(20)
        aiotrace.log("big", "z" * MIN_BUFFER)  # fills the whole buffer
        wait_until(lambda: tracer.events == 1, "the big event to be encoded")
        for i in range(10):
            aiotrace.log("small", str(i))
        wait_until(lambda: tracer.lost_events == 10, "the small events to drop")
    finally:
        sink.released.set()
    aiotrace.stop()
    path = tmp_path / "lossy.trace"
    path.write_bytes(bytes(sink.data))
    assert analysis.analyze(path).lost_events == 10
    r = aiotrace_cli("stats", str(path))
    assert r.returncode == 0
    assert "10 lost" in r.stdout and "dropped 10 events" in r.stdout
    assert (
        json.loads(aiotrace_cli("stats", "--json", str(path)).stdout)["lost_events"]
        == 10
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_lost_metric_is_not_a_count(tmp_path: Path, value: float) -> None:
    """A trace whose /aiotrace/lost:events metric is NaN or infinite is valid
    (a metric is any float); stats, stalls, profile, export and report read
    it through the CLI, exit 0, and count no lost events from it."""
    from aiotrace._format.spec import C
    from aiotrace._recorder import clock
    from aiotrace.reader import LOST_METRIC, Reader, validate

    path = tmp_path / "nan.trace"

    async def main() -> None:
        await asyncio.sleep(0)

    with aiotrace.tracing(str(path), metrics_interval=None):
        rec = aiotrace._recorder.active
        assert rec is not None
        rec.events().append((C["Metric"], clock(), LOST_METRIC, value))
        asyncio.run(main())
    with path.open("rb") as f:
        assert validate(Reader(f)) == []
    assert analysis.analyze(path).lost_events == 0
    for args in (
        ["stats"],
        ["stalls"],
        ["profile"],
        ["export", "-o", str(tmp_path / "nan.json")],
        ["report", "-o", str(tmp_path / "nan.html")],
    ):
        r = aiotrace_cli(*args, str(path))
        assert r.returncode == 0, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert "0 lost" in aiotrace_cli("stats", str(path)).stdout
