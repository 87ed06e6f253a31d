"""The routes rule: a slow route and the downstream call that took its time.

Each program of programs/route_*.py runs under the real CLI (``aiotrace
run``, default options); its diagnosis must name the slow route (and its
downstream call, where it has one) and never an innocent fast route or a
fast downstream call.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from findings_cli import PROGRAMS, run_traced

from aiotrace.analysis._diagnose import diagnose
from aiotrace.analysis._findings import Diagnosis, Finding, format_findings


def traced(program: str, tmp: Path) -> Diagnosis:
    """Runs ``program`` under ``aiotrace run``; returns its trace's diagnosis."""
    return diagnose(run_traced(PROGRAMS / program, tmp / f"{program}.trace"))


def routes(d: Diagnosis) -> list[Finding]:
    return [f for f in d.findings if f.kind == "slow-route"]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("routes")


def test_a_slow_downstream_is_named_with_its_route(tmp: Path) -> None:
    """GET /orders/{id} spends its time in the downstream's /inventory: one
    finding names the route by its template and the call by host:port and
    path; the fast route that only calls a fast downstream (/health, /price)
    and the route with no call (/users) are not named."""
    pytest.importorskip("aiohttp")
    d = traced("route_downstream.py", tmp)
    found = routes(d)
    text = format_findings(d, top=20)
    assert len(found) == 1, text
    (f,) = found
    assert f.summary.startswith("slow route GET /orders/{id}: p90 "), text
    assert re.search(
        r"% of it in downstream GET 127\.0\.0\.1:\d+/inventory \(p90 ", f.summary
    )
    assert f.evidence["share"] >= 0.5
    for innocent in ("/health", "/users", "/price"):
        assert innocent not in text, text
    data = {s.title: s.data for s in d.sections}["Routes"]
    assert {name: r["count"] for name, r in data.items()} == {
        "GET /orders/{id}": 30,
        "GET /health/{id}": 30,
        "GET /users/{id}": 30,
    }
    orders, health = data["GET /orders/{id}"], data["GET /health/{id}"]
    assert orders["calls"][0]["type"].endswith("/inventory")
    assert orders["calls"][0]["share"] > 5 * orders["calls"][1]["share"]
    assert orders["p90_ns"] > 5 * health["p90_ns"]
    assert data["GET /users/{id}"]["calls"] == []
    json.dumps(d.to_dict())


def test_a_route_much_slower_than_the_others_is_named(tmp: Path) -> None:
    """GET /report takes 0.2 s with no region inside it: it is named as much
    slower than the other routes; GET /search (20 ms) and GET /items/{id}
    (a fast cache-lookup region) are not."""
    pytest.importorskip("aiohttp")
    d = traced("route_slow_handler.py", tmp)
    found = routes(d)
    text = format_findings(d, top=20)
    assert [f.evidence["route"] for f in found] == ["GET /report"], text
    # On 3.11 the handler's own wait names the line its time went to; on
    # 3.12+ aiohttp starts the handler eagerly, unseen, and the finding
    # says how much slower the route is than the others.
    summary = found[0].summary
    assert (
        "median p90" in summary
        or f"waiting on sleep at build_report ({PROGRAMS}/route_slow_handler.py:"
        in summary
    ), summary
    for innocent in ("/search", "/items", "cache lookup"):
        assert innocent not in text, text


def test_a_task_type_and_its_slow_region(tmp: Path) -> None:
    """Without a web framework, a user task type whose time goes to one
    region is named with that region; the fast task type that runs the same
    region briefly, and the fast region beside the slow one, are not."""
    d = traced("route_task_region.py", tmp)
    found = routes(d)
    text = format_findings(d, top=20)
    assert len(found) == 1, text
    assert found[0].summary.startswith("slow task type checkout: p90 "), text
    assert 'in region "db query"' in found[0].summary
    for innocent in ("ping", "render"):
        assert innocent not in text, text


def test_a_route_slowed_by_a_held_loop_is_not_named(tmp: Path) -> None:
    """GET /status awaits 5 ms but runs beside GET /export, which blocks the
    loop for 0.1 s: its latency is the loop's, not its own, so it is not
    named; GET /export, which held the loop, may be."""
    pytest.importorskip("aiohttp")
    d = traced("route_blocking.py", tmp)
    named = [f.evidence["route"] for f in routes(d)]
    assert set(named) <= {"GET /export"}, format_findings(d, top=20)
    data = {s.title: s.data for s in d.sections}["Routes"]
    status = data["GET /status"]
    assert status["own_p90_ns"] < status["p90_ns"] / 2
