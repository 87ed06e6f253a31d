"""The HTML report in a real headless Chromium: it draws, without errors,
without a single network request, and shows what the trace holds.

Chromium comes from the system (Debian's ``chromium`` package, installed
by ``.ci/run``); Python's playwright drives it, and downloads nothing. The
test skips when Chromium or playwright is missing, unless
AIOTRACE_REQUIRE_BROWSER=1 (as in CI), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    return page, errors, requests


INK = """() => {
  // Counts inked pixels right of the row labels and below the time axis
  // (where only spans are drawn), and pixels of each span kind's colour.
  const c = document.getElementById("timeline");
  const dpr = window.devicePixelRatio || 1;
  const x0 = Math.ceil(232 * dpr), y0 = Math.ceil(26 * dpr);
  const d = c.getContext("2d").getImageData(x0, y0, c.width - x0, c.height - y0).data;
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


def test_report_renders_in_chromium(
    browser: Any, rich_trace: Path, tmp_path: Path
) -> None:
    """The report of a real trace loads with no console or page error and no
    request but the file itself; the timeline canvas is drawn (not blank,
    in several colours), there is one histogram per task type, one table
    row per coroutine function and per loop, one entry per stall; zooming
    narrows the shown time range."""
    data = build_report_data(rich_trace, title="rich.trace")
    path = tmp_path / "report.html"
    path.write_text(render_report(data), encoding="utf-8")
    page, errors, requests = open_report(browser, path)
    try:
        assert errors == []
        assert requests == [path.as_uri()]

        # The page decodes the timeline's compact form back to the spans.
        spans = page.evaluate(
            "() => window.aiotraceReport.data.timeline.rows.map(r => r.spans)"
        )
        assert spans == [r["spans"] for r in data["timeline"]["rows"]]

        ink = page.evaluate(INK)
        assert ink["w"] > 0 and ink["h"] > 0
        assert ink["ink"] > ink["pixels"] // 50, ink
        # Loops busy, executor work, tasks, running coroutines and the stall
        # are all drawn, each in its colour.
        assert all(n > 0 for n in ink["kinds"].values()), ink

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
    data = build_report_data(rich_trace, max_spans=40, max_coroutines=2)
    path = tmp_path / "capped.html"
    path.write_text(render_report(data), encoding="utf-8")
    page, errors, requests = open_report(browser, path)
    try:
        notices = page.locator("#notices .notice").all_inner_texts()
        assert any("too large to draw every span" in n for n in notices)
        assert any("more coroutines" in n for n in notices)
        assert page.evaluate(INK)["ink"] > 0
        assert errors == []
        assert requests == [path.as_uri()]
    finally:
        page.close()
