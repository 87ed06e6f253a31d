"""The HTML report in a real headless Chromium: it draws, without errors,
without a single network request, and shows what the trace holds.

Chromium comes from the system (Debian's ``chromium`` package, installed
by ``.ci/run``); Python's playwright drives it, and downloads nothing. The
test skips when Chromium or playwright is missing, unless
AIOTRACE_REQUIRE_BROWSER=1 (as in CI), where it fails instead.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from longtrace import JITTER_BUDGET, decode_level, write_server_trace

from aiotrace import reader
from aiotrace.export import build_report_data, render_report

CHROMIUM = (
    os.environ.get("AIOTRACE_CHROMIUM")
    or shutil.which("chromium")
    or ("/usr/bin/chromium")
)
REQUIRED = os.environ.get("AIOTRACE_REQUIRE_BROWSER") == "1"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"{why} (AIOTRACE_REQUIRE_BROWSER=1)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, the system's, driven by playwright."""
    if not os.path.exists(CHROMIUM):
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_report(browser: Any, page_path: Path) -> tuple[Any, list[str], list[str]]:
    """Loads a report; returns the page, its errors and every URL it requested."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    return page, errors, requests


# Reads the timeline's pixels through a copy, so that reading them often
# does not make Chromium warn about the page's own canvas.
PIXELS = """
  const pixels = (c) => {
    const o = document.createElement("canvas");
    o.width = c.width; o.height = c.height;
    const x = o.getContext("2d", {willReadFrequently: true});
    x.drawImage(c, 0, 0);
    return x;
  };
"""

INK = (
    """() => {"""
    + PIXELS
    + """
  // Counts inked pixels right of the row labels and below the time axis
  // (where only spans are drawn), and pixels of each span kind's colour.
  const c = document.getElementById("timeline");
  const dpr = window.devicePixelRatio || 1;
  const x0 = Math.ceil(232 * dpr), y0 = Math.ceil(26 * dpr);
  const d = pixels(c).getImageData(x0, y0, c.width - x0, c.height - y0).data;
  const want = {stall: [217, 45, 32], running: [46, 158, 68], task: [18, 165, 148],
                busy: [122, 162, 227], range: [176, 137, 104]};
  const kinds = {};
  for (const k in want) kinds[k] = 0;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235) ink++;
    for (const k in want) {
      const w = want[k];
      if (d[i] === w[0] && d[i + 1] === w[1] && d[i + 2] === w[2]) kinds[k]++;
    }
  }
  return {ink: ink, pixels: d.length / 4, kinds: kinds, w: c.width, h: c.height};
}"""
)


def test_report_renders_in_chromium(
    browser: Any, rich_trace: Path, tmp_path: Path
) -> None:
    """The report of a real trace loads with no console or page error and no
    request but the file itself; the timeline canvas is drawn (not blank,
    in several colours), there is one histogram per task type, one table
    row per coroutine function and per loop, one entry per stall, the
    findings first; zooming narrows the shown time range."""
    data = build_report_data(rich_trace, title="rich.trace")
    path = tmp_path / "report.html"
    path.write_text(render_report(data), encoding="utf-8")
    page, errors, requests = open_report(browser, path)
    try:
        assert errors == []
        assert requests == [path.as_uri()]

        # The page decodes the timeline's compact form back to the spans,
        # at every level.
        tl = data["timeline"]
        for i, row in enumerate(tl["rows"]):
            for lv, res in enumerate(tl["levels_ns"]):
                got = page.evaluate(
                    "([i, lv]) => window.aiotraceReport.spans(i, lv)", [i, lv]
                )
                assert got["level"] == lv
                want = sorted(sp[:5] for sp in decode_level(row["levels"][lv], res))
                assert sorted(tuple(sp) for sp in got["spans"]) == want

        ink = page.evaluate(INK)
        assert ink["w"] > 0 and ink["h"] > 0
        assert ink["ink"] > ink["pixels"] // 50, ink
        # Loops busy, executor work, tasks, running coroutines and the stall
        # are all drawn, each in its colour.
        assert all(n > 0 for n in ink["kinds"].values()), ink

        # The findings open the page: the stall's blocking call first.
        findings = page.locator("#findings li.finding")
        assert data["findings"] and data["findings"][0]["kind"] == "blocking"
        assert findings.count() == min(10, len(data["findings"]))
        assert data["findings"][0]["summary"] in findings.first.inner_text()

        histograms = page.locator("#task-histograms .histogram")
        assert histograms.count() == len(data["tasks"]) == 2
        for i, task in enumerate(data["tasks"]):
            card = histograms.nth(i)
            assert card.get_attribute("data-task") == task["name"]
            assert card.locator("rect.bar").count() == len(task["histogram"]) > 0
        assert page.locator("#region-histograms .histogram").count() == 2

        rows = page.locator("#coroutine-table tbody tr")
        assert rows.count() == len(data["coroutines"]) > 0
        names = rows.locator("td:first-child").all_inner_texts()
        assert sorted(names) == sorted(g["name"] for g in data["coroutines"])
        assert page.locator("#loop-table tbody tr").count() == len(data["loops"]) == 2

        stalls = page.locator("#stalls details.stall")
        assert stalls.count() == len(data["stalls"]) >= 1
        assert "_main" in page.locator("#stalls").inner_text()

        # Sorting the table by name puts the rows in order.
        page.locator("#coroutine-table th").first.click()
        shown = rows.locator("td:first-child").all_inner_texts()
        assert shown in (sorted(shown), sorted(shown, reverse=True))

        before = page.locator("#view-range").inner_text()
        page.locator("#zoom-in").click()
        page.locator("#zoom-in").click()
        after = page.locator("#view-range").inner_text()
        assert after != before
        page.locator("#zoom-reset").click()
        assert page.locator("#view-range").inner_text() == before

        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert errors == []
        assert requests == [path.as_uri()]
    finally:
        page.close()


def test_capped_report_says_so_in_chromium(
    browser: Any, rich_trace: Path, tmp_path: Path
) -> None:
    """A report whose timeline had to merge spans and leave coroutines out
    draws without errors and tells the reader, in the page, what it did."""
    data = build_report_data(rich_trace, max_bytes=2000, max_coroutines=2)
    assert data["timeline"]["resolution_ns"] > 1000
    path = tmp_path / "capped.html"
    path.write_text(render_report(data), encoding="utf-8")
    page, errors, requests = open_report(browser, path)
    try:
        notices = page.locator("#notices .notice").all_inner_texts()
        assert any("every row shows its real spans down to" in n for n in notices)
        assert any("search finds the other" in n for n in notices)
        assert page.evaluate(INK)["ink"] > 0
        assert errors == []
        assert requests == [path.as_uri()]
    finally:
        page.close()


@pytest.fixture(scope="module")
def long_page(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], dict[str, int]]:
    """The report of a 30-second server trace (30,000 requests, a lock wait
    and a stall late in it): the page, its data, and what is worth seeing."""
    d = tmp_path_factory.mktemp("long")
    found = write_server_trace(d / "long.trace")
    assert reader.validate(reader.read_events(d / "long.trace")) == []
    data = build_report_data(d / "long.trace", title="long.trace")
    page = d / "long.html"
    page.write_text(render_report(data), encoding="utf-8")
    return page, data, found


ROW_RUNS = (
    """([y, h]) => {"""
    + PIXELS
    + """
  // Runs of inked pixels along the middle of a row, right of the labels.
  const c = document.getElementById("timeline");
  const dpr = window.devicePixelRatio || 1;
  const x0 = Math.ceil(232 * dpr), yy = Math.floor((y + h / 2) * dpr);
  const d = pixels(c).getImageData(x0, yy, c.width - x0, 1).data;
  const runs = [];
  let start = -1;
  for (let x = 0; x <= d.length / 4; x++) {
    const i = 4 * x;
    const ink = x < d.length / 4 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235);
    if (ink && start < 0) start = x;
    if (!ink && start >= 0) { runs.push([start, x]); start = -1; }
  }
  return runs;
}"""
)


def _row(data: dict[str, Any], label: str) -> int:
    return next(
        i for i, r in enumerate(data["timeline"]["rows"]) if r["label"] == label
    )


def _labels_apart(drawn: dict[str, Any]) -> None:
    by_row: dict[int, list[tuple[float, float]]] = {}
    for lb in drawn["labels"]:
        by_row.setdefault(lb["row"], []).append((lb["x0"], lb["x1"]))
    for row, spans in by_row.items():
        spans.sort()
        for (_, a1), (b0, _) in itertools.pairwise(spans):
            assert a1 < b0, (row, spans)


def test_long_trace_zooms_to_real_spans(
    browser: Any, long_page: tuple[Path, dict[str, Any], dict[str, int]]
) -> None:
    """Zoomed out, a 30-second trace shows blocks; zoomed into 1 ms late in
    it, every row draws its spans at 1 µs, each step of the loop as a mark
    of its own, and no label draws over another at any zoom."""
    path, data, found = long_page
    tl = data["timeline"]
    assert tl["resolution_ns"] == 1000
    page, errors, requests = open_report(browser, path)
    try:
        steps = _row(data, "steps")
        whole = page.evaluate("() => window.aiotraceReport.drawn()")
        assert whole["want"] >= 4
        assert whole["rows"][steps]["merged"] > 0
        _labels_apart(whole)

        t0 = found["slow_at"] - 400_000
        window = (t0, t0 + 1_000_000)
        page.evaluate("([a, b]) => window.aiotraceReport.setView(a, b)", window)
        drawn = page.evaluate("() => window.aiotraceReport.drawn()")
        assert drawn["view"] == list(window)
        assert drawn["want"] == 0 and drawn["resolution_ns"] == 1000
        assert all(r["level"] == 0 for r in drawn["rows"])
        assert all(r["merged"] == 0 for r in drawn["rows"])
        want = [
            sp
            for sp in decode_level(tl["rows"][steps]["levels"][0], 1000)
            if sp[1] >= window[0] and sp[0] <= window[1]
        ]
        # A request's second step, slow_query's first, the next request's first.
        assert len(want) == 3
        row = drawn["rows"][steps]
        assert row["spans"] == len(want)
        runs = page.evaluate(ROW_RUNS, [row["y"], row["h"]])
        assert len(runs) == len(want), runs
        _labels_apart(drawn)
        assert any(lb["text"].startswith("slow") for lb in drawn["labels"])

        for a, b in [
            (0, 1e9),
            (28e9, 29e9),
            (found["stall_at"] - 1e6, found["stall_at"] + 3e8),
        ]:
            page.evaluate("([a, b]) => window.aiotraceReport.setView(a, b)", [a, b])
            _labels_apart(page.evaluate("() => window.aiotraceReport.drawn()"))
        assert errors == []
        assert requests == [path.as_uri()]
    finally:
        page.close()


def test_search_jumps_to_a_coroutine(
    browser: Any,
    long_page: tuple[Path, dict[str, Any], dict[str, int]],
    tmp_path: Path,
) -> None:
    """Typing a coroutine's name in the search box and pressing Enter zooms
    to its life and highlights its row; a coroutine without a row of its own
    (found by its id) gets a row at the top showing its life; a user task
    is found in its lane."""
    path, data, found = long_page
    page, errors, requests = open_report(browser, path)
    try:
        page.locator("#search").fill("slow_query")
        hits = page.locator("#search-results li[data-i]")
        assert hits.count() == 1
        assert hits.first.inner_text().startswith(f"C{found['slow']} slow_query")
        page.locator("#search").press("Enter")
        drawn = page.evaluate("() => window.aiotraceReport.drawn()")
        row = _row(data, f"C{found['slow']} slow_query")
        assert drawn["found"] == {"id": found["slow"], "task": False, "row": row}
        a, b = drawn["view"]
        assert a < found["slow_at"] < found["slow_at"] + 300_000_000 < b
        assert b - a < 400_000_000
        assert drawn["rows"][row]["visible"] and drawn["rows"][row]["spans"] >= 3
        yellow = page.evaluate(
            """([y, h]) => {"""
            + PIXELS
            + """
              const c = document.getElementById("timeline");
              const dpr = window.devicePixelRatio || 1;
              const d = pixels(c).getImageData(2, Math.floor((y + 2) * dpr), 1, 1).data;
              return [d[0], d[1], d[2]];
            }""",
            [drawn["rows"][row]["y"], drawn["rows"][row]["h"]],
        )
        assert yellow == [255, 243, 191]
        page.screenshot(path=str(tmp_path / "found.png"))

        page.locator("#search").fill("C5000")
        assert page.locator("#search-results li[data-i]").count() == 1
        page.locator("#search-results li[data-i]").first.click()
        drawn = page.evaluate("() => window.aiotraceReport.drawn()")
        assert drawn["found"]["id"] == 5000 and drawn["found"]["row"] == -1
        assert drawn["found"]["y"] == 24  # right under the time axis
        a, b = drawn["view"]
        assert b - a < 1_000_000  # a request lives 321 µs
        runs = page.evaluate(ROW_RUNS, [drawn["found"]["y"], drawn["found"]["h"]])
        assert runs and runs[0][1] - runs[0][0] > 500  # its life, most of the width

        page.locator("#search").fill("task 3")
        assert page.locator("#search-results li[data-i]").count() == 1
        page.locator("#search").press("Enter")
        drawn = page.evaluate("() => window.aiotraceReport.drawn()")
        assert drawn["found"] == {"id": 3, "task": True, "row": _row(data, "request")}
        assert drawn["rows"][_row(data, "request")]["spans"] >= 1

        page.locator("#search").fill("no such thing")
        assert page.locator("#search-results li[data-i]").count() == 0
        assert (
            "no coroutine or task matches"
            in page.locator("#search-results").inner_text()
        )
        assert errors == []
        assert requests == [path.as_uri()]
    finally:
        page.close()


@pytest.fixture(scope="module")
def jitter_page(
    jitter_trace: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The report of the jittered 30-second trace, on a budget too small
    for its spans at 1 µs: the page and its data."""
    data = build_report_data(jitter_trace, title="jitter", max_bytes=JITTER_BUDGET)
    page = tmp_path_factory.mktemp("jitter-page") / "jitter.html"
    page.write_text(render_report(data), encoding="utf-8")
    return page, data


def _in_window(
    data: dict[str, Any], row: int, lv: int, window: tuple[int, int]
) -> list[tuple[int, int, int, int, int, int]]:
    tl = data["timeline"]
    return [
        sp
        for sp in decode_level(tl["rows"][row]["levels"][lv], tl["levels_ns"][lv])
        if sp[1] >= window[0] and sp[0] <= window[1]
    ]


def test_tight_budget_still_zooms_to_real_spans(
    browser: Any, jitter_page: tuple[Path, dict[str, Any]]
) -> None:
    """On a budget too small for every span, zooming into 5 ms late in a
    30-second trace draws every row at 512 µs or finer, and the request
    lane's requests as spans of their own (no block), one inked run per
    request or run of requests closer than a pixel; search still finds a
    coroutine that lived late in the trace, with no row of its own."""
    path, data = jitter_page
    tl = data["timeline"]
    assert 1000 < tl["resolution_ns"] <= 512_000 == tl["required_ns"]
    assert tl["index_left_out"] == 0 and tl["index_resolution_ns"] > 1000
    page, errors, requests = open_report(browser, path)
    try:
        notices = page.locator("#notices .notice").all_inner_texts()
        assert any("every row shows its real spans down to" in n for n in notices)
        assert any("holds every coroutine and user task" in n for n in notices)
        window = (28_400_000_000, 28_405_000_000)
        page.evaluate("([a, b]) => window.aiotraceReport.setView(a, b)", window)
        drawn = page.evaluate("() => window.aiotraceReport.drawn()")
        assert drawn["view"] == list(window) and drawn["want"] == 0
        lane = _row(data, "request")
        for r in drawn["rows"]:
            assert tl["levels_ns"][r["level"]] <= 512_000
            spans = _in_window(data, r["index"], r["level"], window)
            assert r["spans"] == len(spans)
            assert r["merged"] == sum(sp[4] > 1 for sp in spans)
        row = drawn["rows"][lane]
        spans = _in_window(data, lane, row["level"], window)
        assert len(spans) >= 4 and all(sp[4] == 1 for sp in spans)
        # Pixels: spans apart by 3 px or more make runs of their own, spans
        # closer than a pixel one run (between: either).
        px = (1280 - 232) / (window[1] - window[0])
        gaps = [(b[0] - a[1]) * px for a, b in itertools.pairwise(sorted(spans))]
        runs = page.evaluate(ROW_RUNS, [row["y"], row["h"]])
        assert (
            1 + sum(g >= 3 for g in gaps) <= len(runs) <= 1 + sum(g > 0 for g in gaps)
        )
        _labels_apart(drawn)

        late = tl["coroutines"] - 10
        page.locator("#search").fill(f"C{late}")
        assert page.locator("#search-results li[data-i]").count() == 1
        page.locator("#search").press("Enter")
        drawn = page.evaluate("() => window.aiotraceReport.drawn()")
        assert drawn["found"]["id"] == late and drawn["found"]["row"] == -1
        a, b = drawn["view"]
        assert b > a > 29e9
        assert errors == []
        assert requests == [path.as_uri()]
    finally:
        page.close()


def test_empty_trace_in_chromium(browser: Any, tmp_path: Path) -> None:
    """A trace with nothing in it makes a page that opens without errors,
    draws no row and says there is nothing to draw."""
    trace = tmp_path / "empty.trace"
    write_server_trace(trace, seconds=0)
    data = build_report_data(trace)
    assert data["events"] == 0
    assert data["timeline"]["rows"] == [] and data["timeline"]["index_entries"] == 0
    path = tmp_path / "empty.html"
    path.write_text(render_report(data), encoding="utf-8")
    page, errors, requests = open_report(browser, path)
    try:
        assert page.evaluate("() => window.aiotraceReport.drawn().rows") == []
        assert "Nothing to draw" in page.locator("#timeline-section").inner_text()
        page.locator("#zoom-in").click()
        page.locator("#search").fill("C1")
        assert page.locator("#search-results li[data-i]").count() == 0
        assert errors == []
        assert requests == [path.as_uri()]
    finally:
        page.close()
