"""The HTML report: self-contained, complete, bounded for huge traces."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from export_programs import counts

from aiotrace import analysis, reader
from aiotrace._cli import main as cli
from aiotrace.export import build_report_data, render_report, write_report

# Anything that would make a browser fetch: src/href/action/poster with a
# scheme or a protocol-relative URL, CSS url(...) or @import, srcset.
RESOURCE = re.compile(
    r"""(?:\b(?:src|href|action|poster|srcset|data)\s*=\s*["']?\s*(?:[a-z]+:|//))"""
    r"""|(?:url\s*\()|(?:@import)|(?:https?:)""",
    re.IGNORECASE,
)


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


def test_report_data_matches_the_trace(rich_trace: Path) -> None:
    """The report holds what the analysis finds, and a timeline row per
    loop part, per busy thread, per task lane and per coroutine."""
    data = build_report_data(rich_trace)
    want = counts(rich_trace)
    s = analysis.analyze(rich_trace)
    assert data["events"] == s.events == len(reader.read_events(rich_trace))
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
    assert tl["resolution_ns"] == 0 and tl["coroutines_left_out"] == 0
    groups = {r["group"] for r in tl["rows"]}
    assert sum(g.startswith("loop ") for g in groups) == 2
    assert {"tasks", "coroutines", "threads"} <= groups
    coro_rows = [r for r in tl["rows"] if r["group"] == "coroutines"]
    assert len(coro_rows) == want["coroutines"]
    spans = sum(len(r["spans"]) // 5 for r in tl["rows"])
    assert spans > want["coroutine transitions"]
    stall_rows = [
        r
        for r in tl["rows"]
        if r["label"] == "stalls & GC" and r["group"].startswith("loop")
    ]
    stall_kind = tl["kinds"].index("stall")
    assert (
        sum(r["spans"][2::5].count(stall_kind) for r in stall_rows)
        == want["range loop stall"]
    )
    for r in tl["rows"]:
        for i in range(0, len(r["spans"]), 5):
            s0, e0 = r["spans"][i : i + 2]
            assert 0 <= s0 <= e0 <= tl["duration_ns"]


def test_huge_traces_are_merged_and_say_so(rich_trace: Path) -> None:
    """With more spans than the page may hold, spans of one kind are merged
    at a coarser resolution until they fit, coroutines beyond the cap get no
    row, and the page says both."""
    full = build_report_data(rich_trace)
    small = build_report_data(rich_trace, max_spans=40, max_coroutines=3)
    tl = small["timeline"]
    spans = sum(len(r["spans"]) // 5 for r in tl["rows"])
    assert spans <= 40
    assert tl["resolution_ns"] > 0
    merged = sum(sum(r["spans"][4::5]) for r in tl["rows"])
    full_spans = sum(len(r["spans"]) // 5 for r in full["timeline"]["rows"])
    # Every span is still counted: merged spans carry how many they stand for.
    assert merged == full_spans - sum(
        len(r["spans"]) // 5
        for r in full["timeline"]["rows"]
        if r["group"] == "coroutines" and r not in _first_coroutine_rows(full, 3)
    )
    assert tl["coroutines_left_out"] == counts(rich_trace)["coroutines"] - 3
    page = render_report(small)
    assert "too large to draw every span" in page
    assert embedded_data(page)["timeline"]["coroutines_left_out"] > 0


def _first_coroutine_rows(data: dict[str, Any], n: int) -> list[dict[str, Any]]:
    return [r for r in data["timeline"]["rows"] if r["group"] == "coroutines"][:n]


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
    assert embedded_data(out.read_text("utf-8"))["timeline"]["coroutines_left_out"] > 0


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
    data[len(data) // 2] ^= 0xFF
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
