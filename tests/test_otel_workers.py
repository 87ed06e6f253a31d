"""The issue's end to end: a slow request to a uvicorn --workers 2 service
run under `aiotrace run`, each worker exporting its spans over OTLP/HTTP to a
receiver on 127.0.0.1 with the aiotrace bridge installed, shows up with an
aiotrace.loop_stall event naming the blocking line; its worker trace is found
by its trace id; every worker is on the merged report's timeline."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("opentelemetry.sdk")

from contrib.test_otel import Receiver

from aiotrace import reader
from aiotrace._follow import child_traces
from aiotrace.contrib import opentelemetry as aotel
from aiotrace.export import build_report_data
from aiotrace.export._processes import merged_events

HERE = Path(__file__).resolve().parent
APP = HERE / "otel_worker_app.py"
ROOT = HERE.parent
RUN = [sys.executable, "-m", "aiotrace", "run", "--stall-threshold", "0.2"]
BOUND = 60.0
"""Seconds any one wait may take before the test fails: a bound, not a measure."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> int | None:
    """The pid of the worker that answered GET ``path``, or None if none did."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return int(resp.read())
    except ConnectionError:
        return None
    finally:
        conn.close()


def _wait(cond: Any, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _line(marker: str) -> int:
    lines = APP.read_text().splitlines()
    (found,) = [i for i, text in enumerate(lines, 1) if f"# {marker}" in text]
    return found


def _attrs(msg: Any) -> dict[str, Any]:
    out = {}
    for kv in msg.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which)
    return out


def _env(otlp: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("AIOTRACE_PYTEST", None)
    env["AIOTRACE_TEST_OTLP"] = otlp
    return env


def test_slow_request_from_span_to_line_to_worker_trace(tmp_path: Path) -> None:
    """uvicorn --workers 2 under `aiotrace run`, stopped by SIGINT: the slow
    request's SERVER span reaches the OTLP receiver with an aiotrace.loop_stall
    event whose code.* attributes name the planted line; exactly one worker
    trace logs that span's trace id, under the span's task, and it is the
    trace of the worker that answered; every trace validates; `aiotrace
    report` and `aiotrace stats` of all traces name every worker's pid."""
    port = _free_port()
    with Receiver() as receiver:
        otlp = f"http://127.0.0.1:{receiver.port}/v1/traces"
        command = ["uvicorn", "otel_worker_app:app", "--app-dir", str(HERE)]
        command += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
        server = subprocess.Popen(
            [*RUN, "-o", "app.trace", "-m", *command],
            cwd=tmp_path,
            env=_env(otlp),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait(lambda: len(list(tmp_path.glob("ready.*"))) == 2, "two workers")
            ready = {int(p.name.split(".")[1]) for p in tmp_path.glob("ready.*")}
            _wait(lambda: _get(port, "/fast/0") is not None, "the first answer")
            answered = [_get(port, f"/fast/{i}") for i in range(1, 4)]
            slow_pid = _get(port, "/slow")
            answered += [_get(port, f"/fast/{i}") for i in range(4, 8)]
            assert slow_pid in ready
            assert set(answered) <= ready
            # Every span is exported (BatchSpanProcessor, 50 ms) before the stop.
            _wait(lambda: len(receiver.spans) == 9, "9 exported spans")
            server.send_signal(signal.SIGINT)
            _, err = server.communicate(timeout=BOUND)
        finally:
            if server.poll() is None:
                server.kill()
                server.communicate()
    assert server.returncode == 0, err

    # 1. The slow request's span names the planted line.
    (slow,) = [s for s in receiver.spans if s.name == "GET /slow"]
    assert slow.kind == slow.SPAN_KIND_SERVER
    assert _attrs(slow)["process.pid"] == slow_pid
    planted = _line("PLANTED-STALL")
    stalls = [e for e in slow.events if e.name == "aiotrace.loop_stall"]
    (stall,) = [e for e in stalls if _attrs(e).get("code.lineno") == planted]
    attrs = _attrs(stall)
    assert attrs["code.filepath"] == str(APP)
    assert attrs["code.function"] == "_slow"
    assert attrs["aiotrace.duration_s"] > 0.2
    assert slow.start_time_unix_nano <= stall.time_unix_nano <= slow.end_time_unix_nano
    fast = [s for s in receiver.spans if s.name.startswith("GET /fast/")]
    assert len(fast) == 8
    for span in fast:
        assert [e for e in span.events if _attrs(e).get("code.lineno") == planted] == []

    # 2. One trace per worker, each valid, the parent's too.
    workers = [Path(f) for f in child_traces(str(tmp_path / "app.trace"))]
    assert {int(f.name.split(".")[1]) for f in workers} == ready, (workers, err)
    events = {}
    for f in [tmp_path / "app.trace", *workers]:
        events[f] = reader.read_events(f)
        assert reader.validate(events[f]) == [], f

    # 3. The slow request's worker trace, found by the span's trace id.
    trace_id = slow.trace_id.hex()
    span_id = slow.span_id.hex()
    holding = {
        f: [
            e
            for e in evs
            if e.kind is reader.EventKind.LOG
            and e.log.category == aotel.TRACE_ID
            and e.log.message == trace_id
        ]
        for f, evs in events.items()
    }
    (found,) = [f for f, logs in holding.items() if logs]
    assert found.name == f"app.{slow_pid}.trace"
    (log,) = holding[found]
    tasks = {
        e.task.id: e.task.type
        for e in events[found]
        if e.kind is reader.EventKind.TASK_BEGIN
    }
    assert tasks[log.log.task] == "GET /slow"
    span_logs = [
        e.log.task
        for e in events[found]
        if e.kind is reader.EventKind.LOG
        and e.log.category == aotel.SPAN_ID
        and e.log.message == span_id
    ]
    assert span_logs == [log.log.task]
    # The worker trace has the stall's samples at the planted line too.
    sampled = {
        (e.stack.frames[0].file, e.stack.frames[0].line)
        for e in events[found]
        if e.kind is reader.EventKind.STACK_SAMPLE and e.stack.frames
    }
    assert (str(APP), planted) in sampled

    # 4. The merged report and stats show every worker.
    files = [str(tmp_path / "app.trace"), *map(str, workers)]
    data = build_report_data(iter(merged_events(files)), title="workers")
    labels = {u["label"] for u in data["loops"]}
    for pid in ready:
        assert any(lb.startswith(f"pid {pid}: ") for lb in labels), labels
    out = tmp_path / "all.html"
    cli = [sys.executable, "-m", "aiotrace"]
    done = subprocess.run(
        [*cli, "report", "-o", str(out), *files],
        capture_output=True,
        text=True,
        timeout=BOUND,
        env=_env(otlp),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: 3 processes" in done.stdout
    page = out.read_text()
    for pid in ready:
        assert f"pid {pid}: " in page
    done = subprocess.run(
        [*cli, "stats", "--json", *files],
        capture_output=True,
        text=True,
        timeout=BOUND,
        env=_env(otlp),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    procs = json.loads(done.stdout)["processes"]
    assert {p["pid"] for p in procs} >= ready
    assert all(p["offset_ns"] is not None for p in procs)
