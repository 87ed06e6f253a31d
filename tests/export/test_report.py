"""The HTML report: self-contained, complete, bounded for huge traces."""

from __future__ import annotations

import bisect
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from export_programs import counts, payload_byte_near
from longtrace import JITTER_BUDGET, decode_index, decode_level, write_server_trace

from aiotrace import analysis, reader
from aiotrace._cli import main as cli
from aiotrace.export import build_report_data, render_report, write_report
from aiotrace.reader import NO_LOOP, CoroState, EventKind, ResourceKind

# Anything that would make a browser fetch: src/href/action/poster with a
# scheme or a protocol-relative URL, CSS url(...) or @import, srcset.
RESOURCE = re.compile(
    r"""(?:\b(?:src|href|action|poster|srcset|data)\s*=\s*["']?\s*(?:[a-z]+:|//))"""
    r"""|(?:url\s*\()|(?:@import)|(?:https?:)""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def long_trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A 30-second server trace: 30,000 requests, a lock wait and a stall late."""
    path = tmp_path_factory.mktemp("long") / "long.trace"
    found = write_server_trace(path)
    assert reader.validate(reader.read_events(path)) == []
    return path, found


@pytest.fixture(scope="module")
def long_report(long_trace: tuple[Path, dict[str, int]]) -> dict[str, Any]:
    """The long trace's report data, at the default budget."""
    return build_report_data(long_trace[0])


def embedded_data(page: str) -> dict[str, Any]:
    m = re.search(
        r'<script type="application/json" id="aiotrace-data">(.*?)</script>',
        page,
        re.DOTALL,
    )
    assert m is not None
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def test_report_is_self_contained(rich_trace: Path, tmp_path: Path) -> None:
    """The page references no URL at all (no scripts, styles, fonts or
    images from anywhere), and its content security policy forbids the
    browser from loading any."""
    out = tmp_path / "r.html"
    write_report(rich_trace, out, title="rich.trace")
    page = out.read_text("utf-8")
    assert RESOURCE.findall(page) == []
    assert "default-src 'none'" in page
    assert "<title>aiotrace report: rich.trace</title>" in page


def _level0(row: dict[str, Any], levels: list[int]) -> list[tuple[int, ...]]:
    lv = next(i for i, d in enumerate(row["levels"]) if d is not None)
    assert lv == 0, row["label"]
    return decode_level(row["levels"][0], levels[0])


def test_report_data_matches_the_trace(rich_trace: Path) -> None:
    """The report holds what the analysis finds, and a timeline row per
    loop part, per busy thread and per task lane, every span at 1 µs, and
    rows for the coroutines worth seeing: the one that stalled first."""
    data = build_report_data(rich_trace)
    want = counts(rich_trace)
    events = reader.read_events(rich_trace)
    s = analysis.analyze(rich_trace)
    assert data["events"] == s.events == len(events)
    assert [t["name"] for t in data["tasks"]] == sorted(s.tasks) == ["job", "stall"]
    assert sum(t["count"] for t in data["tasks"]) == want["tasks"]
    job = next(t for t in data["tasks"] if t["name"] == "job")
    assert sum(b[2] for b in job["histogram"]) == job["count"] == 8
    assert [r["name"] for r in data["regions"]] == ["grind", "locked"]
    assert [g["name"] for g in data["coroutines"]] == [g.name for g in s.coroutines]
    # The program stalls once on purpose; a loaded machine may add more.
    assert len(data["stalls"]) == want["range loop stall"] >= 1
    stall = next(st for st in data["stalls"] if st["coroutine_name"] == "_main")
    assert stall["samples"] == sum(st["count"] for st in stall["stacks"]) > 0
    assert stall["stacks"][0]["frames"][0][0] == "_main"

    tl = data["timeline"]
    levels = tl["levels_ns"]
    assert levels[0] == 1000 and all(b == a * 8 for a, b in itertools.pairwise(levels))
    assert tl["resolution_ns"] == tl["loops_resolution_ns"] == 1000
    assert tl["bytes"] <= tl["max_bytes"] == 10_000_000
    groups = {r["group"] for r in tl["rows"]}
    assert sum(g.startswith("loop ") for g in groups) == 2
    assert {"tasks", "coroutines", "threads"} <= groups
    coro_rows = [r for r in tl["rows"] if r["group"] == "coroutines"]
    assert tl["coroutines"] == want["coroutines"]
    assert tl["coroutines_left_out"] == want["coroutines"] - len(coro_rows)
    # The coroutines that stalled come first (the planted stall is _main's;
    # a loaded machine's own stall in another coroutine may outrank it).
    stalled = {st["coroutine"] for st in data["stalls"]}
    assert coro_rows[0]["info"].startswith("held the loop in a stall for")
    assert int(coro_rows[0]["label"].split()[0].removeprefix("C")) in stalled
    main_row = next(r for r in coro_rows if r["label"].endswith(" _main"))
    assert "held the loop in a stall for" in main_row["info"]
    if len(stalled) == 1:
        assert coro_rows[0] is main_row
    assert all(r["info"] for r in coro_rows)

    # Level 0 holds every span, to the µs: one per coroutine step on the
    # steps rows, one per stall on the stall rows.
    steps = sum(
        1
        for ev in events
        if ev.kind is EventKind.STATE_TRANSITION
        and ev.state_transition.resource.kind is ResourceKind.COROUTINE
        and ev.state_transition.new is CoroState.RUNNING
        and ev.loop != NO_LOOP
    )
    step_rows = [r for r in tl["rows"] if r["label"] == "steps"]
    assert sum(len(_level0(r, levels)) for r in step_rows) == steps
    stall_kind = tl["kinds"].index("stall")
    stall_rows = [r for r in tl["rows"] if r["label"] == "stalls & GC"]
    assert (
        sum(sp[2] == stall_kind for r in stall_rows for sp in _level0(r, levels))
        == want["range loop stall"]
    )
    for r in tl["rows"]:
        for s0, e0, *_ in _level0(r, levels):
            assert 0 <= s0 <= e0 <= tl["duration_ns"]
    # The search index holds every coroutine and user task.
    index = decode_index(tl["index"], tl["index_resolution_ns"])
    assert len(index) == tl["index_entries"] == want["coroutines"] + want["tasks"]
    assert sum(x["task"] for x in index) == want["tasks"]
    assert tl["index_left_out"] == 0


def test_levels_of_detail(long_report: dict[str, Any]) -> None:
    """Every level of a row stands for every span of level 0: blocks count
    the spans they merge, cover them, and are as dense as those spans; a
    level keeps spans longer than its resolution as they are, and has no
    more spans than the level below."""
    tl = long_report["timeline"]
    levels = tl["levels_ns"]
    assert tl["duration_ns"] > 29e9
    assert len(levels) == 9  # up to 16.8 s: a tenth of 30 s is within it
    for row in tl["rows"]:
        base = _level0(row, levels)
        prev = len(base)
        for lv, res in enumerate(levels[1:], 1):
            spans = decode_level(row["levels"][lv], res)
            assert sum(sp[4] for sp in spans) == len(base), (row["label"], lv)
            assert len(spans) <= prev
            prev = len(spans)
            # Each span of level 0 lies in a span of this level (to its grain).
            cover = sorted((sp[0], sp[1]) for sp in spans)
            starts = [a for a, _ in cover]
            reach = list(itertools.accumulate((b for _, b in cover), max))
            for s0, e0, *_ in base:
                j = bisect.bisect_right(starts, s0 // res * res) - 1
                assert j >= 0 and reach[j] >= e0 // res * res, (row["label"], lv, s0)
            assert all(sp[5] == 15 for sp in spans if sp[4] == 1)
    # The busy loop's row: 30 µs and 20 µs steps, 270 µs apart, stay apart
    # at 64 µs; a 300 µs request and its 700 µs gap merge at 4 ms.
    busy = next(r for r in tl["rows"] if r["label"] == "busy")
    at64 = decode_level(busy["levels"][2], levels[2])
    assert sum(sp[4] == 1 for sp in at64) >= 0.99 * len(at64)
    at4ms = decode_level(busy["levels"][4], levels[4])
    assert len(at4ms) < 30 and all(sp[5] <= 2 for sp in at4ms if sp[4] > 100)


def test_rows_go_to_coroutines_worth_seeing(
    long_trace: tuple[Path, dict[str, int]], long_report: dict[str, Any]
) -> None:
    """Of 30,000 coroutines, the one that stalled the loop and the one that
    waited 300 ms on a lock get the first rows, saying why; the rest (alike,
    all under a millisecond) get at most a few rows; search finds any."""
    _, found = long_trace
    tl = long_report["timeline"]
    rows = [r for r in tl["rows"] if r["group"] == "coroutines"]
    assert [r["label"] for r in rows[:2]] == [
        f"C{found['stall']} blocking_call",
        f"C{found['slow']} slow_query",
    ]
    assert rows[0]["info"].startswith("held the loop in a stall for 200.0 ms")
    assert rows[1]["info"].startswith("waited (not on I/O or sleep) at most 300.0 ms")
    assert 2 < len(rows) <= 2 + 3 * 5
    assert all(r["label"].endswith("handle_request") for r in rows[2:])
    assert tl["coroutines"] == found["coroutines"]
    assert tl["coroutines_left_out"] == found["coroutines"] - len(rows)
    index = decode_index(tl["index"], tl["index_resolution_ns"])
    assert len(index) == found["coroutines"] + found["coroutines"] - 1  # + tasks
    names = tl["names"]
    slow = [x for x in index if names[x["name"]] == "slow_query"]
    assert len(slow) == 1 and slow[0]["id"] == found["slow"]
    assert abs(slow[0]["start"] - found["slow_at"]) < 1000
    assert tl["rows"][slow[0]["row"]]["label"] == f"C{found['slow']} slow_query"
    plain = next(x for x in index if x["id"] == 5000 and not x["task"])
    assert names[plain["name"]] == "handle_request" and plain["row"] == -1
    task = next(x for x in index if x["task"] and names[x["name"]] == "report")
    assert tl["rows"][task["row"]]["label"] == "report"


def test_page_stays_within_its_budget(jitter_trace: Path) -> None:
    """With a budget too small for every span, every row still keeps its
    levels down to 512 µs and the search index every coroutine and task
    (at a coarser time resolution); finer levels go to the smallest rows
    first. With a budget too small even for that, the biggest rows' finest
    levels go first and the shortest-lived coroutines leave the index; the
    page stays within its budget and says what it left out."""
    full = build_report_data(jitter_trace)["timeline"]
    assert full["resolution_ns"] == 1000 and full["index_left_out"] == 0
    assert full["bytes"] > 4 * JITTER_BUDGET

    tl = build_report_data(jitter_trace, max_bytes=JITTER_BUDGET)["timeline"]
    assert tl["bytes"] == tl["timeline_bytes"] + tl["index_bytes"] <= JITTER_BUDGET
    assert len(tl["rows"]) == len(full["rows"])
    finest = [_finest(r) for r in tl["rows"]]
    assert tl["resolution_ns"] == tl["levels_ns"][max(finest)]
    assert 1000 < tl["resolution_ns"] <= tl["required_ns"] == 512_000
    # The small coroutine rows keep 1 µs; the loop's steps row is the biggest.
    labels = [r["label"] for r in tl["rows"]]
    assert all(finest[i] == 0 for i, lb in enumerate(labels) if lb.startswith("C"))
    assert finest[labels.index("steps")] == max(finest)
    for r, lv in zip(tl["rows"], finest, strict=True):
        assert all(d is not None for d in r["levels"][lv:])
    assert tl["index_left_out"] == 0 and tl["index_entries"] == 60_000
    assert tl["index_resolution_ns"] > 1000
    index = decode_index(tl["index"], tl["index_resolution_ns"])
    exact = decode_index(full["index"], 1000)
    res = tl["index_resolution_ns"]
    assert [(x["id"], x["task"]) for x in index] == [
        (x["id"], x["task"]) for x in exact
    ]
    for x, y in zip(index, exact, strict=True):
        assert x["start"] <= y["start"] < x["start"] + res
        assert x["end"] - res < y["end"] <= x["end"]

    small = build_report_data(jitter_trace, max_bytes=JITTER_BUDGET // 8)
    tl = small["timeline"]
    assert tl["bytes"] <= JITTER_BUDGET // 8
    assert tl["resolution_ns"] > tl["required_ns"]
    for r in tl["rows"]:
        assert r["levels"][-1] is not None
    assert 0 < tl["index_left_out"] < 60_000
    index = decode_index(tl["index"], tl["index_resolution_ns"])
    assert len(index) == tl["index_entries"] == 60_000 - tl["index_left_out"]
    assert all(x["end"] - x["start"] >= tl["index_min_life_ns"] for x in index)
    page = render_report(small)
    assert "some rows are coarser than" in page
    assert "longest-lived of" in page


def _finest(row: dict[str, Any]) -> int:
    return next(i for i, d in enumerate(row["levels"]) if d is not None)


def test_page_embeds_data_safely(tmp_path: Path) -> None:
    """Names that look like markup ("</script>") cannot end the data's
    script element: the embedded JSON reads back exactly."""
    import asyncio

    import aiotrace

    path = tmp_path / "evil.trace"

    async def main() -> None:
        async with aiotrace.new_task("</script><b>x</b>"):
            await asyncio.sleep(0)

    with aiotrace.tracing(path):
        asyncio.run(main())
    page = render_report(build_report_data(path, title="<i>t</i>"))
    assert "</script><b>" not in page
    assert [t["name"] for t in embedded_data(page)["tasks"]] == ["</script><b>x</b>"]
    assert "<title>aiotrace report: &lt;i&gt;t&lt;/i&gt;</title>" in page


def test_cli_report(
    rich_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aiotrace report FILE` writes FILE.html by default (or -o OUT)."""
    trace = tmp_path / "app.trace"
    trace.write_bytes(rich_trace.read_bytes())
    assert cli(["report", str(trace)]) == 0
    assert "app.html" in capsys.readouterr().out
    data = embedded_data((tmp_path / "app.html").read_text("utf-8"))
    assert data["title"] == "app.trace"
    out = tmp_path / "elsewhere.html"
    assert cli(["report", str(trace), "-o", str(out), "--max-coroutines", "2"]) == 0
    assert "timeline detail 1 µs or finer" in capsys.readouterr().out
    tl = embedded_data(out.read_text("utf-8"))["timeline"]
    assert sum(r["group"] == "coroutines" for r in tl["rows"]) == 2
    assert tl["coroutines_left_out"] == tl["coroutines"] - 2
    with pytest.raises(SystemExit) as exc:
        cli(["report", str(trace), "-o", str(out), "--max-mb", "0.001"])
    assert exc.value.code == 2
    assert "--max-mb must be at least 0.1" in capsys.readouterr().err


def test_cli_report_errors(
    rich_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file, a file that is not a trace and a corrupt trace are
    one-line errors with exit status 1, and no report is written."""
    out = tmp_path / "r.html"
    missing = tmp_path / "nope.trace"
    assert cli(["report", str(missing), "-o", str(out)]) == 1
    assert "No such file" in capsys.readouterr().err
    bad = tmp_path / "bad.trace"
    bad.write_text("not a trace")
    assert cli(["report", str(bad), "-o", str(out)]) == 1
    assert f"{bad}: at byte 0" in capsys.readouterr().err
    data = bytearray(rich_trace.read_bytes())
    data[payload_byte_near(data, len(data) // 2)] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert cli(["report", str(bad), "-o", str(out)]) == 1
    assert "CRC" in capsys.readouterr().err
    assert not out.exists()


def test_cli_report_truncated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated trace is reported (the page says so) with a warning."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "reader"))
    try:
        import tracegen
    finally:
        sys.path.pop(0)
    cut = tmp_path / "cut.trace"
    cut.write_bytes(
        tracegen.encode_trace(
            [tracegen.sample_generation(g) for g in range(2)], end=False
        )
    )
    out = tmp_path / "cut.html"
    assert cli(["report", str(cut), "-o", str(out)]) == 0
    assert "truncated" in capsys.readouterr().err
    data = embedded_data(out.read_text("utf-8"))
    assert "truncated" in data["truncated"]
    assert data["events"] > 0
