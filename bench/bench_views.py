"""bench_views: time and peak memory of ``aiotrace export`` and ``aiotrace report``.

Run: ``python bench/bench_views.py [--seconds 30] [--long 300] [--rounds N]
[--connections 50] [--keep DIR] [--trace FILE ...] [--passes read report]``

It records an aiohttp server traced under load: ``bench_aiohttp.py``'s
server (the ``/api`` route: the aiohttp middleware's user task per request,
a region, a log) with the execution tracer, in its own process, loaded by
``wrk -t1 -c50`` on 127.0.0.1 for ``--seconds`` (and, with ``--long``, a
second, longer trace). The load is bounded by the connections: wrk keeps
50 requests in flight, no more. ``--trace`` measures existing traces
instead of recording.

Then, for each trace, each command runs alone in a fresh process, in
interleaved rounds: a typed read of every event (the floor: ``for ev in
Reader(f)``), ``aiotrace export TRACE`` (whatever format it writes by
default) and ``aiotrace report TRACE``; with ``--passes``, also
``aiotrace stats``, ``stalls`` and ``profile`` (block) of the trace.
For each it gives the median wall time, CPU time (user + system: on a
shared machine, wall time swings with the other tenants' load, CPU time
much less), the CPU time against the
read's, peak RSS (the child's own ``ru_maxrss`` from ``wait4``) and the
output's size; for the report, the timeline detail it kept.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _common import environment, print_table

HERE = os.path.dirname(os.path.abspath(__file__))
READ_LABEL = "read (typed, every event)"
PASSES = ["read", "export", "report", "stats", "stalls", "profile"]
READ = (
    "import sys; sys.path.insert(0, {here!r}); from _common import read_typed; "
    "print(read_typed({path!r}))"
)


def record(path: str, seconds: float, connections: int) -> dict[str, Any]:
    """Records ``seconds`` of the traced aiohttp server under wrk into ``path``."""
    server = subprocess.Popen(
        [
            sys.executable,
            os.path.join(HERE, "bench_aiohttp.py"),
            "--serve",
            "traced",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                f"http://127.0.0.1:{port}/api",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        server.send_signal(signal.SIGTERM)
        figures: dict[str, Any] = json.loads(server.stdout.readline() or "{}")
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    if "error" in figures or not figures:
        raise RuntimeError(f"the traced server failed: {figures}")
    rps = next(
        (
            line.split()[1]
            for line in out.splitlines()
            if line.startswith("Requests/sec")
        ),
        "?",
    )
    figures["requests_per_s"] = rps
    return figures


def measured(cmd: list[str]) -> dict[str, Any]:
    """Runs ``cmd`` alone under ``wait4``: wall, CPU seconds, peak RSS (MB)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read().decode()}")
        return {
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024,
            "stdout": out.read().decode(),
        }


def views(trace: str, rounds: int, tmp: str, passes: list[str]) -> list[list[str]]:
    """Measures the read, the export and the report of ``trace``; table rows."""
    exe = sys.executable
    export_dir = os.path.join(tmp, "export")
    os.makedirs(export_dir, exist_ok=True)
    exported = os.path.join(export_dir, os.path.basename(trace))
    # The export writes next to its trace: a directory of its own shows
    # what it wrote, whatever format and suffix it chooses.
    if not os.path.exists(exported):
        shutil.copy(trace, exported)
    html = os.path.join(tmp, "report.html")
    cmds = {
        READ_LABEL: [exe, "-c", READ.format(here=HERE, path=trace)],
        "aiotrace export": [exe, "-m", "aiotrace", "export", exported],
        "aiotrace report": [exe, "-m", "aiotrace", "report", trace, "-o", html],
        "aiotrace stats": [exe, "-m", "aiotrace", "stats", trace],
        "aiotrace stalls": [exe, "-m", "aiotrace", "stalls", trace],
        "aiotrace profile": [exe, "-m", "aiotrace", "profile", trace],
    }
    labels = {"read": READ_LABEL, **{p: f"aiotrace {p}" for p in PASSES[1:]}}
    cmds = {labels[p]: cmds[labels[p]] for p in PASSES if p in passes}
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in cmds}
    for r in range(rounds):
        order = list(cmds)
        order = order[r % len(order) :] + order[: r % len(order)]
        for name in order:
            for f in glob.glob(os.path.join(export_dir, "*")):
                if f != exported:
                    os.remove(f)
            m = measured(cmds[name])
            if name == "aiotrace export":
                outs = [
                    f for f in glob.glob(os.path.join(export_dir, "*")) if f != exported
                ]
                m["out"] = sum(os.path.getsize(f) for f in outs)
                m["what"] = ", ".join(os.path.splitext(f)[1] for f in outs)
            elif name == "aiotrace report":
                m["out"] = os.path.getsize(html)
                m["what"] = m["stdout"].rsplit("timeline detail", 1)[-1].strip()
            got[name].append(m)
            print(
                f"  {name}: {m['wall']:.1f} s wall, {m['cpu']:.1f} s CPU, "
                f"{m['rss_mb']:.0f} MB",
                flush=True,
            )
    events = int(got[READ_LABEL][0]["stdout"].strip())
    print(f"  {events:,} typed events")
    read_cpu = statistics.median(m["cpu"] for m in got[READ_LABEL])
    rows = []
    for name, ms in got.items():
        cpu = statistics.median(m["cpu"] for m in ms)
        out = ms[-1].get("out")
        rows.append(
            [
                name,
                f"{statistics.median(m['wall'] for m in ms):.1f} s",
                f"{cpu:.1f} s",
                f"{events / cpu / 1e6:.2f} M/s",
                f"{cpu / read_cpu:.2f}",
                f"{max(m['rss_mb'] for m in ms):.0f} MB",
                "" if out is None else f"{out / 1e6:.1f} MB",
                ms[-1].get("what", ""),
            ]
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=30, help="the first trace's length")
    p.add_argument("--long", type=float, default=0, help="a second, longer trace (s)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--keep", metavar="DIR", help="keep the traces in DIR")
    p.add_argument("--trace", nargs="+", metavar="FILE", help="measure these traces")
    p.add_argument(
        "--passes",
        nargs="+",
        default=["read", "export", "report"],
        choices=PASSES,
        help="what to measure (the read is the reference: keep it)",
    )
    args = p.parse_args()
    print(environment())
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        traces = list(args.trace or [])
        if not traces:
            if shutil.which("wrk") is None:
                sys.exit(
                    "bench_views records with wrk: install it (apt-get install wrk)"
                )
            where = args.keep or tmp
            os.makedirs(where, exist_ok=True)
            for seconds in [args.seconds] + ([args.long] if args.long else []):
                path = os.path.join(where, f"aiohttp-{seconds:g}s.trace")
                print(f"recording {path}: {seconds:g} s, wrk -t1 -c{args.connections}")
                fig = record(path, seconds, args.connections)
                mb = fig["bytes"] / 1e6
                print(
                    f"  {fig['events']:,} events recorded, {mb:.1f} MB, "
                    f"{fig['lost']} lost, {fig['requests_per_s']} requests/s",
                    flush=True,
                )
                traces.append(path)
        for trace in traces:
            print(f"\n{trace}: {os.path.getsize(trace) / 1e6:.1f} MB")
            rows = views(trace, args.rounds, tmp, args.passes)
            print_table(
                f"{os.path.basename(trace)}: medians of {args.rounds} round(s), "
                f"load average after {os.getloadavg()[0]:.1f}",
                [
                    "pass",
                    "wall",
                    "CPU",
                    "events/CPU s",
                    "CPU vs read",
                    "peak RSS",
                    "output",
                    "report detail / export files",
                ],
                rows,
            )


if __name__ == "__main__":
    main()
