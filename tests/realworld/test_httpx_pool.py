"""httpx's AsyncClient with a pool of 2 connections and 8 concurrent workers.

The server is the aiohttp service, untraced, in a process of its own; the
client (apps/httpx_client.py) is traced. With more workers than
connections, requests wait in httpcore's pool for a connection, and the
trace must show those waits where they happen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from realprograms import run_traced, summarise, traced_server

REQUESTS = 200
WORKERS = 8


def _run_client(trace_file: Path, tmp_path: Path, under_run: bool) -> None:
    with traced_server(
        tmp_path / "server.trace", "aiohttp_service.py", traced=False
    ) as url:
        r = run_traced(
            trace_file, "httpx_client.py", f"{url}/slow",
            "--requests", str(REQUESTS), "--workers", str(WORKERS),
            under_run=under_run, options=("--block-stacks",),
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"requests": REQUESTS, "ok": REQUESTS}


@pytest.mark.parametrize("under_run", [True, False], ids=["aiotrace-run", "library"])
def test_httpx_small_pool_waits_are_traced(
    under_run: bool, trace_file: Path, tmp_path: Path
) -> None:
    """200 requests from 8 workers over 2 connections, with block stacks,
    under ``aiotrace run --block-stacks`` or tracing itself through
    ``aiotrace.tracing(..., block_stacks=True)``: the trace validates with no
    lost event, holds the 8 workers (each returned) and the connection
    attempts (one per pooled connection, 2), and the first 6 workers to find
    both connections taken wait in httpcore's ``wait_for_connection``: the
    stacks of those waits name it (at least 6 times; each later wait for a
    freed connection adds one)."""
    _run_client(trace_file, tmp_path, under_run=under_run)
    s = summarise(trace_file)
    s.check_exact()
    assert s.ended("httpx_worker") == WORKERS
    connects = [lab for lab in s.labels.values() if "connect_tcp" in lab]
    assert len(connects) == 2, connects
    pool_waits = sum(
        n for func, n in s.block_funcs.items() if func.endswith("wait_for_connection")
    )
    assert pool_waits >= WORKERS - 2, s.block_funcs.most_common(10)
