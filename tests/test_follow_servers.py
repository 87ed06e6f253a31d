"""Worker servers under `aiotrace run`: uvicorn --workers N (multiprocessing
spawn) and gunicorn with uvicorn workers (os.fork) give one trace per
worker, each holding the requests that worker served. A real server on
127.0.0.1, stopped by a signal."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiotrace import reader
from aiotrace._follow import child_traces
from aiotrace.analysis import analyze

pytest.importorskip("uvicorn")

APP = """\
import asyncio, os
import aiotrace

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    with aiotrace.region("request"):
        await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int) -> int | None:
    """The pid of the worker that answered, or None if none answered."""
    # A bound, not a measure: a loaded machine's worker may take seconds.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/")
        return int(conn.getresponse().read())
    except OSError:
        return None
    finally:
        conn.close()


def _server(name: str, port: int) -> tuple[list[str], signal.Signals]:
    if name == "uvicorn":
        args = ["uvicorn", "web:app", "--port", str(port), "--workers", "2"]
        return [*args, "--log-level", "warning"], signal.SIGINT
    pytest.importorskip("gunicorn")
    args = ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2"]
    return [*args, "-b", f"127.0.0.1:{port}", "web:app"], signal.SIGTERM


@pytest.mark.parametrize("name", ["uvicorn", "gunicorn"])
def test_workers_each_write_a_trace(tmp_path: Path, name: str) -> None:
    """`aiotrace run -m uvicorn --workers 2` (stopped by SIGINT) and
    `aiotrace run -m gunicorn -k uvicorn.workers.UvicornWorker -w 2`
    (stopped by SIGTERM; its workers die of the SIGTERM they re-raise):
    two worker traces, whole and valid, and each worker's trace holds
    exactly the requests it answered."""
    (tmp_path / "web.py").write_text(APP)
    port = _free_port()
    command, stop = _server(name, port)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    server = subprocess.Popen(
        [sys.executable, "-m", "aiotrace", "run", "-o", "web.trace", "-m", *command],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Until both workers have answered (at least 20 requests in all):
        # a worker stopped while it boots, before it sets its own signal
        # handlers, ignores the stop (gunicorn's inherited handler only
        # queues it for the master) and is killed after the graceful
        # timeout, its trace cut short.
        served: dict[int, int] = {}
        deadline = time.monotonic() + 60  # a bound on start-up, not a measure
        while len(served) < 2 or sum(served.values()) < 20:
            assert time.monotonic() < deadline, f"workers that answered: {served}"
            pid = _get(port)
            if pid is None:
                assert not served, "a request failed once the server answered"
                time.sleep(0.1)
                continue
            served[pid] = served.get(pid, 0) + 1
        server.send_signal(stop)
        _, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    files = [tmp_path / Path(f).name for f in child_traces(str(tmp_path / "web.trace"))]
    assert len(files) == 2, (files, err)
    if name == "gunicorn":
        assert err.count("Booting worker with pid") == 2, err
    assert "aiotrace: 2 child process traces" in err
    for f in [tmp_path / "web.trace", *files]:
        assert reader.validate(reader.read_events(f)) == [], f
    for f in files:
        pid = int(f.name.split(".")[1])
        summary = analyze(f)
        assert summary.truncated is None
        got = summary.regions["request"].count if "request" in summary.regions else 0
        assert got == served.get(pid, 0), (f, served)
    assert len(served) == 2
